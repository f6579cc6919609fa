"""The shapes zoo: Model Graphs that are not fans, where direction is hard.

Real collections hold checkpoint trajectories, deep lineages and trees that mix continued pre-training with
fine-tuning, saved at several precisions. Each shape here is one small tree (7-9 models), in both families,
built by ``build_graph`` like every other spec:

- ``chain``: successive stages of one recipe (continued masked-token training for text, successive task
  fine-tunes for vision), with fine-tunes branching off two of the stages;
- ``deep``: an unbalanced lineage five fine-tunes deep with side branches;
- ``mixed``: continued pre-training, then full fine-tunes and LoRA fine-tunes (text), or fine-tunes at
  mixed learning rates and weight decays (vision);
- ``fp16``: a fan whose fine-tunes are saved in half precision (fp16, bf16), so that rounding moves the
  statistics the direction cues read;
- ``brief-root``: a fan under a root pre-trained only 150 steps from a random initialisation.

Recipes differ in what moves the weight norm and kurtosis: weight decay (0, AdamW's 0.01, 0.1), learning
rate and objective. ``TUNING`` holds the graphs the direction rules were developed on; ``HELDOUT`` holds
recipes they were never tuned on (no weight decay, strong weight decay, successive classification
fine-tunes, other branch points). Ids are opaque (a shuffled numbering per graph).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .spec import Family, GraphSpec, NodePlan

__all__ = ["FRESH", "HELDOUT", "RECIPES", "SHAPES", "TUNING", "shape_specs"]

_VISION_TASKS = ("counting", "location", "orientation", "texture", "frequency", "colour", "distance", "shape")
_TEXT_TASKS = ("verb-positive", "has-number", "colour", "person", "place-time", "water", "plural", "city")


@dataclass(frozen=True)
class _Node:
    """A model of a shape before ids are drawn: its parent's position in the list, and its recipe."""

    parent: int | None
    task: str = ""
    lr: float = 0.0
    weight_decay: float | None = None
    lora_rank: int | None = None
    save: str = ""


def _spec(name: str, family: Family, root: str, nodes: Sequence[_Node], **fields: object) -> GraphSpec:
    """A spec from positional nodes (node 0 is the root), with opaque ids drawn from ``name``."""
    order = list(range(len(nodes)))
    random.Random(name).shuffle(order)
    prefix = "v" if family == "vision" else "t"
    ids = [f"{prefix}{k}" for k in order]
    plans = [NodePlan(ids[0], root=root)]
    for position, node in enumerate(nodes[1:], start=1):
        assert node.parent is not None and node.parent < position
        plans.append(
            NodePlan(
                ids[position],
                ids[node.parent],
                task=node.task,
                lr=node.lr,
                seed=1000 + position,
                lora_rank=node.lora_rank,
                save=node.save,
                weight_decay=node.weight_decay,
            )
        )
    defaults: dict[str, object] = (
        {"steps": 120, "batch_size": 32, "image_size": 32, "eval_samples": 256}
        if family == "vision"
        else {"steps": 120, "layers": 2}
    )
    return GraphSpec(name=name, family=family, nodes=tuple(plans), **{**defaults, **fields})  # type: ignore[arg-type]


def _chain(
    stages: int,
    stage: tuple[str, float, float | None],
    branches: Sequence[tuple[int, str, float]],
    *,
    stage_tasks: Sequence[str] = (),
) -> list[_Node]:
    """Root -> ``stages`` successive stages, plus a fine-tune branching off each stage named in ``branches``.

    ``stage`` is (task, lr, weight decay); ``stage_tasks``, when given, varies the task per stage (a vision
    chain learns one task after another). ``branches`` are (stage number, task, lr).
    """
    task, lr, decay = stage
    nodes = [_Node(None)]
    for k in range(stages):
        nodes.append(_Node(k, stage_tasks[k] if stage_tasks else task, lr, decay))
    for at, branch_task, branch_lr in branches:
        nodes.append(_Node(at, branch_task, branch_lr))
    return nodes


def _deep(tasks: Sequence[str], lrs: Sequence[float], decay: float | None = None) -> list[_Node]:
    """Root -> a -> b -> c -> d -> e, with side fine-tunes off the root, b and d (9 models)."""
    parents = [0, 1, 2, 3, 4, 0, 2, 4]
    return [_Node(None)] + [
        _Node(p, tasks[i % len(tasks)], lrs[i % len(lrs)], decay) for i, p in enumerate(parents)
    ]


