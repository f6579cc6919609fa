"""Variants of a Model Graph, as in the paper's robustness study: pruned, float16 and LLM.int8 copies.

``build_variant(graph, out, variant)`` reads a built Model Graph (one sub-folder per model and
``truth.json``) and writes the same graph, every model changed the same way, into a new folder, with
``truth.json`` copied and a ``"variant"`` entry added that says what was done. The source folder is only
read. Variants:

``prune:<amount>`` (amount 0.1 to 0.9)
    ``torch.nn.utils.prune.l1_unstructured`` followed by ``prune.remove`` on every floating-point tensor
    with two or more dimensions: Linear and Conv weights, and embedding tables too (the paper prunes "the
    weights"; an embedding table is a weight matrix like any other, and pruning it is what a user pruning
    every matrix gets). Pruning is per tensor (the smallest ``amount`` of each tensor's entries by
    magnitude become zero), so it is applied to each tensor as the ``weight`` of a holder module, straight
    from the files: file names, dtypes (bf16 stays bf16), sharding and the shard index stay as they were.
``fp16``
    every floating-point tensor cast to float16 and saved in the same files (a ``config.json``'s
    ``dtype``/``torch_dtype`` says ``float16``, and a shard index its new ``total_size``), as
    ``model.half().save_pretrained`` or ``torch.save(model.half().state_dict())`` would.
``int8``
    LLM.int8 with the real bitsandbytes: the model is built (transformers: the class ``config.json``
    names, else ``AutoModel``; a plain state dict: ``MobileNetV2``), every ``nn.Linear`` is replaced by
    ``bitsandbytes.nn.Linear8bitLt(has_fp16_weights=False)``, which quantises its weight when moved to the
    CPU, and the state dict is saved as ``model.safetensors``: per layer an int8 ``weight``, its float32
    row scales ``SCB`` and ``weight_format``, exactly the keys transformers' ``load_in_8bit`` writes (a
    transformers folder gets a ``quantization_config`` too, so that transformers loads it back
    quantised). Only Linear layers have an LLM.int8 form: Conv, Embedding and norm layers stay float (so a
    MobileNetV2 changes in its classifier only), as does a Linear whose weight is tied to an embedding.

PEFT adapter folders are copied unchanged in every variant: the adapter's LoRA factors are what its author
published, and merging them into a changed base is not the variant's to do. mothertree reads an adapter on
its base, which in the variant graph is the changed base; the ``"unchanged"`` entry of the variant lists
them. A sub-folder with no weights is copied unchanged too, and so are the graph's other files.

The result is deterministic (same source, same variant: the same tensors). A build is written into a hidden
sibling of ``out`` and renamed into place when complete; when ``out/truth.json`` already records the same
variant of the same source, nothing is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn
from torch.nn.utils import prune

from .._progress import progress
from ..errors import (
    CheckpointNotFoundError,
    InvalidParameterError,
    InvalidTruthError,
    MissingDependencyError,
    UnsupportedFormatError,
)
from ..io._files import ADAPTER_CONFIG, SAFETENSORS_FILE, SAFETENSORS_SUFFIX, is_weight_file_name
from .files import TRUTH_FILE

__all__ = ["VARIANT_KEY", "Variant", "build_variant", "derive_copy", "parse_variant", "quantize_linears"]

LOG = logging.getLogger(__name__)

VARIANT_KEY = "variant"
CONFIG_FILE = "config.json"
# bitsandbytes' and transformers' default outlier threshold for LLM.int8 inference; it decides how inputs
# are split at matmul time and does not change the stored weights.
INT8_THRESHOLD = 6.0
PRUNE_RANGE = (0.1, 0.9)

Kind = Literal["prune", "fp16", "int8"]
# A tensor's new value, or None to keep it as it is.
Transform = Callable[[torch.Tensor], torch.Tensor | None]

_METHODS: dict[str, str] = {
    "prune": "torch.nn.utils.prune.l1_unstructured, then prune.remove, on every floating-point tensor with "
    "two or more dimensions (Linear and Conv weights, embedding tables included), each tensor on its own; "
    "file names, dtypes and sharding as in the source",
    "fp16": "every floating-point tensor cast to float16, saved in the same files",
    "int8": "every nn.Linear replaced by bitsandbytes Linear8bitLt (LLM.int8, has_fp16_weights=False) and "
    "quantised on the CPU; the state dict (int8 weight, SCB, weight_format per layer) saved as "
    "model.safetensors; Conv, Embedding, norm layers and Linear layers tied to an embedding stay float",
}
_ADAPTER_REASON = "PEFT adapter: copied unchanged (read on its base, which is the variant's)"
_NO_WEIGHTS_REASON = "holds no weights: copied unchanged"


@dataclass(frozen=True)
class Variant:
    """One way of changing every model of a graph (see the module's docstring)."""

    kind: Kind
    amount: float | None = None

    @property
    def name(self) -> str:
        """The canonical spelling: ``prune:0.5``, ``fp16``, ``int8``."""
        return f"prune:{self.amount:g}" if self.kind == "prune" else self.kind


def parse_variant(text: str) -> Variant:
    """``"prune:<amount>"`` (0.1 to 0.9), ``"fp16"`` or ``"int8"`` as a Variant.

    Raises:
        InvalidParameterError: anything else.
    """
    spelled = text.strip().lower()
    if spelled == "fp16":
        return Variant("fp16")
    if spelled == "int8":
        return Variant("int8")
    kind, _, amount = spelled.partition(":")
    if kind == "prune":
        try:
            value = float(amount)
        except ValueError:
            value = float("nan")
        low, high = PRUNE_RANGE
        if low <= value <= high:
            return Variant("prune", value)
        raise InvalidParameterError(
            f"`{text}`: the pruning amount must be a number from {low} to {high}",
            hint="e.g. `prune:0.5` zeroes the smaller half of every weight tensor",
        )
    raise InvalidParameterError(
        f"`{text}` is not a variant", hint="use `prune:<amount>` (0.1 to 0.9), `fp16` or `int8`"
    )


def build_variant(graph: Path, out: Path, variant: str, *, quiet: bool = False) -> Path:
    """Write ``variant`` of the Model Graph ``graph`` into the new folder ``out``; return ``out``.

    ``graph`` holds one sub-folder per model and ``truth.json``; it is never written to. ``out`` must not
    exist, be empty, or hold this very variant of this graph already (then nothing is done). ``quiet``
    turns progress bars and log lines off.

    Raises:
        InvalidParameterError: an unknown variant; ``out`` overlaps ``graph``; ``out`` holds something else.
        CheckpointNotFoundError: ``graph`` or its ``truth.json`` does not exist.
        InvalidTruthError: its ``truth.json`` is not a JSON object.
        UnsupportedFormatError: a model this variant cannot be made of (``int8`` of a plain state dict of
            an architecture other than MobileNetV2); a loose weight file in ``graph``, or a sub-folder with
            weights only deeper down (a cache entry).
        MissingDependencyError: ``int8`` without bitsandbytes (or a transformers folder without
            transformers).
    """
    spec = parse_variant(variant)
    graph, out = Path(graph), Path(out)
    truth = _read_truth(graph)
    _check_apart(graph, out)
    source = str(graph.resolve())
    if _already_built(out, spec, source):
        if not quiet:
            LOG.info("variant %s of %s: already built at %s", spec.name, graph, out)
        return out

    folders, files = _graph_entries(graph)
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():  # left by a build that was killed
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        entry = _build(folders, files, partial, spec, quiet=quiet)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    entry["source"] = source
    if VARIANT_KEY in truth:  # a variant of a variant
        entry["of"] = truth[VARIANT_KEY]
    (partial / TRUTH_FILE).write_text(json.dumps({**truth, VARIANT_KEY: entry}, indent=2) + "\n")
    if out.exists():
        out.rmdir()  # checked empty by _already_built; rename cannot replace a folder on every platform
    os.replace(partial, out)
    return out


def derive_copy(source: Path, target: Path, variant: str) -> dict[str, Any]:
    """``variant`` of the one model folder ``source``, written into the new folder ``target`` (the zoo's
    derived models); what was done."""
    with torch.random.fork_rng(devices=[]):
        return _make_model(Path(source), Path(target), parse_variant(variant), quiet=True)


def _build(
    folders: list[Path], files: list[Path], partial: Path, spec: Variant, *, quiet: bool
) -> dict[str, Any]:
    """Write every model and file of the graph into ``partial``; the variant's entry for ``truth.json``."""
    models: dict[str, dict[str, Any]] = {}
    unchanged: dict[str, str] = {}
    steps = folders if quiet else progress(folders, desc=f"variant {spec.name}", total=len(folders))
    # Building a model (a MobileNetV2, a Linear8bitLt) draws random initial weights that are overwritten at
    # once; the caller's random state must not move because of it.
    with torch.random.fork_rng(devices=[]):
        for folder in steps:
            record = _make_model(folder, partial / folder.name, spec, quiet=quiet)
            if "unchanged" in record:
                unchanged[folder.name] = record["unchanged"]
            else:
                models[folder.name] = record
            if not quiet:
                LOG.info("variant %s: %s %s", spec.name, folder.name, record.get("unchanged", "done"))
    for file in files:
        shutil.copyfile(file, partial / file.name)
    entry: dict[str, Any] = {"name": spec.name, "kind": spec.kind}
    if spec.amount is not None:
        entry["amount"] = spec.amount
    entry.update(method=_METHODS[spec.kind], versions=_versions(spec), models=models, unchanged=unchanged)
    return entry


# --- the graph ----------------------------------------------------------------------------------------------


def _read_truth(graph: Path) -> dict[str, Any]:
    path = graph / TRUTH_FILE
    if not graph.is_dir():
        raise CheckpointNotFoundError(f"`{graph}` is not a folder", path=graph)
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"`{graph}` holds no `{TRUTH_FILE}`: it is not a built Model Graph",
            hint="build one first (`mothertree zoo build SPEC --out DIR`), then make variants of it",
            path=path,
        )
    try:
        truth = json.loads(path.read_text())
    except ValueError:
        truth = None
    if not isinstance(truth, dict):
        raise InvalidTruthError(f"`{path}` does not hold a JSON object", path=path)
    return truth


