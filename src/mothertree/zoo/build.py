"""Build the Model Graph a ``GraphSpec`` describes: real roots, real fine-tunes, files as users write them.

Every model is a folder under ``out`` named by its opaque id; ``truth.json`` holds the edges and, per model,
its settings, the held-out accuracy it reached, its weight change relative to its parent and a digest of
its weights. The build is resumable: ``.build-state.json`` records every finished model, and a rerun
trains only what is missing (a spec that changed since refuses to mix, unless ``force``).

Vision models are MobileNetV2 state dicts (``model.safetensors`` or ``pytorch_model.bin``), text models
are MiniLM encoders written by transformers ``save_pretrained`` (fp32, sharded or bf16) or, for LoRA leaves
saved as ``adapter``, PEFT adapter folders naming their parent as base. Text fine-tunes keep the
11.7M-parameter embedding table frozen (it is not compared, and training it triples a CPU step).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._progress import progress, progress_enabled
from ..errors import InvalidParameterError, MissingDependencyError
from .demo import (
    _FILE_NAMES,
    _atomic_write,
    _locked,
    _plain_state_dict,
    _save_model,
    cache_dir,
    load_state_dict,
    relative_change,
)
from .mobilenet import MobileNetV2, load_imagenet_mobilenet_v2
from .spec import GraphSpec, NodePlan, plan_graph
from .tasks import get_task, mixture_task
from .train import TrainResult
from .train import fine_tune as train_vision

LOG = logging.getLogger(__name__)

TRUTH_FILE = "truth.json"
STATE_FILE = ".build-state.json"
_BUILD_VERSION = 1

__all__ = ["GraphBuild", "build_graph", "weights_digest"]


@dataclass(frozen=True)
class GraphBuild:
    """The outcome of ``build_graph``: the folder, what this call trained, what it found done, its time."""

    path: Path
    trained: tuple[str, ...]
    reused: tuple[str, ...]
    seconds: float


def _fingerprint(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def weights_digest(folder: Path) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) of the weight files in ``folder``.

    Independent of file layout details (zip timestamps, shard boundaries), so two builds with the same
    seed compare equal exactly when their weights do.
    """
    digest = hashlib.sha256()
    files = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")])
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        tensors.update(load_state_dict(path))
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Bytes through a uint8 view: numpy has no bfloat16, and 0-d tensors cannot be viewed directly.
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- state ----------------------------------------------------------------------------------------------


def _write_json(path: Path, value: object) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"))


def _read_state(out: Path, fingerprint: str, force: bool) -> dict[str, Any]:
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if force or not isinstance(state, dict):
        return {}
    if state.get("spec") != fingerprint:
        raise InvalidParameterError(
            f"{out} holds a build of another spec (or of an older mothertree)",
            hint="build into a new folder, or pass --force to rebuild it from scratch",
        )
    records = state.get("models", {})
    return records if isinstance(records, dict) else {}


# --- roots ----------------------------------------------------------------------------------------------


def pretrained_roots_dir() -> Path:
    """Where roots pre-trained from scratch are kept between builds (several splits share them)."""
    return cache_dir() / "roots"


def _scratch_root(spec: GraphSpec, plan: NodePlan, folder: Path) -> dict[str, Any]:
    """Pre-train a ``scratch:`` root, or copy it from the cache when an identical one was trained before."""
    settings = {
        "version": _BUILD_VERSION,
        "family": spec.family,
        "root": plan.root,
        "steps": spec.pretrain_steps,
        "lr": spec.pretrain_lr,
        **(
            {"batch_size": spec.batch_size, "image_size": spec.image_size}
            if spec.family == "vision"
            else {"layers": spec.layers}
        ),
    }
    cached = pretrained_roots_dir() / _fingerprint(settings)[:16]
    if (cached / "record.json").is_file():
        for file in cached.iterdir():
            if file.name != "record.json":
                shutil.copy2(file, folder / file.name)
        record: dict[str, Any] = json.loads((cached / "record.json").read_text())
        return record
    if spec.family == "vision":
        state, record = _vision_root(spec, plan)
        _save_vision(state, folder, "bin")
    else:
        record = _text_root(spec, plan, folder)
    partial = cached.with_name(f".{cached.name}.{os.getpid()}")
    shutil.copytree(folder, partial, dirs_exist_ok=True)
    (partial / "record.json").write_text(json.dumps(record, indent=2))
    if not cached.exists():
        os.replace(partial, cached)
    else:  # another build finished the same root first
        shutil.rmtree(partial)
    return record