def _fan(
    tasks: Sequence[str], lrs: Sequence[float], saves: Sequence[str] = (), decay: float | None = None
) -> list[_Node]:
    """Root -> 3 children -> 1 grandchild each (7 models)."""
    parents = [0, 0, 0, 1, 2, 3]
    return [_Node(None)] + [
        _Node(p, tasks[i % len(tasks)], lrs[i % len(lrs)], decay, save=saves[i % len(saves)] if saves else "")
        for i, p in enumerate(parents)
    ]


def _text_mixed(decay: float | None, branch_at: tuple[int, int]) -> list[_Node]:
    """Root -> 2 stages of masked-token training -> full and LoRA fine-tunes (8 models)."""
    first, second = branch_at
    return [
        _Node(None),
        _Node(0, "mlm", 1e-4, decay),
        _Node(1, "mlm", 1e-4, decay),
        _Node(first, "colour", 5e-5),
        _Node(second, "person", 8e-5),
        _Node(2, "water", 5e-4, lora_rank=8),
        _Node(1, "plural", 5e-4, lora_rank=16),
        _Node(3, "city", 6e-5),
    ]


TUNING: tuple[GraphSpec, ...] = (
    _spec(
        "shape-text-chain",
        "text",
        "minilm@0",
        _chain(5, ("mlm", 1e-4, None), [(2, "colour", 5e-5), (4, "person", 8e-5)]),
    ),
    _spec(
        "shape-text-chain-wd",
        "text",
        "minilm@2",
        _chain(5, ("mlm", 1e-4, 0.1), [(1, "colour", 5e-5), (3, "water", 8e-5)]),
    ),
    _spec("shape-text-deep", "text", "minilm@2", _deep(_TEXT_TASKS, (5e-5, 8e-5, 3e-5))),
    _spec("shape-text-mixed", "text", "minilm@4", _text_mixed(None, (2, 1))),
    _spec(
        "shape-text-fp16",
        "text",
        "minilm@0",
        _fan(_TEXT_TASKS, (5e-5, 8e-5), saves=("fp16", "bf16", "fp16", "fp32", "fp16", "bf16")),
    ),
    _spec("shape-text-brief-root", "text", "scratch:7", _fan(_TEXT_TASKS, (1e-4, 5e-5)), pretrain_steps=150),
    _spec(
        "shape-vision-chain",
        "vision",
        "imagenet",
        _chain(
            5,
            ("", 3e-4, None),
            [(2, "size", 2e-4), (4, "texture", 5e-4)],
            stage_tasks=("counting", "location", "orientation", "frequency", "colour"),
        ),
    ),
    _spec(
        "shape-vision-chain-mixed-wd",
        "vision",
        "imagenet",
        _chain(
            5,
            ("", 3e-4, 0.1),
            [(1, "texture", 2e-4), (3, "shape", 5e-4)],
            stage_tasks=("colour", "counting", "distance", "location", "frequency"),
        ),
    ),
    _spec("shape-vision-deep", "vision", "imagenet", _deep(_VISION_TASKS, (2e-4, 5e-4, 1e-4))),
    _spec(
        "shape-vision-fp16",
        "vision",
        "imagenet",
        _fan(_VISION_TASKS, (2e-4, 5e-4), saves=("fp16", "safetensors", "fp16", "fp16", "bin", "fp16")),
    ),
    _spec(
        "shape-vision-brief-root",
        "vision",
        "scratch:7",
        _fan(_VISION_TASKS, (5e-4, 1e-3)),
        pretrain_steps=150,
    ),
)

HELDOUT: tuple[GraphSpec, ...] = (
    _spec(
        "shape-text-chain-nowd",
        "text",
        "minilm@2",
        _chain(5, ("mlm", 2e-4, 0.0), [(1, "water", 5e-5), (3, "plural", 8e-5)]),
    ),
    _spec(
        "shape-text-chain-ft",
        "text",
        "minilm@4",
        _chain(
            5,
            ("", 8e-5, 0.1),
            [(2, "city", 5e-5), (3, "water", 5e-5)],
            stage_tasks=("verb-positive", "has-number", "colour", "person", "place-time"),
        ),
    ),
    _spec("shape-text-mixed-wd", "text", "minilm@0", _text_mixed(0.1, (1, 2))),
    _spec(
        "shape-vision-chain-nowd",
        "vision",
        "imagenet",
        _chain(
            5,
            ("", 5e-4, 0.0),
            [(1, "shape", 2e-4), (3, "distance", 5e-4)],
            stage_tasks=("texture", "shape", "counting", "location", "size"),
        ),
    ),
    _spec(
        "shape-vision-chain-wd",
        "vision",
        "imagenet",
        _chain(
            5,
            ("", 2e-4, 0.1),
            [(2, "colour", 2e-4), (3, "frequency", 5e-4)],
            stage_tasks=("orientation", "distance", "texture", "counting", "shape"),
        ),
    ),
    _spec(
        "shape-vision-deep-wd",
        "vision",
        "scratch:7",
        _deep(_VISION_TASKS[::-1], (5e-4, 1e-3), 0.1),
        pretrain_steps=150,
    ),
)