def _check_apart(graph: Path, out: Path) -> None:
    source, target = graph.resolve(), out.resolve()
    if source == target or source in target.parents or target in source.parents:
        raise InvalidParameterError(
            f"`{out}` overlaps the source graph `{graph}`: a variant is written into a new folder",
            hint="pass an `out` folder outside the source graph (and not containing it)",
        )


def _already_built(out: Path, spec: Variant, source: str) -> bool:
    """True when ``out`` holds this variant of this source; False when ``out`` is free to be written."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise InvalidParameterError(f"`{out}` exists and is not a folder", hint="pass a new folder")
    truth_path = out / TRUTH_FILE
    if truth_path.is_file():
        try:
            built = json.loads(truth_path.read_text()).get(VARIANT_KEY)
        except (ValueError, AttributeError):
            built = None
        if isinstance(built, dict) and built.get("name") == spec.name and built.get("source") == source:
            return True
        what = "a Model Graph"
        if isinstance(built, dict):
            what = f"variant `{built.get('name')}` of `{built.get('source')}`"
        raise InvalidParameterError(
            f"`{out}` already holds {what}, not `{spec.name}` of `{source}`",
            hint="pass a new folder for each variant, or delete the old one",
        )
    if any(out.iterdir()):
        raise InvalidParameterError(
            f"`{out}` is not empty and holds no built variant", hint="pass a new (or empty) folder"
        )
    return False


def _graph_entries(graph: Path) -> tuple[list[Path], list[Path]]:
    """The graph's model folders and its other files (``truth.json`` and hidden entries left out)."""
    folders, files = [], []
    for entry in sorted(graph.iterdir(), key=lambda path: path.name):
        if entry.name.startswith(".") or entry.name == TRUTH_FILE:
            continue
        if entry.is_dir():
            folders.append(entry)
        elif is_weight_file_name(entry.name):
            raise UnsupportedFormatError(
                f"`{entry}` is a loose weight file; a Model Graph keeps each model in a folder of its own",
                hint="move it into a folder named after the model",
                path=entry,
            )
        elif entry.is_file():
            files.append(entry)
    return folders, files


