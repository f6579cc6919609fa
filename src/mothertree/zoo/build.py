"""Build the Model Graph a ``GraphSpec`` describes: real roots, real fine-tunes, files as users write them.

Every model is a folder under ``out`` named by its id; ``truth.json`` holds the edges (each with its
relation: ``finetune``, ``adapter``, or that of a derived model, see ``zoo.derive``) and, per model, its
settings, the held-out accuracy it reached, its weight change relative to its parent and a digest of its
weights. The build is resumable: ``.build-state.json`` records every finished model, and a rerun makes only
what is missing. A folder holding a build of another spec is refused, unless ``force``: then every model is
made again, and the other build's models that this spec does not have are removed.

Vision models are MobileNetV2 state dicts (``model.safetensors`` or ``pytorch_model.bin``), text models
are MiniLM encoders written by transformers ``save_pretrained`` (fp32, sharded or bf16) or, for LoRA leaves
saved as ``adapter``, PEFT adapter folders naming their parent as base. A text fine-tune on the task
``mlm`` continues pre-training by masked-token prediction instead of learning a sentence task.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._progress import progress, progress_enabled
from ..errors import InvalidParameterError, MissingDependencyError
from .files import (
    TRUTH_FILE,
    WEIGHT_FILES,
    cache_dir,
    load_state_dict,
    plain_state_dict,
    save_state_dict,
    weights_digest,
    write_json,
)
from .mobilenet import MobileNetV2, load_imagenet_mobilenet_v2, mobilenet_from_state
from .spec import GraphSpec, NodePlan, plan_graph
from .tasks import get_task, mixture_task
from .train import DEFAULT_WEIGHT_DECAY as DEFAULT_VISION_WEIGHT_DECAY
from .train import TrainResult
from .train import fine_tune as train_vision

LOG = logging.getLogger(__name__)

STATE_FILE = ".build-state.json"
# Bump when a change to the code changes what a given spec produces: older build folders are then refused.
_BUILD_VERSION = 1

__all__ = [
    "STATE_FILE",
    "TRUTH_FILE",
    "GraphBuild",
    "build_graph",
    "pretrained_roots_dir",
    "relative_change",
    "weights_digest",
]


@dataclass(frozen=True)
class GraphBuild:
    """The outcome of ``build_graph``.

    Attributes:
        path: the graph's folder (one sub-folder per model, plus ``truth.json``).
        trained: ids of the models this call made, in build order.
        reused: ids of the models a previous build finished, found on disk.
        seconds: wall time of the call.
    """

    path: Path
    trained: tuple[str, ...]
    reused: tuple[str, ...]
    seconds: float


def _fingerprint(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def relative_change(child: Mapping[str, torch.Tensor], parent: Mapping[str, torch.Tensor]) -> float:
    """``||W_child - W_parent|| / ||W_parent||`` over every floating tensor of >= 2 dims both share in shape.

    BatchNorm vectors and biases are left out (they are not "weights" in the Model Tree sense), and so is a
    classifier whose class count changed, since it has no counterpart in the parent.
    """
    diff = 0.0
    norm = 0.0
    # Sorted: safetensors hands keys back sorted, pickles in module order, and the sum must not depend on it.
    for name in sorted(parent):
        w_parent, w_child = parent[name], child.get(name)
        if w_child is None or w_parent.ndim < 2 or w_child.shape != w_parent.shape:
            continue
        if not w_parent.is_floating_point():
            continue
        p64, c64 = w_parent.double(), w_child.double()
        diff += float(((c64 - p64) ** 2).sum())
        norm += float((p64**2).sum())
    if norm == 0.0:
        raise ValueError("the models share no >= 2-D weight of the same shape")
    return (diff / norm) ** 0.5


# --- the build ------------------------------------------------------------------------------------------


def build_graph(spec: GraphSpec, out: Path, *, force: bool = False, quiet: bool = False) -> GraphBuild:
    """Build ``spec`` under ``out`` (resuming an interrupted build) and return what was done.

    ``out/truth.json`` is written last: ``{"edges": [{"parent", "child", "relation"}], "models": {id:
    settings and outcome, ``weights_sha256`` included}, "spec": ...}``. ``quiet``: no log lines (progress
    bars show on a terminal only, see ``mothertree._progress``). Torch's thread count stays as the caller
    set it; bit-identical rebuilds need the same thread count.

    Raises:
        InvalidParameterError: ``out`` holds a build of another spec, and ``force`` is not set.
    """
    started = time.perf_counter()
    out = Path(out)
    plans = plan_graph(spec)
    if spec.family == "text" and not progress_enabled():
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    # Locked: two builds of one folder would train the same models twice.
    with _log_to_stderr(not quiet), _locked(out):
        trained, reused = _build_locked(spec, plans, out, force=force, quiet=quiet)
    return GraphBuild(out, tuple(trained), tuple(reused), time.perf_counter() - started)


def _build_locked(
    spec: GraphSpec, plans: list[NodePlan], out: Path, *, force: bool, quiet: bool
) -> tuple[list[str], list[str]]:
    fingerprint = _fingerprint({"version": _BUILD_VERSION, "spec": spec.to_json()})
    done = _finished_models(out, fingerprint, {p.id for p in plans}, force=force)
    for stale in out.glob(".*.tmp"):  # the folder is locked: left by a build that was killed
        stale.unlink()
    positions = _positions(plans)
    weights = _ParentWeights(out, plans)
    records: dict[str, dict[str, Any]] = {}
    trained: list[str] = []
    reused: list[str] = []
    for plan in progress(plans, desc=f"building {spec.name}", total=len(plans), unit="model"):
        folder = out / plan.id
        record = done.get(plan.id)
        if record is not None and folder.is_dir():
            reused.append(plan.id)
            records[plan.id] = record
        else:
            if folder.exists():
                shutil.rmtree(folder)  # a model interrupted half-way: ours, never finished
            folder.mkdir(parents=True)
            record = {**_settings(spec, plan, positions[plan.id]), **_make(spec, plan, out, weights)}
            record["weights_sha256"] = weights_digest(folder)
            records[plan.id] = record
            trained.append(plan.id)
            state = {"version": _BUILD_VERSION, "spec": fingerprint, "models": {**done, **records}}
            write_json(out / STATE_FILE, state)
            if not quiet:
                _log(plan, record)
        weights.made(plan)
    truth = {
        "edges": truth_edges(spec, plans),
        # Run times stay in the state file: the truth of a spec is the same on every machine.
        "models": {pid: {k: v for k, v in rec.items() if k != "seconds"} for pid, rec in records.items()},
        "spec": spec.to_json(),
    }
    write_json(out / TRUTH_FILE, truth)
    return trained, reused


def truth_edges(spec: GraphSpec, plans: list[NodePlan]) -> list[dict[str, Any]]:
    """Every parent -> child edge with its relation (``finetune``, ``adapter``, or a derivation's); a
    merge has an edge from each of its models, with that model's share of the merge as ``weight``."""
    from .derive import derivation

    edges: list[dict[str, Any]] = []
    for plan in plans:
        if plan.derive is not None:
            relation: str = derivation(plan.derive, spec.family).relation
        else:
            relation = "adapter" if plan.save == "adapter" else "finetune"
        weights = list(plan.merge_weights) or [1.0] * len(plan.parents)
        for source, weight in zip(plan.parents, weights, strict=True):
            edge: dict[str, Any] = {"parent": source, "child": plan.id, "relation": relation}
            if relation == "merge":
                edge["weight"] = weight / sum(weights)
            edges.append(edge)
    return edges


def _finished_models(out: Path, fingerprint: str, ids: set[str], *, force: bool) -> dict[str, Any]:
    """The records of the models a previous build of this spec finished in ``out`` (none with ``force``)."""
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    records = state.get("models") if isinstance(state, dict) else None
    if not isinstance(records, dict):
        return {}
    if force:
        # A model of the other build that this spec lacks would otherwise pose as part of the graph.
        for model_id in set(records) - ids:
            folder = out / str(model_id)
            if folder.parent == out and not folder.name.startswith(".") and folder.is_dir():
                shutil.rmtree(folder)
        return {}
    if state.get("spec") != fingerprint:
        raise InvalidParameterError(
            f"{out} holds a build of another spec (or of an older mothertree)",
            hint="build into a new folder, or pass --force to rebuild it from scratch",
        )
    return records


def _positions(plans: list[NodePlan]) -> dict[str, tuple[int, int]]:
    """Each model's tree (roots numbered in order) and depth below its root."""
    positions: dict[str, tuple[int, int]] = {}
    roots = 0
    for plan in plans:
        if plan.parent is None:
            positions[plan.id] = (roots, 0)
            roots += 1
        else:
            tree, depth = positions[plan.parent]
            positions[plan.id] = (tree, depth + 1)
    return positions


def _settings(spec: GraphSpec, plan: NodePlan, position: tuple[int, int]) -> dict[str, Any]:
    if plan.derive is not None:
        merge = {"merge_with": list(plan.merge_with), "merge_weights": list(plan.merge_weights)}
        return {
            "parent": plan.parent,
            "tree": position[0],
            "depth": position[1],
            "derive": plan.derive,
            **(merge if plan.merge_with else {}),
        }
    tuned = plan.parent is not None
    return {
        "parent": plan.parent,
        "tree": position[0],
        "depth": position[1],
        "root": plan.root,
        "task": plan.task,
        "lr": plan.lr,
        "seed": plan.seed,
        "steps": (plan.steps or spec.steps) if tuned else None,
        "weight_decay": plan.weight_decay,
        "method": plan.method if tuned else None,
        "lora_rank": plan.lora_rank,
        "saved_as": plan.save,
    }


class _ParentWeights:
    """Vision models' weights, held in memory only while a child of theirs is still to be made.

    Text parents are read from their folders, since transformers loads a model from a folder anyway.
    """

    def __init__(self, out: Path, plans: list[NodePlan]) -> None:
        self._out = out
        self._children_left = Counter(p.parent for p in plans if p.parent is not None)
        self._held: dict[str, dict[str, torch.Tensor]] = {}

    def of(self, model_id: str) -> dict[str, torch.Tensor]:
        if model_id not in self._held:  # made by this build's root code, or by an earlier build
            self._held[model_id] = load_state_dict(_vision_weights_file(self._out / model_id))
        return self._held[model_id]

    def keep(self, model_id: str, state: dict[str, torch.Tensor]) -> None:
        if self._children_left[model_id]:
            self._held[model_id] = state

    def made(self, plan: NodePlan) -> None:
        if plan.parent is not None:
            self._children_left[plan.parent] -= 1
            if self._children_left[plan.parent] == 0:
                self._held.pop(plan.parent, None)


def _make(spec: GraphSpec, plan: NodePlan, out: Path, weights: _ParentWeights) -> dict[str, Any]:
    """Make model ``plan`` in its empty folder; return what it reached."""
    folder = out / plan.id
    if plan.parent is None:
        return _make_root(spec, plan, folder)
    if plan.derive is not None:
        return _derive(spec, plan, out)
    if spec.family == "text":
        return _text_fine_tune(spec, plan, out / plan.parent, folder)
    parent = weights.of(plan.parent)
    state, outcome = _vision_fine_tune(spec, plan, parent)
    if plan.save == "fp16":
        # Its children start from what is stored, as they would from a published half-precision file.
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    save_state_dict(state, folder, "bin" if plan.save == "bin" else "safetensors")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    weights.keep(plan.id, state)
    return {**outcome, "relative_change_from_parent": relative_change(state, parent)}


def _derive(spec: GraphSpec, plan: NodePlan, out: Path) -> dict[str, Any]:
    from .derive import derive_model

    folder = out / plan.id
    folder.rmdir()  # made here from its sources, as a new folder
    # TIES and DARE-TIES merge task vectors: differences from the models' nearest common ancestor.
    sparse = plan.derive in ("ties", "dare_ties")
    base = _common_ancestor({p.id: p for p in plan_graph(spec)}, plan.parents) if sparse else None
    return derive_model(
        plan.derive or "",
        spec.family,
        [out / source for source in plan.parents],
        folder,
        weights=plan.merge_weights,
        base=out / base if base is not None else None,
        seed=plan.seed,
    )


def _common_ancestor(by_id: Mapping[str, NodePlan], models: tuple[str, ...]) -> str | None:
    """The nearest model that every one of ``models`` descends from (or is)."""

    def lineage(model_id: str) -> list[str]:
        chain = [model_id]
        while by_id[chain[-1]].parent is not None:
            chain.append(by_id[chain[-1]].parent or "")
        return chain

    shared = set.intersection(*(set(lineage(m)) for m in models))
    return next((m for m in lineage(models[0]) if m in shared), None)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Serialise builds of one folder across processes (POSIX); elsewhere atomic writes are the only guard."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _log_to_stderr(enabled: bool) -> Iterator[None]:
    # The per-model lines must reach a user who has configured no logging at all (the usual case for a
    # script calling build_graph); an application that configured logging keeps full control.
    if not enabled or LOG.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = LOG.level
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(previous_level)


def _log(plan: NodePlan, record: Mapping[str, Any]) -> None:
    if plan.parent is None:
        LOG.info("root %s: %s", plan.id, record.get("task"))
        return
    if plan.derive is not None:
        LOG.info(
            "%s <- %s  %s (%s)", plan.id, ", ".join(plan.parents), record.get("how"), record.get("relation")
        )
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


# --- roots ----------------------------------------------------------------------------------------------


def pretrained_roots_dir() -> Path:
    """Where roots pre-trained from scratch are kept between builds (several splits share them)."""
    return cache_dir() / "roots"


def _make_root(spec: GraphSpec, plan: NodePlan, folder: Path) -> dict[str, Any]:
    source = plan.root or ""
    if source.startswith("scratch:"):
        return _scratch_root(spec, plan, folder)
    if spec.family == "text":
        return _text_root(spec, source, folder)
    state, record = _vision_root(source)
    save_state_dict(state, folder, "bin")
    return record


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
        state, record = _pretrain_vision_root(spec, plan)
        save_state_dict(state, folder, "bin")
    else:
        record = _pretrain_text_root(spec, plan, folder)
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
    for name in (*WEIGHT_FILES.values(), "mobilenet_v2.pth"):
        if (folder / name).is_file():
            return folder / name
    raise InvalidParameterError(
        f"no MobileNetV2 weights in {folder}", hint="expected model.safetensors or pytorch_model.bin"
    )


def _vision_root(source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if source == "imagenet":
        return plain_state_dict(load_imagenet_mobilenet_v2()), {"task": "imagenet-1k (torchvision weights)"}
    state = load_state_dict(_vision_weights_file(_hf_snapshot(source)))
    mobilenet_from_state(state)  # must be this architecture, whole
    return dict(state), {"task": f"downloaded {source}"}


def _pretrain_vision_root(spec: GraphSpec, plan: NodePlan) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    seed = int((plan.root or "").removeprefix("scratch:"))
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
    return plain_state_dict(model), record


def _outcome(result: TrainResult) -> dict[str, Any]:
    return {
        "accuracy": result.accuracy,
        "chance": result.chance,
        "final_loss": result.final_loss,
        "initial_loss": result.initial_loss,
        "seconds": result.seconds,
    }


def _pretrain_text_root(spec: GraphSpec, plan: NodePlan, folder: Path) -> dict[str, Any]:
    from transformers import AutoConfig, AutoModel

    from .text import continue_pretraining, minilm_path

    seed = int((plan.root or "").removeprefix("scratch:"))
    config = AutoConfig.from_pretrained(minilm_path())
    if spec.layers is not None:
        config.num_hidden_layers = spec.layers
    torch.manual_seed(seed)
    encoder = AutoModel.from_config(config)
    started = time.perf_counter()
    accuracy = continue_pretraining(
        encoder, _tokenizer(), lr=spec.pretrain_lr, seed=seed, steps=spec.pretrain_steps
    )
    encoder.save_pretrained(folder)
    return {
        "task": f"pre-trained from random init (seed {seed}) by masked-token prediction",
        "steps": spec.pretrain_steps,
        "lr": spec.pretrain_lr,
        "accuracy": accuracy,
        "seconds": time.perf_counter() - started,
    }


def _text_root(spec: GraphSpec, source: str, folder: Path) -> dict[str, Any]:
    from transformers import AutoModel

    from .text import keep_layers, minilm_path

    layers = spec.layers
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


def _vision_fine_tune(
    spec: GraphSpec, plan: NodePlan, parent: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    model = mobilenet_from_state(parent)
    result = train_vision(
        model,
        get_task(plan.task or ""),
        steps=plan.steps or spec.steps,
        lr=plan.lr or 0.0,
        batch_size=spec.batch_size,
        seed=plan.seed,
        image_size=spec.image_size,
        eval_samples=spec.eval_samples,
        progress=True,
        desc=plan.id,
        weight_decay=DEFAULT_VISION_WEIGHT_DECAY if plan.weight_decay is None else plan.weight_decay,
    )
    return plain_state_dict(model), _outcome(result)


def _text_fine_tune(spec: GraphSpec, plan: NodePlan, parent_folder: Path, folder: Path) -> dict[str, Any]:
    from transformers import AutoModel

    from .text import LORA_TARGETS, TASKS, majority_rate

    started = time.perf_counter()
    encoder = AutoModel.from_pretrained(parent_folder, dtype=torch.float32)
    parent_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    if spec.freeze_embeddings:
        encoder.embeddings.requires_grad_(False)
    if plan.lora_rank is None:
        accuracy = _train_text(encoder, plan, plan.steps or spec.steps)
    else:
        from peft import LoraConfig, get_peft_model

        # peft wraps the encoder; the task head stays outside and trains in full.
        config = LoraConfig(r=plan.lora_rank, lora_alpha=plan.lora_rank, target_modules=LORA_TARGETS)
        wrapped = get_peft_model(encoder, config)
        accuracy = _train_text(wrapped, plan, plan.steps or spec.steps)
        if plan.save == "adapter":
            # What a user publishes: the adapter alone, naming its base by the folder it was loaded from.
            wrapped.save_pretrained(str(folder))
        encoder = wrapped.merge_and_unload()
    change = relative_change(encoder.state_dict(), parent_state)
    if plan.save in ("bf16", "fp16"):
        encoder = encoder.to(torch.bfloat16 if plan.save == "bf16" else torch.float16)
    if plan.save != "adapter":
        encoder.save_pretrained(folder, max_shard_size="20MB" if plan.save == "sharded" else "5GB")
    task = plan.task or ""
    majority = {"majority": majority_rate(TASKS[task])} if task in TASKS else {}
    return {
        "accuracy": accuracy,
        **majority,
        "relative_change_from_parent": change,
        "seconds": time.perf_counter() - started,
    }


def _train_text(encoder: Any, plan: NodePlan, steps: int) -> float:
    from .text import CONTINUED_PRETRAINING, continue_pretraining, fine_tune

    lr, seed = plan.lr or 0.0, plan.seed
    decay = {} if plan.weight_decay is None else {"weight_decay": plan.weight_decay}
    if plan.task == CONTINUED_PRETRAINING:
        return continue_pretraining(encoder, _tokenizer(), lr=lr, seed=seed, steps=steps, **decay)
    return fine_tune(encoder, _tokenizer(), plan.task or "", lr=lr, seed=seed, steps=steps, **decay)