# Recipes built only after the direction rules were final (the skew cue included), measured once.
FRESH: tuple[GraphSpec, ...] = (
    _spec(
        "shape-text-chain-lowlr-wd",
        "text",
        "minilm@4",
        _chain(5, ("mlm", 5e-5, 0.05), [(2, "plural", 5e-5), (3, "city", 1e-4)]),
    ),
    _spec("shape-text-deep-wd", "text", "minilm@0", _deep(_TEXT_TASKS[::-1], (1e-4, 6e-5), 0.1)),
    _spec(
        "shape-vision-chain-hlr",
        "vision",
        "imagenet",
        _chain(
            5,
            ("", 1e-3, 0.05),
            [(2, "orientation", 1e-4), (4, "distance", 2e-4)],
            stage_tasks=("shape", "colour", "size", "texture", "counting"),
        ),
    ),
    _spec("shape-vision-deep-mixed-wd", "vision", "imagenet", _deep(_VISION_TASKS[2:], (1e-3, 2e-4), 0.05)),
    _spec(
        "shape-vision-fp16-wd",
        "vision",
        "imagenet",
        _fan(
            _VISION_TASKS[1:],
            (3e-4, 6e-4),
            saves=("fp16", "fp16", "safetensors", "fp16", "fp16", "bin"),
            decay=0.1,
        ),
    ),
)

SHAPES: dict[str, GraphSpec] = {spec.name: spec for spec in (*TUNING, *HELDOUT, *FRESH)}

# What each shape is, in a few words, for the tables of docs/RESULTS.md.
RECIPES: dict[str, str] = {
    "shape-text-chain": "5 masked-token stages (lr 1e-4, wd 0.01) + 2 task fine-tunes off stages 2, 4",
    "shape-text-chain-wd": "5 masked-token stages (wd 0.1) + 2 fine-tunes (wd 0.01) off stages 1, 3",
    "shape-vision-chain-mixed-wd": "5 successive task fine-tunes (wd 0.1) + 2 side fine-tunes (wd 0.01)",
    "shape-text-deep": "task fine-tunes 5 deep + 3 side branches (wd 0.01)",
    "shape-text-mixed": "2 masked-token stages, then full and LoRA fine-tunes",
    "shape-text-fp16": "fan, fine-tunes saved fp16 / bf16",
    "shape-text-brief-root": "fan under a root pre-trained 150 steps from random init",
    "shape-vision-chain": "5 successive task fine-tunes (wd 0.01) + 2 side fine-tunes",
    "shape-vision-deep": "task fine-tunes 5 deep + 3 side branches (wd 0.01)",
    "shape-vision-fp16": "fan, fine-tunes saved fp16",
    "shape-vision-brief-root": "fan under a root pre-trained 150 steps from random init",
    "shape-text-chain-nowd": "5 masked-token stages (lr 2e-4, no weight decay) + 2 fine-tunes off 1, 3",
    "shape-text-chain-ft": "5 successive task fine-tunes (wd 0.1) + 2 side fine-tunes",
    "shape-text-mixed-wd": "2 masked-token stages (wd 0.1), then full and LoRA fine-tunes",
    "shape-vision-chain-nowd": "5 successive task fine-tunes (lr 5e-4, no weight decay) + 2 side",
    "shape-vision-chain-wd": "5 successive task fine-tunes (wd 0.1) + 2 side fine-tunes",
    "shape-vision-deep-wd": "deep tree (wd 0.1) under a root pre-trained 150 steps",
    "shape-text-chain-lowlr-wd": "5 masked-token stages (lr 5e-5, wd 0.05) + 2 fine-tunes off 2, 3",
    "shape-text-deep-wd": "task fine-tunes 5 deep + 3 side branches (wd 0.1)",
    "shape-vision-chain-hlr": "5 successive task fine-tunes (lr 1e-3, wd 0.05) + 2 side (lr 1e-4, 2e-4)",
    "shape-vision-deep-mixed-wd": "task fine-tunes 5 deep + 3 side branches (wd 0.05, lr 1e-3 / 2e-4)",
    "shape-vision-fp16-wd": "fan (wd 0.1), fine-tunes saved fp16",
}


def shape_specs(split: str = "all") -> tuple[GraphSpec, ...]:
    """The shapes of a split: ``tuning``, ``heldout``, ``fresh`` or ``all``."""
    return {"tuning": TUNING, "heldout": HELDOUT, "fresh": FRESH, "all": (*TUNING, *HELDOUT, *FRESH)}[split]
