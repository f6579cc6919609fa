"""Small real Model Trees for tests: all-MiniLM-L6-v2 cut to 2 layers, really fine-tuned.

Each family is a ``GraphSpec`` listing its models, built by the zoo's one builder. The root keeps two
encoder layers of the real pre-trained MiniLM; each other model starts from its parent and is trained
(embeddings frozen, to fit CI time) on its own rule-based sentence task with its own seed and learning
rate, then saved with ``save_pretrained``. Nothing about the weights, kurtosis included, is set by hand.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mothertree.zoo.build import build_graph
from mothertree.zoo.spec import GraphSpec, NodePlan
from mothertree.zoo.text import CONTINUED_PRETRAINING

TREE = (
    NodePlan("root", root="minilm@0"),
    NodePlan("ft-colour", "root", task="colour", lr=1e-4, seed=1),
    NodePlan("ft-number", "root", task="has-number", lr=1e-4, seed=2),
    NodePlan("ft-colour-person", "ft-colour", task="person", lr=1e-4, seed=3),
    NodePlan("ft-number-water", "ft-number", task="water", lr=1e-4, seed=4),
)


def family_spec(*, first_layer: int = 0, prefix: str = "") -> GraphSpec:
    """``TREE`` with its root cut from layers ``first_layer`` and ``first_layer + 1``, ``prefix`` before ids.

    Families cut from different layers have unrelated roots; their fine-tunes get other seeds too.
    """
    nodes = tuple(
        replace(
            n,
            id=prefix + n.id,
            parent=prefix + n.parent if n.parent else None,
            root=f"minilm@{first_layer}" if n.root else None,
            seed=n.seed + first_layer if n.parent else 0,
        )
        for n in TREE
    )
    return GraphSpec(name=f"{prefix}family", family="text", layers=2, steps=20, nodes=nodes)


FAMILY = family_spec()
SECOND_FAMILY = family_spec(first_layer=2, prefix="b-")

# Continued pre-training: a chain of masked-token training stages, each continuing from the previous one
# (the paper's Stable Diffusion v1.x case, where the kurtosis trend reverses). Opaque ids, root not first.
CHAIN = GraphSpec(
    name="chain",
    family="text",
    layers=2,
    steps=30,
    nodes=(
        NodePlan("s3", root="minilm@0"),
        NodePlan("s1", "s3", task=CONTINUED_PRETRAINING, lr=1e-4, seed=1),
        NodePlan("s4", "s1", task=CONTINUED_PRETRAINING, lr=1e-4, seed=2),
        NodePlan("s0", "s4", task=CONTINUED_PRETRAINING, lr=1e-4, seed=3),
        NodePlan("s2", "s0", task=CONTINUED_PRETRAINING, lr=1e-4, seed=4),
    ),
)

# LoRA fine-tunes (alpha = rank) of the attention matrices, merged into full checkpoints before saving.
LORA_TREE = (
    NodePlan("l3", root="minilm@0"),
    NodePlan("l1", "l3", task="colour", lr=1e-3, seed=1, lora_rank=8),
    NodePlan("l4", "l3", task="has-number", lr=1e-3, seed=2, lora_rank=16),
    NodePlan("l0", "l1", task="person", lr=1e-3, seed=3, lora_rank=4),
    NodePlan("l2", "l4", task="water", lr=1e-3, seed=4, lora_rank=8),
)
LORA_FAMILY = GraphSpec(name="lora-family", family="text", layers=2, steps=30, nodes=LORA_TREE)

# Full and LoRA fine-tunes in one tree; two LoRA leaves are published as PEFT adapters, not merged.
MIXED_TREE = (
    NodePlan("x2", root="minilm@0"),
    NodePlan("x0", "x2", task="colour", lr=1e-4, seed=1),
    NodePlan("x4", "x2", task="has-number", lr=1e-3, seed=2, lora_rank=8),
    NodePlan("x3", "x0", task="person", lr=1e-3, seed=3, lora_rank=4, save="adapter"),
    NodePlan("x1", "x4", task="water", lr=1e-3, seed=4, lora_rank=8, save="adapter"),
)
MIXED_FAMILY = GraphSpec(name="mixed-family", family="text", layers=2, steps=30, nodes=MIXED_TREE)


def linked(family: Path, target: Path, names: list[str]) -> Path:
    """``target`` holding the models ``names`` of a built ``family``, hard-linked (no copying)."""
    import os
    import shutil

    for name in names:
        shutil.copytree(family / name, target / name, copy_function=os.link)
    return target


def build(spec: GraphSpec, out: Path) -> Path:
    """Train and save every model of ``spec`` under ``out`` with a ``truth.json``; return ``out``."""
    return build_graph(spec, out, quiet=True).path