def _hf_snapshot(source: str) -> Path:
    """The local folder of ``hf:<org>/<name>``: downloaded when online, from the cache when offline."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise MissingDependencyError(
            f"root {source!r} needs huggingface_hub", hint="pip install 'mothertree[hub]'"
        ) from exc
    return Path(snapshot_download(repo_id=source.removeprefix("hf:")))


def _vision_weights_file(folder: Path) -> Path:
    for name in (*_FILE_NAMES.values(), "mobilenet_v2.pth"):
        if (folder / name).is_file():
            return folder / name
    raise InvalidParameterError(
        f"no MobileNetV2 weights in {folder}", hint="expected model.safetensors or pytorch_model.bin"
    )


def _vision_model(state: Mapping[str, torch.Tensor]) -> MobileNetV2:
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: keep the caller's RNG as is
        model = MobileNetV2(num_classes=int(state["classifier.1.weight"].shape[0]))
    model.load_state_dict(state, strict=True)
    return model.eval()


def _vision_root(spec: GraphSpec, plan: NodePlan) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    source = plan.root or ""
    if source == "imagenet":
        return _plain_state_dict(load_imagenet_mobilenet_v2()), {"task": "imagenet-1k (torchvision weights)"}
    if source.startswith("hf:"):
        state = load_state_dict(_vision_weights_file(_hf_snapshot(source)))
        _vision_model(state)  # must be this architecture, whole
        return dict(state), {"task": f"downloaded {source}"}
    seed = int(source.removeprefix("scratch:"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MobileNetV2(num_classes=1)  # fine_tune gives it the mixture's head
    task = mixture_task()
    result = train_vision(
        model,
        task,
        steps=spec.pretrain_steps,
        lr=spec.pretrain_lr,
        batch_size=spec.batch_size,
        seed=seed,
        image_size=spec.image_size,
        progress=True,
        desc=f"pre-training {plan.id}",
    )
    record = {
        "task": f"pre-trained from random init (seed {seed}), {task.n_classes}-way mixture of all tasks",
        "steps": result.steps,
        "lr": spec.pretrain_lr,
        **_outcome(result),
    }
    return _plain_state_dict(model), record


def _outcome(result: TrainResult) -> dict[str, Any]:
    return {
        "accuracy": result.accuracy,
        "chance": result.chance,
        "final_loss": result.final_loss,
        "initial_loss": result.initial_loss,
        "seconds": result.seconds,
    }


def _text_root(spec: GraphSpec, plan: NodePlan, folder: Path) -> dict[str, Any]:
    from transformers import AutoConfig, AutoModel

    from .text import CONTINUED_PRETRAINING, Node, continue_pretraining, keep_layers, minilm_path

    source = plan.root or ""
    layers = spec.layers
    if source.startswith("scratch:"):
        seed = int(source.removeprefix("scratch:"))
        config = AutoConfig.from_pretrained(minilm_path())
        if layers is not None:
            config.num_hidden_layers = layers
        torch.manual_seed(seed)
        encoder = AutoModel.from_config(config)
        node = Node(plan.id, None, CONTINUED_PRETRAINING, spec.pretrain_lr, seed)
        started = time.perf_counter()
        accuracy = continue_pretraining(encoder, _tokenizer(), node, spec.pretrain_steps)
        encoder.save_pretrained(folder)
        return {
            "task": f"pre-trained from random init (seed {seed}) by masked-token prediction",
            "steps": spec.pretrain_steps,
            "lr": spec.pretrain_lr,
            "accuracy": accuracy,
            "seconds": time.perf_counter() - started,
        }
    if source.startswith("hf:"):
        snapshot, first, what = _hf_snapshot(source), 0, f"downloaded {source}"
    else:
        snapshot, first = minilm_path(), int(source.split("@", 1)[1]) if "@" in source else 0
        what = "all-MiniLM-L6-v2" + (f", encoder layers {first}..{first + layers - 1}" if layers else "")
    if layers is None and first == 0 and not source.startswith("hf:"):
        shutil.copytree(snapshot, folder, dirs_exist_ok=True)
        return {"task": what}
    encoder = AutoModel.from_pretrained(snapshot, dtype=torch.float32)
    if layers is not None:
        try:
            keep_layers(encoder, first, layers)
        except ValueError as exc:
            raise InvalidParameterError(f"root {source!r}: {exc}") from None
    encoder.save_pretrained(folder)
    return {"task": what}


@functools.cache
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    from .text import minilm_path

    return AutoTokenizer.from_pretrained(minilm_path())


# --- fine-tunes -----------------------------------------------------------------------------------------


def _vision_child(
    spec: GraphSpec, plan: NodePlan, parent: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    model = _vision_model(parent)
    task = get_task(plan.task or "")
    result = train_vision(
        model,
        task,
        steps=spec.steps,
        lr=plan.lr or 0.0,
        batch_size=spec.batch_size,
        seed=plan.seed,
        image_size=spec.image_size,
        progress=True,
        desc=plan.id,
    )
    return _plain_state_dict(model), _outcome(result)


def _text_child(spec: GraphSpec, plan: NodePlan, parent_folder: Path, folder: Path) -> dict[str, Any]:
    from transformers import AutoModel

    from .text import LORA_TARGETS, TASKS, Node, fine_tune, majority_rate

    started = time.perf_counter()
    encoder = AutoModel.from_pretrained(parent_folder, dtype=torch.float32)
    parent_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    encoder.embeddings.requires_grad_(False)
    node = Node(plan.id, plan.parent, plan.task or "", plan.lr or 0.0, plan.seed)
    if plan.method == "full":
        accuracy = fine_tune(encoder, _tokenizer(), node, spec.steps)
    else:
        from peft import LoraConfig, get_peft_model

        rank = plan.lora_rank or 16
        wrapped = get_peft_model(encoder, LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS))
        accuracy = fine_tune(wrapped, _tokenizer(), node, spec.steps)
        if plan.save == "adapter":
            # What a user publishes: the adapter alone, naming its base by the folder it was loaded from.
            wrapped.save_pretrained(str(folder))
        encoder = wrapped.merge_and_unload()
    change = relative_change(encoder.state_dict(), parent_state)
    if plan.save == "bf16":
        encoder = encoder.to(torch.bfloat16)
    if plan.save != "adapter":
        encoder.save_pretrained(folder, max_shard_size="20MB" if plan.save == "sharded" else "5GB")
    return {
        "accuracy": accuracy,
        "majority": majority_rate(TASKS[node.task]),
        "relative_change_from_parent": change,
        "seconds": time.perf_counter() - started,
    }


def _save_vision(state: Mapping[str, torch.Tensor], folder: Path, save: str) -> None:
    _save_model(state, folder, "safetensors" if save == "safetensors" else "bin")


# --- the build ------------------------------------------------------------------------------------------


def build_graph(spec: GraphSpec, out: Path, *, force: bool = False, quiet: bool = False) -> GraphBuild:
    """Build ``spec`` under ``out`` (resuming an interrupted build) and return what was done.

    ``out/truth.json`` is written last: ``{"edges": [{"parent", "child"}], "models": {id: settings and
    outcome}, "spec": ...}``. Torch's thread count stays as the caller set it; bit-identical rebuilds need
    the same thread count.
    """
    started = time.perf_counter()
    out = Path(out)
    plans = plan_graph(spec)
    if spec.family == "text" and not progress_enabled():
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):  # two builds of one folder would train the same models twice
        trained, reused = _build_locked(spec, plans, out, force=force, quiet=quiet)
    return GraphBuild(out, tuple(trained), tuple(reused), time.perf_counter() - started)


def _build_locked(
    spec: GraphSpec, plans: list[NodePlan], out: Path, *, force: bool, quiet: bool
) -> tuple[list[str], list[str]]:
    fingerprint = _fingerprint({"version": _BUILD_VERSION, "spec": spec.to_json()})
    done = _read_state(out, fingerprint, force)
    records: dict[str, dict[str, Any]] = {}
    trained: list[str] = []
    reused: list[str] = []
    # Vision parents are held in memory only while a child still needs them (text parents are on disk).
    vision_weights: dict[str, dict[str, torch.Tensor]] = {}
    children_left = {p.id: sum(1 for c in plans if c.parent == p.id) for p in plans}
    by_id = {p.id: p for p in plans}

    for plan in progress(plans, desc=f"building {spec.name}", total=len(plans), unit="model"):
        folder = out / plan.id
        record = done.get(plan.id)
        if record is not None and folder.is_dir():
            reused.append(plan.id)
            if spec.family == "vision" and children_left[plan.id]:
                vision_weights[plan.id] = dict(load_state_dict(_vision_weights_file(folder)))
        else:
            if folder.exists():
                shutil.rmtree(folder)  # a model interrupted half-way: ours, never finished
            folder.mkdir(parents=True)
            record = _build_one(spec, plan, by_id, folder, out, vision_weights)
            record["weights_sha256"] = weights_digest(folder)
            trained.append(plan.id)
            if not quiet:
                _log(plan, record)
        records[plan.id] = record
        _write_json(out / STATE_FILE, {"version": _BUILD_VERSION, "spec": fingerprint, "models": records})
        if plan.parent is not None:
            children_left[plan.parent] -= 1
            if children_left[plan.parent] == 0:
                vision_weights.pop(plan.parent, None)

    truth = {
        "edges": [{"parent": p.parent, "child": p.id} for p in plans if p.parent is not None],
        "models": {pid: {k: v for k, v in rec.items() if k != "seconds"} for pid, rec in records.items()},
        "spec": spec.to_json(),
    }
    _write_json(out / TRUTH_FILE, truth)
    return trained, reused


def _build_one(
    spec: GraphSpec,
    plan: NodePlan,
    by_id: Mapping[str, NodePlan],
    folder: Path,
    out: Path,
    vision_weights: dict[str, dict[str, torch.Tensor]],
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "parent": plan.parent,
        "tree": plan.tree,
        "depth": plan.depth,
        "root": plan.root,
        "task": plan.task,
        "lr": plan.lr,
        "seed": plan.seed,
        "steps": spec.steps if plan.parent else None,
        "method": plan.method if plan.parent else None,
        "lora_rank": plan.lora_rank,
        "saved_as": plan.save or None,
    }
    if plan.parent is None and (plan.root or "").startswith("scratch:"):
        outcome = _scratch_root(spec, plan, folder)
        settings["saved_as"] = "bin" if spec.family == "vision" else "fp32"
        if spec.family == "vision":
            vision_weights[plan.id] = dict(load_state_dict(_vision_weights_file(folder)))
    elif spec.family == "vision":
        if plan.parent is None:
            state, outcome = _vision_root(spec, plan)
            _save_vision(state, folder, "bin")
            settings["saved_as"] = "bin"
        else:
            parent = vision_weights[plan.parent]
            state, outcome = _vision_child(spec, plan, parent)
            outcome["relative_change_from_parent"] = relative_change(state, parent)
            _save_vision(state, folder, plan.save)
        vision_weights[plan.id] = state
    elif plan.parent is None:
        outcome = _text_root(spec, plan, folder)
        settings["saved_as"] = "fp32"
    else:
        if by_id[plan.parent].save == "adapter":
            raise InvalidParameterError(f"{plan.id}: an adapter cannot be a parent in the zoo")
        outcome = _text_child(spec, plan, out / plan.parent, folder)
    return {**settings, **outcome}


def _log(plan: NodePlan, record: Mapping[str, Any]) -> None:
    if plan.parent is None:
        LOG.info("root %s: %s", plan.id, record.get("task"))
        return
    LOG.info(
        "%s <- %s  %-12s lr=%-7g %s%s accuracy %.3f  change from parent %.4f  %.0f s",
        plan.id,
        plan.parent,
        plan.task,
        plan.lr,
        plan.method,
        f" r={plan.lora_rank}" if plan.lora_rank else "",
        record.get("accuracy", float("nan")),
        record.get("relative_change_from_parent", float("nan")),
        record.get("seconds", 0.0),
    )