def _versions(spec: Variant) -> dict[str, str]:
    versions = {"torch": str(torch.__version__)}
    if spec.kind == "int8":
        import bitsandbytes

        versions["bitsandbytes"] = bitsandbytes.__version__
    return versions


# --- one model ----------------------------------------------------------------------------------------------


def _make_model(source: Path, target: Path, spec: Variant, *, quiet: bool) -> dict[str, Any]:
    """Write ``spec`` of the model folder ``source`` into the new folder ``target``; what was done."""
    if (source / ADAPTER_CONFIG).is_file():
        shutil.copytree(source, target)
        return {"unchanged": _ADAPTER_REASON}
    weight_files = [path.name for path in sorted(source.iterdir()) if _is_weights(path)]
    if not weight_files:
        nested = next((path for path in sorted(source.rglob("*")) if _is_weights(path)), None)
        if nested is not None:  # a Hugging Face cache entry, or a collection inside the graph
            raise UnsupportedFormatError(
                f"`{source}` holds weights only in sub-folders (`{nested.relative_to(source)}`); a Model "
                "Graph keeps each model's weights directly in its folder",
                hint="copy each model (for a cache entry, its snapshot folder) into a folder of the graph",
                path=source,
            )
        shutil.copytree(source, target)
        return {"unchanged": _NO_WEIGHTS_REASON}
    layout = "transformers" if (source / CONFIG_FILE).is_file() else "state_dict"
    target.mkdir()
    if spec.kind == "int8":
        if layout == "transformers":
            record = _int8_transformers(source, target, quiet=quiet)
        else:
            record = _int8_mobilenet(source, target, weight_files)
        _copy_rest(source, target, skip=set(weight_files))
    else:
        transform = _pruner(spec.amount) if spec.kind == "prune" else _to_fp16
        record = _rewrite_files(source, target, weight_files, transform, fp16=spec.kind == "fp16")
    return {"layout": layout, **record}


