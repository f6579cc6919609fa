"""The demo Model Graph: ImageNet MobileNetV2, really fine-tuned into a known tree of ten models.

The root is torchvision's ImageNet MobileNetV2, written exactly as loaded. Three children are full fine-tunes
of it on three different procedural tasks; each child has two children of its own, fine-tuned from it on
yet other tasks, with different seeds and learning rates. Every model is saved the way users save models
(some as ``pytorch_model.bin``, some as ``model.safetensors``), one folder per model, and ``truth.json``
records the edges and how each model was trained, so recovery can be scored against the truth.

Model ids are the task names: they say what a model does, never who its parent is, so nothing but the
weights gives the tree away (not even sorting the ids).

Builds are cached and resumable. Each weights file is written under a temporary name in its own folder and
renamed into place, and a hidden state file (``.build-state.json``) records, per model, a fingerprint of
everything that determines its weights (including its parent's fingerprint). A model whose file is on disk
with a matching fingerprint is loaded instead of trained; only missing or outdated models (and their
descendants) are trained again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import torch

from mothertree._progress import progress
from mothertree.errors import InvalidParameterError
from mothertree.zoo.mobilenet import MobileNetV2, load_imagenet_mobilenet_v2
from mothertree.zoo.tasks import get_task
from mothertree.zoo.train import fine_tune

__all__ = [
    "DEFAULT_TREE",
    "ROOT_ID",
    "DemoBuild",
    "DemoConfig",
    "ModelSpec",
    "build_demo",
    "build_demo_graph",
    "default_demo_dir",
    "load_state_dict",
    "relative_change",
]

logger = logging.getLogger(__name__)

ROOT_ID = "mobilenetv2-imagenet"
TRUTH_FILE = "truth.json"
STATE_FILE = ".build-state.json"
# Bump when a change to the code changes what a given config produces; old caches are then rebuilt.
_BUILD_VERSION = 1
_CACHE_SUBDIR = f"demo-v{_BUILD_VERSION}"

WeightsFormat = Literal["bin", "safetensors"]
_FILE_NAMES: dict[str, str] = {"bin": "pytorch_model.bin", "safetensors": "model.safetensors"}


@dataclass(frozen=True)
class ModelSpec:
    """One fine-tuned model of the graph: its id, what it learns, and which model it starts from."""

    id: str
    task: str
    parent: str


# Siblings always learn different tasks, and no task repeats, so every model can simply be named by its task.
DEFAULT_TREE: tuple[ModelSpec, ...] = (
    ModelSpec("counting", "counting", ROOT_ID),
    ModelSpec("orientation", "orientation", ROOT_ID),
    ModelSpec("texture", "texture", ROOT_ID),
    ModelSpec("colour", "colour", "counting"),
    ModelSpec("size", "size", "counting"),
    ModelSpec("location", "location", "orientation"),
    ModelSpec("frequency", "frequency", "orientation"),
    ModelSpec("shape", "shape", "texture"),
    ModelSpec("distance", "distance", "texture"),
)


@dataclass(frozen=True)
class DemoConfig:
    """How the demo graph is trained.

    The defaults were chosen by measurement on an otherwise idle 2-core CPU (about 0.08 s per step at
    48 px and batch 32): the whole first build took 205 s, and every model ended far above chance on its
    512 held-out samples (the weakest, counting at lr 1e-4, at 0.89 against a chance of 0.25). 48 px rather
    than 64 buys more steps in the same time, which helped accuracy more than resolution did.

    Attributes:
        steps: optimiser steps per fine-tuned model (each on ``batch_size`` fresh samples).
        batch_size: samples per step.
        image_size: side of the square training images, in pixels.
        lrs: learning rates, handed out in turn to the models in ``tree`` order, so siblings differ.
        seed: base seed; model ``i`` of ``tree`` trains with ``seed + i + 1``.
        eval_samples: held-out samples per model for the reported accuracy (at least 256).
        tree: the fine-tuned models, each after its parent (the root is always ImageNet MobileNetV2).
    """

    steps: int = 250
    batch_size: int = 32
    image_size: int = 48
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    seed: int = 0
    eval_samples: int = 512
    tree: tuple[ModelSpec, ...] = field(default=DEFAULT_TREE)

    @classmethod
    def tiny(cls, *, seed: int = 0) -> DemoConfig:
        """Four models (root -> 2 children -> 1 grandchild), small images, few steps: for tests.

        The root is still the real ImageNet MobileNetV2 and the training code path is the same.
        """
        return cls(
            steps=30,
            batch_size=16,
            image_size=32,
            lrs=(1e-3, 3e-4),
            seed=seed,
            eval_samples=256,
            tree=(
                ModelSpec("orientation", "orientation", ROOT_ID),
                ModelSpec("size", "size", ROOT_ID),
                ModelSpec("colour", "colour", "orientation"),
            ),
        )

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.image_size < 16 or self.eval_samples < 256:
            raise InvalidParameterError(
                "DemoConfig needs steps >= 1, batch_size >= 2, image_size >= 16 and eval_samples >= 256",
                hint=f"got steps={self.steps}, batch_size={self.batch_size}, image_size={self.image_size}, "
                f"eval_samples={self.eval_samples}",
            )
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise InvalidParameterError(f"DemoConfig.lrs must be positive, got {self.lrs}")
        known = {ROOT_ID}
        for spec in self.tree:
            get_task(spec.task)  # raises on an unknown task
            if spec.id in known:
                raise InvalidParameterError(f"model id {spec.id!r} appears twice in the demo tree")
            if spec.parent not in known:
                raise InvalidParameterError(
                    f"model {spec.id!r} comes before its parent {spec.parent!r} (or the parent is missing)",
                    hint="list every model after its parent in DemoConfig.tree",
                )
            if not spec.id or spec.id.startswith(".") or "/" in spec.id or os.sep in spec.id:
                raise InvalidParameterError(f"model id {spec.id!r} is not a plain folder name")
            known.add(spec.id)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Plan:
    """Everything that fixes one fine-tuned model's weights."""

    spec: ModelSpec
    lr: float
    seed: int
    format: WeightsFormat


