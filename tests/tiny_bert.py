"""The tiny BERT that io and variant tests train for a few steps (real training, seconds on a CPU)."""

from __future__ import annotations

from typing import Any

# BertConfig arguments: 2 layers of width 32, a 100-token vocabulary.
TINY_BERT: dict[str, int] = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    vocab_size=100,
    max_position_embeddings=64,
    type_vocab_size=2,
)


def train_tiny(model: Any, *, seed: int = 1, steps: int = 5) -> None:
    """A toy objective: pull the pooled output towards a fixed vector; it moves every weight off init."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (4, 12), generator=generator)
    target = torch.randn(4, model.config.hidden_size, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(input_ids=ids).pooler_output, target).backward()
        optimizer.step()
    model.eval()


def save_tiny_tree(folder: Any, n_children: int) -> Any:
    """A tiny BERT root (trained 5 steps) and ``n_children`` fine-tunes of it (3 steps each, seeds 1..n),
    saved with ``save_pretrained`` as ``folder/root`` and ``folder/ft-<k>``; returns the root model."""
    import copy

    import torch
    import transformers

    torch.manual_seed(0)
    root = transformers.BertModel(transformers.BertConfig(**TINY_BERT))
    train_tiny(root, seed=0, steps=5)
    root.save_pretrained(folder / "root")
    for k in range(1, n_children + 1):
        child = copy.deepcopy(root)
        train_tiny(child, seed=k, steps=3)
        child.save_pretrained(folder / f"ft-{k}")
    return root