def _is_weights(path: Path) -> bool:
    return path.is_file() and is_weight_file_name(path.name)


def _copy_rest(source: Path, target: Path, *, skip: set[str]) -> None:
    """Copy what ``source`` holds besides ``skip`` and shard indexes (configs, tokenizers, READMEs), never
    overwriting what is there."""
    for entry in sorted(source.iterdir()):
        destination = target / entry.name
        if entry.name in skip or entry.name.endswith(".index.json") or destination.exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, destination)
        else:
            shutil.copyfile(entry, destination)


# --- prune and fp16: tensor by tensor, file by file ---------------------------------------------------------


def _pruner(amount: float | None) -> Transform:
    assert amount is not None

    def pruned(tensor: torch.Tensor) -> torch.Tensor | None:
        if not tensor.is_floating_point() or tensor.dim() < 2:
            return None
        holder = nn.Module()
        # float32 holds bf16 and fp16 values exactly, so casting back restores every kept value.
        holder.weight = nn.Parameter(tensor.detach().to(torch.float32, copy=True), requires_grad=False)
        prune.l1_unstructured(holder, "weight", amount=amount)
        prune.remove(holder, "weight")
        return holder.weight.detach().to(tensor.dtype).contiguous()

    return pruned


def _to_fp16(tensor: torch.Tensor) -> torch.Tensor | None:
    if not tensor.is_floating_point() or tensor.dtype == torch.float16:
        return None
    return tensor.detach().to(torch.float16).contiguous()


def _rewrite_files(
    source: Path, target: Path, weight_files: list[str], transform: Transform, *, fp16: bool
) -> dict[str, Any]:
    """Every weight file of ``source`` with ``transform`` applied, under the same name; the rest copied."""
    changed = kept = 0
    sizes: dict[str, int] = {}
    for name in weight_files:
        tensors, save = _load(source / name)
        new: dict[str, torch.Tensor] = {}
        for key, tensor in tensors.items():
            result = transform(tensor)
            changed, kept = (changed + 1, kept) if result is not None else (changed, kept + 1)
            new[key] = result if result is not None else tensor
        save(new, target / name)
        sizes[name] = sum(tensor.numel() * tensor.element_size() for tensor in new.values())
    for entry in sorted(source.iterdir()):
        if entry.name in weight_files:
            continue
        destination = target / entry.name
        if entry.is_dir():
            shutil.copytree(entry, destination)
        elif entry.name.endswith(".index.json"):
            _write_index(entry, destination, sizes)
        elif entry.name == CONFIG_FILE and fp16:
            _write_fp16_config(entry, destination)
        else:
            shutil.copyfile(entry, destination)
    return {"files": weight_files, "tensors_changed": changed, "tensors_unchanged": kept}


