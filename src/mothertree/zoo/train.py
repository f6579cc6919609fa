"""Full fine-tuning of a MobileNetV2 on a procedural task, on CPU, reproducibly from a seed.

The optimiser is AdamW with a short linear warm-up and a cosine decay. Adam's per-parameter step sizes let a
single learning rate serve both the freshly initialised head and the pretrained backbone, and keep training
stable across the whole demo grid (1e-4 to 1e-3) without per-task tuning; SGD with momentum would need a
larger, task-dependent learning rate for the new head and is more sensitive to the few hundred steps the
demo can afford. Weight decay applies to matrices and convolution kernels only, as is usual, so BatchNorm
scales and biases are not pulled towards zero.

Every source of randomness (head initialisation, dropout, training batches, held-out batch) is derived from
``seed``; with the same number of threads two runs give bit-identical weights.

Speed: inputs and weights are channels_last, which on CPU roughly halves a step (oneDNN's convolutions),
and torch keeps its default thread count. Measured on 2 cores at 48 px, batch 32: 0.07 s per step when the
machine is otherwise idle. When other processes compete for the cores, libgomp's spin-waiting makes
multi-threaded steps pathologically slow (9 s per step measured with two other busy processes, against
0.10 s with one thread); ``OMP_WAIT_POLICY=PASSIVE`` in the environment before torch is imported avoids
that, at some cost when the machine is idle.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mothertree._progress import progress as progress_bar
from mothertree.zoo.mobilenet import IMAGENET_MEAN, IMAGENET_STD, MobileNetV2, replace_head
from mothertree.zoo.tasks import Task

__all__ = ["TrainResult", "evaluate", "fine_tune"]

# Offsets that split one user seed into independent streams; changing them changes every demo model.
_EVAL_STREAM = 0x5EED_E7A1
_HEAD_STREAM = 0x4EAD
_WARMUP_FRACTION = 0.06
DEFAULT_WEIGHT_DECAY = 0.01
# Averaging the training loss over a window makes "final loss" a property of the model, not of one batch.
_LOSS_WINDOW = 20


@dataclass(frozen=True)
class TrainResult:
    """What one fine-tuning run achieved.

    Attributes:
        final_loss: mean training loss over the last steps (up to 20).
        initial_loss: mean training loss over the first steps (up to 20), for comparison.
        accuracy: accuracy on a held-out batch of fresh samples never used for training (eval mode).
        chance: chance accuracy of the task, ``1 / n_classes``.
        eval_samples: size of the held-out batch.
        steps: optimiser steps taken.
        seconds: wall time of training plus evaluation.
    """

    final_loss: float
    initial_loss: float
    accuracy: float
    chance: float
    eval_samples: int
    steps: int
    seconds: float


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed the global RNG (dropout draws from it) and force deterministic kernels; restore both after."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def _set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    # Module.to(memory_format=...) is documented, but torch's type stubs leave that overload out.
    model.to(memory_format=memory_format)  # type: ignore[call-overload]


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    # channels_last: on CPU the oneDNN convolutions (and above all their backward) are about twice as fast.
    return ((images - mean) / std).contiguous(memory_format=torch.channels_last)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_factor(step: int, steps: int) -> float:
    warmup = max(1, round(_WARMUP_FRACTION * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate(
    model: nn.Module, task: Task, *, samples: int, seed: int, image_size: int, batch_size: int = 256
) -> float:
    """Accuracy of ``model`` (in eval mode) on ``samples`` fresh samples of ``task`` drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, samples, batch_size):
                images, labels = task.sample(min(batch_size, samples - start), generator, size=image_size)
                correct += int((model(_normalise(images)).argmax(dim=1) == labels).sum())
    finally:
        model.train(was_training)
    return correct / samples


def fine_tune(
    model: MobileNetV2,
    task: Task,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    image_size: int,
    eval_samples: int = 512,
    new_head: bool = True,
    progress: bool = False,
    desc: str | None = None,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
) -> TrainResult:
    """Fine-tune every parameter of ``model`` on ``task`` (in place) and report how well it learnt.

    Args:
        model: the network to train; it is left in eval mode, with ordinary (contiguous) tensors.
        task: what to learn; a fresh ``task.n_classes``-way head replaces the old one when ``new_head`` is
            true or the class counts differ (a head trained for another task means nothing here).
        steps: optimiser steps, each on ``batch_size`` freshly generated samples (no sample is seen twice).
        lr: AdamW's peak learning rate.
        seed: fixes the head, dropout, training data and held-out data.
        image_size: side of the square images, in pixels.
        eval_samples: held-out samples to measure accuracy on (at least 256).
        progress: draw a progress bar (only ever on a terminal, see ``mothertree._progress``).
        desc: the progress bar's label.
    """
    if steps < 1 or batch_size < 2 or lr <= 0:
        raise ValueError(f"need steps >= 1, batch_size >= 2 and lr > 0; got {steps}, {batch_size}, {lr}")
    if eval_samples < 256:
        raise ValueError(f"eval_samples must be >= 256 for a meaningful accuracy, got {eval_samples}")
    started = time.perf_counter()
    losses: list[float] = []
    with _deterministic(seed):
        if new_head or model.num_classes != task.n_classes:
            replace_head(model, task.n_classes, generator=torch.Generator().manual_seed(seed ^ _HEAD_STREAM))
        _set_memory_format(model, torch.channels_last)
        model.train()  # BatchNorm too: its statistics adapt to the new images, as in any full fine-tune
        optimiser = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: _lr_factor(step, steps))
        data = torch.Generator().manual_seed(seed)
        steps_iter = range(steps)
        if progress:
            steps_iter = progress_bar(steps_iter, desc=desc or task.name, total=steps, unit="step")  # type: ignore[assignment]
        for _ in steps_iter:
            images, labels = task.sample(batch_size, data, size=image_size)
            loss = nn.functional.cross_entropy(model(_normalise(images)), labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        eval_seed = seed ^ _EVAL_STREAM
        accuracy = evaluate(model, task, samples=eval_samples, seed=eval_seed, image_size=image_size)
        # Back to the ordinary layout: a saved state_dict must not carry channels_last strides to readers.
        _set_memory_format(model, torch.contiguous_format)
        model.eval()
    window = min(_LOSS_WINDOW, len(losses))
    return TrainResult(
        final_loss=sum(losses[-window:]) / window,
        initial_loss=sum(losses[:window]) / window,
        accuracy=accuracy,
        chance=task.chance,
        eval_samples=eval_samples,
        steps=steps,
        seconds=time.perf_counter() - started,
    )
