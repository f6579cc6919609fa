"""A small real Model Tree for tests: all-MiniLM-L6-v2 cut to 2 layers, really fine-tuned.

The root keeps the first two encoder layers of the real pre-trained MiniLM; each other model starts from
its parent and is trained (embeddings frozen, to fit CI time) on its own rule-based sentence task with its
own seed and learning rate, then saved with ``save_pretrained``. Nothing about the weights, kurtosis
included, is set by hand.
"""

from __future__ import annotations

from pathlib import Path

from mothertree.zoo.text import CONTINUED_PRETRAINING, Node, build_text_graph

TREE = (
    Node("root", None, "", 0.0, 0),
    Node("ft-colour", "root", "colour", 1e-4, 1),
    Node("ft-number", "root", "has-number", 1e-4, 2),
    Node("ft-colour-person", "ft-colour", "person", 1e-4, 3),
    Node("ft-number-water", "ft-number", "water", 1e-4, 4),
)


def build_family(out: Path, *, first_layer: int = 0, prefix: str = "") -> Path:
    """Train and save every node of ``TREE`` under ``out`` with a ``truth.json``; return ``out``.

    ``first_layer`` picks which two pre-trained layers the root keeps: families cut from different layers
    have unrelated roots. ``prefix`` is put before every id.
    """
    nodes = [
        Node(prefix + n.id, prefix + n.parent if n.parent else None, n.task, n.lr, n.seed + first_layer)
        for n in TREE
    ]
    return build_text_graph(
        out, nodes, steps=20, n_layers=2, first_layer=first_layer, freeze_embeddings=True, quiet=True
    )


# Continued pre-training: a chain of masked-token training stages, each continuing from the previous one
# (the paper's Stable Diffusion v1.x case, where the kurtosis trend reverses). Opaque ids, root not first.
CHAIN = (
    Node("s3", None, "", 0.0, 0),
    Node("s1", "s3", CONTINUED_PRETRAINING, 1e-4, 1),
    Node("s4", "s1", CONTINUED_PRETRAINING, 1e-4, 2),
    Node("s0", "s4", CONTINUED_PRETRAINING, 1e-4, 3),
    Node("s2", "s0", CONTINUED_PRETRAINING, 1e-4, 4),
)


def build_chain(out: Path) -> Path:
    """Train and save the continued-pre-training chain ``CHAIN`` under ``out``; return ``out``."""
    return build_text_graph(out, CHAIN, steps=30, n_layers=2, freeze_embeddings=True, quiet=True)


# LoRA fine-tunes (alpha = rank) of the attention matrices, merged into full checkpoints before saving.
LORA_TREE = (
    Node("l3", None, "", 0.0, 0),
    Node("l1", "l3", "colour", 1e-3, 1, lora_rank=8),
    Node("l4", "l3", "has-number", 1e-3, 2, lora_rank=16),
    Node("l0", "l1", "person", 1e-3, 3, lora_rank=4),
    Node("l2", "l4", "water", 1e-3, 4, lora_rank=8),
)


def build_lora_family(out: Path) -> Path:
    """Train and save ``LORA_TREE`` (merged LoRA fine-tunes of a 2-layer MiniLM) under ``out``."""
    return build_text_graph(out, LORA_TREE, steps=30, n_layers=2, freeze_embeddings=True, quiet=True)


# Full and LoRA fine-tunes in one tree; two LoRA leaves are published as PEFT adapters, not merged.
MIXED_TREE = (
    Node("x2", None, "", 0.0, 0),
    Node("x0", "x2", "colour", 1e-4, 1),
    Node("x4", "x2", "has-number", 1e-3, 2, lora_rank=8),
    Node("x3", "x0", "person", 1e-3, 3, save="adapter", lora_rank=4),
    Node("x1", "x4", "water", 1e-3, 4, save="adapter", lora_rank=8),
)


def build_mixed_family(out: Path) -> Path:
    """Train and save ``MIXED_TREE`` under ``out`` (adapters with ``save_pretrained`` of peft)."""
    return build_text_graph(out, MIXED_TREE, steps=30, n_layers=2, freeze_embeddings=True, quiet=True)