def _plans(config: DemoConfig) -> list[_Plan]:
    # Alternate the formats so both readers see trained models (the root is a .bin, like torchvision's).
    formats: tuple[WeightsFormat, ...] = ("safetensors", "bin")
    return [
        _Plan(spec, config.lrs[i % len(config.lrs)], config.seed + i + 1, formats[i % 2])
        for i, spec in enumerate(config.tree)
    ]


@dataclass(frozen=True)
class DemoBuild:
    """The outcome of ``build_demo``.

    Attributes:
        path: the graph's folder (one sub-folder per model, plus ``truth.json``).
        trained: ids of the models trained by this call, in training order.
        reused: ids of the fine-tuned models found complete on disk and loaded instead.
        seconds: wall time of the call.
    """

    path: Path
    trained: tuple[str, ...]
    reused: tuple[str, ...]
    seconds: float


def cache_dir() -> Path:
    """``$MOTHERTREE_CACHE``, else ``$XDG_CACHE_HOME/mothertree``, else ``~/.cache/mothertree``."""
    if os.environ.get("MOTHERTREE_CACHE"):
        return Path(os.environ["MOTHERTREE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "mothertree"
    return Path.home() / ".cache" / "mothertree"


def default_demo_dir(config: DemoConfig | None = None) -> Path:
    """``cache_dir() / "demo-v1"``.

    A non-default config gets its own sibling folder, so it never overwrites the cached default graph.
    """
    cache = cache_dir()
    if config is None or config == DemoConfig():
        return cache / _CACHE_SUBDIR
    return cache / f"{_CACHE_SUBDIR}-{_fingerprint(config.to_json())[:10]}"


def _fingerprint(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _model_fingerprint(plan: _Plan, config: DemoConfig, parent_fingerprint: str) -> str:
    return _fingerprint(
        {
            "version": _BUILD_VERSION,
            "task": plan.spec.task,
            "lr": plan.lr,
            "seed": plan.seed,
            "format": plan.format,
            "steps": config.steps,
            "batch_size": config.batch_size,
            "image_size": config.image_size,
            "eval_samples": config.eval_samples,
            "parent": parent_fingerprint,
        }
    )


_ROOT_FINGERPRINT = _fingerprint({"version": _BUILD_VERSION, "root": "torchvision mobilenet_v2-b0353104"})


# --- files --------------------------------------------------------------------------------------------------


def _plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Contiguous, detached copies: safetensors refuses strided views, and a copy cannot alias the live model.
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, then rename onto ``path``: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_model(state: Mapping[str, torch.Tensor], folder: Path, fmt: WeightsFormat) -> Path:
    path = folder / _FILE_NAMES[fmt]
    if fmt == "safetensors":
        # Serialised here and written by us: save_file creates its file owner-only (0600), unlike torch.save.
        _atomic_write(path, lambda tmp: tmp.write_bytes(safetensors.torch.save(dict(state))))
    else:
        _atomic_write(path, lambda tmp: torch.save(dict(state), tmp))
    # A model saved in the other format by an earlier build would make the folder hold two checkpoints.
    for other, name in _FILE_NAMES.items():
        if other != fmt:
            (folder / name).unlink(missing_ok=True)
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or pickled ``.bin`` state dict (safely: tensors only)."""
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def _model_from_state(state: Mapping[str, torch.Tensor]) -> MobileNetV2:
    # The random initialisation is overwritten at once; it must not advance the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        model = MobileNetV2(num_classes=int(state["classifier.1.weight"].shape[0]))
    model.load_state_dict(state, strict=True)
    return model.eval()


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


# --- state --------------------------------------------------------------------------------------------------


def _read_state(out: Path) -> dict[str, Any]:
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("version") == _BUILD_VERSION else {}


def _write_json(path: Path, value: object) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n"))


def _is_complete(out: Path, config: DemoConfig) -> bool:
    """True when a previous build of exactly this config finished here (checked without loading weights)."""
    state = _read_state(out)
    if state.get("config") != _fingerprint(config.to_json()) or not (out / TRUTH_FILE).is_file():
        return False
    models = state.get("models", {})
    ids = [ROOT_ID, *(spec.id for spec in config.tree)]
    return all(i in models and (out / i / models[i]["file"]).is_file() for i in ids)


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
    # script calling build_demo_graph); an application that configured logging keeps full control.
    if not enabled or logger.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


# --- the build ----------------------------------------------------------------------------------------------


def build_demo(
    out_dir: Path | None = None,
    *,
    quiet: bool = False,
    force: bool = False,
    config: DemoConfig = DemoConfig(),  # noqa: B008 - frozen dataclass: the shared default cannot change
) -> DemoBuild:
    """Build (or finish, or just find) the demo graph and say what was trained; see ``build_demo_graph``."""
    config.validate()
    started = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else default_demo_dir(config)
    with _log_to_stderr(not quiet):
        if not force and _is_complete(out, config):
            if not quiet:
                logger.info("demo graph: already built at %s", out)
            return DemoBuild(out, (), tuple(spec.id for spec in config.tree), time.perf_counter() - started)
        with _locked(out):
            trained, reused = _build(out, config, quiet=quiet, force=force)
        seconds = time.perf_counter() - started
        if not quiet:
            logger.info(
                "demo graph: %d trained, %d reused in %.0fs: %s", len(trained), len(reused), seconds, out
            )
    return DemoBuild(out, tuple(trained), tuple(reused), seconds)


def build_demo_graph(
    out_dir: Path | None = None,
    *,
    quiet: bool = False,
    force: bool = False,
    config: DemoConfig = DemoConfig(),  # noqa: B008 - frozen dataclass: the shared default cannot change
) -> Path:
    """Fine-tune the demo Model Graph and return its folder.

    Args:
        out_dir: where to write it; default ``default_demo_dir(config)`` (the user's cache).
        quiet: no progress bars and no log lines.
        force: retrain every model even if a complete or partial build is already there.
        config: training settings and the tree; ``DemoConfig.tiny()`` for a quick test graph.

    Returns:
        The folder: ``<id>/pytorch_model.bin`` or ``<id>/model.safetensors`` per model, and ``truth.json``
        with ``edges`` (parent -> child) and, per model, its task, lr, seed, steps, held-out accuracy,
        final loss and relative weight change from its parent. A finished build is returned at once; an
        interrupted one resumes where it stopped.
    """
    return build_demo(out_dir, quiet=quiet, force=force, config=config).path


def _build(out: Path, config: DemoConfig, *, quiet: bool, force: bool) -> tuple[list[str], list[str]]:
    on_disk: dict[str, Any] = _read_state(out).get("models", {})
    previous = {} if force else on_disk
    # We hold the folder's lock, so any temporary file left here is from a build that was killed.
    for stale in [*out.glob(".*.tmp"), *out.glob("*/.*.tmp")]:
        stale.unlink(missing_ok=True)
    # "config" stays null until the very end, so an interrupted build is never taken for a complete one.
    state: dict[str, Any] = {"version": _BUILD_VERSION, "config": None, "models": {}}
    records: dict[str, dict[str, Any]] = {}
    trained: list[str] = []
    reused: list[str] = []

    root_state, root_record = _root(out, previous)
    weights: dict[str, dict[str, torch.Tensor]] = {ROOT_ID: root_state}
    fingerprints = {ROOT_ID: _ROOT_FINGERPRINT}
    state["models"][ROOT_ID] = {"fingerprint": _ROOT_FINGERPRINT, "file": root_record["file"]}
    records[ROOT_ID] = root_record
    _write_json(out / STATE_FILE, state)

    children_left = {ROOT_ID: 0, **{spec.id: 0 for spec in config.tree}}
    for spec in config.tree:
        children_left[spec.parent] += 1

    plans = _plans(config)
    for plan in progress(plans, desc="demo graph", total=len(plans), unit="model"):
        spec = plan.spec
        fingerprint = _model_fingerprint(plan, config, fingerprints[spec.parent])
        path = out / spec.id / _FILE_NAMES[plan.format]
        entry = previous.get(spec.id)
        found = _reuse(path, entry) if entry and entry.get("fingerprint") == fingerprint else None
        if found is not None:
            child, record = found
            reused.append(spec.id)
        else:
            child, record = _train(plan, config, weights[spec.parent], quiet=quiet)
            _save_model(child, path.parent, plan.format)
            trained.append(spec.id)
        record["relative_change_from_parent"] = relative_change(child, weights[spec.parent])
        record["file"] = path.name
        state["models"][spec.id] = {"fingerprint": fingerprint, "file": path.name, "record": record}
        _write_json(out / STATE_FILE, state)
        records[spec.id] = record
        fingerprints[spec.id] = fingerprint
        if not quiet:
            _log_model("reused" if found is not None else "trained", plan, record)
        # Hold on only to weights that a later model still starts from.
        weights[spec.id] = child
        children_left[spec.parent] -= 1
        for model_id in (spec.parent, spec.id):
            if children_left[model_id] == 0:
                weights.pop(model_id, None)

    _remove_dropped_models(out, on_disk, state["models"])
    truth = {
        "edges": [{"parent": spec.parent, "child": spec.id} for spec in config.tree],
        # Run times stay in the state file: the truth of a given config is the same on every machine.
        "models": {mid: {k: v for k, v in rec.items() if k != "seconds"} for mid, rec in records.items()},
    }
    _write_json(out / TRUTH_FILE, truth)
    state["config"] = _fingerprint(config.to_json())
    _write_json(out / STATE_FILE, state)
    return trained, reused


def _root(out: Path, previous: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """ImageNet MobileNetV2, written exactly as loaded (unless already there), and its truth record."""
    entry = previous.get(ROOT_ID)
    path = out / ROOT_ID / _FILE_NAMES["bin"]
    state = _plain_state_dict(load_imagenet_mobilenet_v2())
    if not (entry and entry.get("fingerprint") == _ROOT_FINGERPRINT and path.is_file()):
        _save_model(state, path.parent, "bin")
    record: dict[str, Any] = {
        "task": "imagenet-1k",
        "lr": None,
        "seed": None,
        "steps": 0,
        "accuracy": None,
        "chance": None,
        "final_loss": None,
        "relative_change_from_parent": None,
        "file": path.name,
    }
    return state, record


def _reuse(path: Path, entry: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The weights and record of a model a previous build finished, or None if they are not usable."""
    if not path.is_file() or not isinstance(entry.get("record"), dict):
        return None
    try:
        state = load_state_dict(path)
        _model_from_state(state)  # the file must hold this architecture, whole
    except Exception as exc:  # an unreadable or foreign file is simply trained again
        logger.warning("cannot reuse %s (%s); training it again", path, exc)
        return None
    return state, dict(entry["record"])


def _train(
    plan: _Plan, config: DemoConfig, parent: Mapping[str, torch.Tensor], *, quiet: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    model = _model_from_state(parent)
    result = fine_tune(
        model,
        get_task(plan.spec.task),
        steps=config.steps,
        lr=plan.lr,
        batch_size=config.batch_size,
        seed=plan.seed,
        image_size=config.image_size,
        eval_samples=config.eval_samples,
        progress=not quiet,
        desc=plan.spec.id,
    )
    record: dict[str, Any] = {
        "task": plan.spec.task,
        "lr": plan.lr,
        "seed": plan.seed,
        "steps": result.steps,
        "accuracy": result.accuracy,
        "chance": result.chance,
        "final_loss": result.final_loss,
        "initial_loss": result.initial_loss,
        "eval_samples": result.eval_samples,
        "batch_size": config.batch_size,
        "image_size": config.image_size,
        "seconds": result.seconds,
    }
    return _plain_state_dict(model), record


def _log_model(verb: str, plan: _Plan, record: Mapping[str, Any]) -> None:
    logger.info(
        "%-7s %-12s <- %-20s lr=%-6g accuracy %.3f (chance %.2f)  loss %.3f  change from parent %.4f%s",
        verb,
        plan.spec.id,
        plan.spec.parent,
        plan.lr,
        record["accuracy"],
        record["chance"],
        record["final_loss"],
        record["relative_change_from_parent"],
        f"  {record['seconds']:.1f}s" if verb == "trained" else "",
    )


def _remove_dropped_models(out: Path, previous: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    # A model of an earlier config that this config no longer has would otherwise pose as part of the graph.
    # Only files this module wrote are removed, and the folder only if that leaves it empty.
    for model_id, entry in previous.items():
        if model_id in current or not isinstance(entry, dict):
            continue
        folder = out / model_id
        (folder / str(entry.get("file", ""))).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