def _load(path: Path) -> tuple[dict[str, torch.Tensor], Callable[[dict[str, torch.Tensor], Path], None]]:
    """A weight file's tensors, and how to save tensors in the same kind of file."""
    if path.name.endswith(SAFETENSORS_SUFFIX):
        with safe_open(os.fspath(path), framework="pt") as file:
            metadata = file.metadata()
            tensors = {key: file.get_tensor(key) for key in file.keys()}

        def save_safetensors(new: dict[str, torch.Tensor], to: Path) -> None:
            safetensors.torch.save_file(new, os.fspath(to), metadata=metadata)

        return tensors, save_safetensors
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    flat: dict[str, torch.Tensor] = {}
    _flatten(loaded, (), flat)

    def save_pickle(new: dict[str, torch.Tensor], to: Path) -> None:
        torch.save(_rebuild(loaded, (), new), to)

    return flat, save_pickle


def _flatten(value: object, key: tuple[str, ...], into: dict[str, torch.Tensor]) -> None:
    # A pickle may nest its state dict (``{"state_dict": {...}, "epoch": 3}``); keys join with "\0", which
    # no tensor name holds, so that the structure is rebuilt exactly.
    if isinstance(value, torch.Tensor):
        into["\0".join(key)] = value
    elif isinstance(value, Mapping):
        for name, inner in value.items():
            _flatten(inner, (*key, str(name)), into)


def _rebuild(value: object, key: tuple[str, ...], new: Mapping[str, torch.Tensor]) -> object:
    if isinstance(value, torch.Tensor):
        return new["\0".join(key)]
    if isinstance(value, Mapping):
        rebuilt = {name: _rebuild(inner, (*key, str(name)), new) for name, inner in value.items()}
        if isinstance(value, dict) and type(value) is not dict:  # an OrderedDict stays one
            typed = type(value)()
            typed.update(rebuilt)
            return typed
        return rebuilt
    return value


def _write_index(source: Path, target: Path, sizes: Mapping[str, int]) -> None:
    index = json.loads(source.read_text())
    metadata = index.get("metadata") if isinstance(index, dict) else None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if isinstance(metadata, dict) and "total_size" in metadata and isinstance(weight_map, dict):
        metadata["total_size"] = sum(sizes.get(shard, 0) for shard in set(weight_map.values()))
        target.write_text(json.dumps(index, indent=2) + "\n")
    else:
        shutil.copyfile(source, target)


def _write_fp16_config(source: Path, target: Path) -> None:
    config = json.loads(source.read_text())
    for key in ("dtype", "torch_dtype"):
        if isinstance(config, dict) and key in config:
            config[key] = "float16"
    target.write_text(json.dumps(config, indent=2) + "\n")


# --- int8 ---------------------------------------------------------------------------------------------------


def _bitsandbytes() -> Any:
    try:
        import bitsandbytes
    except ImportError:
        raise MissingDependencyError(
            "the `int8` variant needs bitsandbytes, which is not installed",
            hint="pip install 'mothertree[zoo]' (or pip install bitsandbytes)",
        ) from None
    return bitsandbytes


