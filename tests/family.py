"""A tiny real Model Tree for tests: a small BERT really trained, then fine-tuned, saved by transformers.

The "pre-trained" root is a 2-layer BERT (hidden 32) trained from a seeded initialisation on a rule-based
token task; each child starts from its parent's weights and is trained on another rule with its own seed
and learning rate, and saved with ``save_pretrained`` exactly as users save models. Nothing about the
weights (kurtosis included) is set by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

VOCAB = 64
SEQ = 12

# Rules over random token sequences; labels are binary.
RULES = {
    "pretrain": lambda x: (x[:, 0] > x[:, -1]).long(),
    "has-small": lambda x: (x < 8).any(dim=1).long(),
    "sum-even": lambda x: (x.sum(dim=1) % 2).long(),
    "first-half": lambda x: (x[:, 1] < VOCAB // 2).long(),
    "sorted-pair": lambda x: (x[:, 2] < x[:, 3]).long(),
}


@dataclass(frozen=True)
class Node:
    id: str
    parent: str | None
    rule: str
    lr: float
    seed: int
    steps: int


TREE = (
    Node("root", None, "pretrain", 1e-3, 0, 60),
    Node("ft-small", "root", "has-small", 3e-4, 1, 40),
    Node("ft-even", "root", "sum-even", 5e-4, 2, 40),
    Node("ft-small-half", "ft-small", "first-half", 3e-4, 3, 40),
    Node("ft-even-pair", "ft-even", "sorted-pair", 4e-4, 4, 40),
)


def _config() -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=SEQ,
        num_labels=2,
    )


def _train(model: BertForSequenceClassification, node: Node) -> float:
    generator = torch.Generator().manual_seed(node.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=node.lr)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(node.steps):
        tokens = torch.randint(0, VOCAB, (32, SEQ), generator=generator)
        loss = model(input_ids=tokens, labels=RULES[node.rule](tokens)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def build_family(out: Path) -> Path:
    """Train and save every node of ``TREE`` under ``out``; write ``truth.json``; return ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for node in TREE:
        torch.manual_seed(node.seed)
        if node.parent is None:
            model = BertForSequenceClassification(_config())
        else:
            model = BertForSequenceClassification.from_pretrained(out / node.parent)
        _train(model, node)
        model.save_pretrained(out / node.id)
    edges = [{"parent": n.parent, "child": n.id} for n in TREE if n.parent]
    (out / "truth.json").write_text(json.dumps({"edges": edges}, indent=2))
    return out