def quantize_linears(model: nn.Module) -> tuple[list[str], list[str]]:
    """Replace every ``nn.Linear`` of ``model`` by a quantised bitsandbytes ``Linear8bitLt``, in place.

    Returns the names of the layers replaced and of those kept float (a Linear whose weight is tied to
    another module's, as an output head tied to the word embeddings: quantising it would untie them).

    Raises:
        MissingDependencyError: bitsandbytes is not installed.
        RuntimeError: bitsandbytes left a weight unquantised.
    """
    bnb = _bitsandbytes()
    others = {
        parameter.data_ptr()
        for module in model.modules()
        if not isinstance(module, nn.Linear)
        for parameter in module.parameters(recurse=False)
    }
    replaced: list[str] = []
    kept: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or isinstance(child, bnb.nn.Linear8bitLt):
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if child.weight.data_ptr() in others:
                kept.append(name)
                continue
            layer = bnb.nn.Linear8bitLt(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                has_fp16_weights=False,
                threshold=INT8_THRESHOLD,
            )
            layer.weight = bnb.nn.Int8Params(
                child.weight.detach().clone(), requires_grad=False, has_fp16_weights=False
            )
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.detach().clone(), requires_grad=False)
            layer.to("cpu")  # bitsandbytes quantises a weight when it is moved to a device: here, the CPU
            if layer.weight.dtype != torch.int8 or layer.weight.SCB is None:
                raise RuntimeError(
                    f"bitsandbytes {bnb.__version__} did not quantise `{name}` on the CPU "
                    f"(its weight is {layer.weight.dtype})"
                )
            setattr(parent, child_name, layer)
            replaced.append(name)
    return replaced, kept


def _int8_transformers(source: Path, target: Path, *, quiet: bool) -> dict[str, Any]:
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError(
            f"`{source}` is a transformers model folder; its `int8` variant needs transformers",
            hint="pip install 'mothertree[zoo]'",
        ) from None
    _bitsandbytes()  # before loading anything, so that a missing package is the first news
    config = transformers.AutoConfig.from_pretrained(source)
    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    with _quiet_transformers(quiet, transformers):
        model = (model_class or transformers.AutoModel).from_pretrained(source, dtype="auto").eval()
        replaced, kept = quantize_linears(model)
        # What transformers writes for a model it loaded with `load_in_8bit`; with it, transformers loads
        # this folder back quantised. Every Linear not listed as skipped was quantised.
        model.config.quantization_config = transformers.BitsAndBytesConfig(
            load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD, llm_int8_skip_modules=kept
        )
        model.save_pretrained(target)
    return {"files": _weight_names(target), "linear_quantized": len(replaced), "linear_kept_float": kept}


def _int8_mobilenet(source: Path, target: Path, weight_files: list[str]) -> dict[str, Any]:
    from .files import load_state_dict
    from .mobilenet import MobileNetV2

    if len(weight_files) != 1:
        raise UnsupportedFormatError(
            f"`{source}` holds {len(weight_files)} weight files and no `config.json`; the `int8` variant "
            "of a plain state dict reads one file",
            path=source,
        )
    state = load_state_dict(source / weight_files[0])
    head = state.get("classifier.1.weight")
    model = MobileNetV2(num_classes=int(head.shape[0])) if head is not None and head.dim() == 2 else None
    try:
        if model is None:
            raise RuntimeError("no `classifier.1.weight` matrix")
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedFormatError(
            f"`{source / weight_files[0]}` is a plain state dict that is not a MobileNetV2 ({first}); the "
            "`int8` variant needs the model's architecture to find its Linear layers",
            hint="save the model with transformers' `save_pretrained` (with its `config.json`)",
            path=source,
        ) from None
    replaced, kept = quantize_linears(model.eval())
    state_int8 = {key: value.detach().contiguous().clone() for key, value in model.state_dict().items()}
    safetensors.torch.save_file(state_int8, os.fspath(target / SAFETENSORS_FILE), metadata={"format": "pt"})
    return {"files": [SAFETENSORS_FILE], "linear_quantized": len(replaced), "linear_kept_float": kept}


def _weight_names(folder: Path) -> list[str]:
    return [path.name for path in sorted(folder.iterdir()) if _is_weights(path)]


@contextlib.contextmanager
def _quiet_transformers(quiet: bool, transformers: Any) -> Iterator[None]:
    """transformers' own progress bars (loading, writing) off while ``quiet``."""
    hf_logging = transformers.utils.logging
    was_on = hf_logging.is_progress_bar_enabled()
    if quiet and was_on:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was_on:
            hf_logging.enable_progress_bar()
