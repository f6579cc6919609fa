"""Small image classification tasks drawn procedurally, in torch, so the demo needs no data set on disk.

Each task is an analogue of a VTAB-style task (CLEVR counting and distance, dSprites location and orientation,
DTD textures, ...) reduced to a few classes that MobileNetV2 learns at 48-64 px in a few hundred steps. They
differ from each other on purpose: a Model Tree recovered from weights should not hinge on every model having
learnt the same thing.

Everything is drawn from the caller's ``torch.Generator``, so a (task, seed) pair fixes every image and label.
Shapes are rendered with anti-aliased edges in continuous coordinates (the unit square), so a task means the
same at every image size. Images are float32 RGB in [0, 1], shape ``(n, 3, size, size)``; labels are int64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["TASKS", "Task", "get_task", "mixture_task", "task_names"]

Renderer = Callable[[torch.Tensor, torch.Generator, int], torch.Tensor]


@dataclass(frozen=True)
class Task:
    """A classification task: ``sample`` draws balanced, freshly generated ``(images, labels)``.

    Attributes:
        name: short identifier (``counting``, ``orientation``, ...).
        n_classes: number of labels; chance accuracy is ``1 / n_classes``.
        description: one line saying what the label means.
    """

    name: str
    n_classes: int
    description: str
    _render: Renderer = field(repr=False, compare=False)

    @property
    def chance(self) -> float:
        return 1.0 / self.n_classes

    def sample(
        self, n: int, generator: torch.Generator, *, size: int = 64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images of ``size`` x ``size`` pixels and their labels, uniform over the classes."""
        if n < 1 or size < 8:
            raise ValueError(f"need n >= 1 and size >= 8, got n={n}, size={size}")
        labels = torch.randint(0, self.n_classes, (n,), generator=generator)
        images = self._render(labels, generator, size)
        return images.clamp_(0.0, 1.0), labels


# --- drawing primitives -------------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Pixel centres in the unit square, shaped to broadcast against per-image parameters of shape (n, 1, 1).
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return coords.view(1, size, 1), coords.view(1, 1, size)


def _background(n: int, generator: torch.Generator, size: int) -> torch.Tensor:
    # A random dim colour plus pixel noise: the label must never be readable from the background alone.
    base = _uniform(generator, n, 3, 1, 1, high=0.35)
    noise = 0.04 * torch.randn(n, 3, size, size, generator=generator)
    return base + noise


def _bright_colours(generator: torch.Generator, *shape: int) -> torch.Tensor:
    # Bright enough to stand out from any background that _background draws.
    return _uniform(generator, *shape, 3, low=0.45, high=1.0)


def _coverage(signed_distance: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] from a signed distance (negative inside) in unit-square units."""
    return (0.5 - signed_distance * size).clamp(0.0, 1.0)


def _paint(images: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Composite ``colour`` (n, 3) over ``images`` (n, 3, H, W) with coverage ``alpha`` (n, H, W)."""
    a = alpha.unsqueeze(1)
    return images * (1.0 - a) + colour.view(-1, 3, 1, 1) * a


def _disc_sdf(size: int, cy: torch.Tensor, cx: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    ys, xs = _grid(size)
    dy, dx = ys - cy.view(-1, 1, 1), xs - cx.view(-1, 1, 1)
    return torch.sqrt(dy * dy + dx * dx) - radius.view(-1, 1, 1)


def _polygon_sdf(
    size: int, cy: torch.Tensor, cx: torch.Tensor, radius: torch.Tensor, sides: int, angle: torch.Tensor
) -> torch.Tensor:
    """(Approximate) signed distance to a regular polygon with circumradius ``radius``, rotated by ``angle``.

    A point is inside when its projection on every edge normal is below the apothem; the largest excess is a
    distance that is exact near the edges, which is all anti-aliasing needs.
    """
    ys, xs = _grid(size)
    dy, dx = (ys - cy.view(-1, 1, 1)).unsqueeze(1), (xs - cx.view(-1, 1, 1)).unsqueeze(1)
    k = torch.arange(sides, dtype=torch.float32)
    normals = angle.view(-1, 1) + (2 * k + 1) * math.pi / sides  # (n, sides)
    ny, nx = torch.sin(normals).view(-1, sides, 1, 1), torch.cos(normals).view(-1, sides, 1, 1)
    apothem = (radius * math.cos(math.pi / sides)).view(-1, 1, 1)
    projection = (dy * ny + dx * nx).amax(dim=1)
    return projection - apothem


def _bar_sdf(
    size: int,
    cy: torch.Tensor,
    cx: torch.Tensor,
    length: torch.Tensor,
    width: torch.Tensor,
    angle: torch.Tensor,
) -> torch.Tensor:
    ys, xs = _grid(size)
    dy, dx = ys - cy.view(-1, 1, 1), xs - cx.view(-1, 1, 1)
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    along, across = dx * c + dy * s, -dx * s + dy * c
    return torch.maximum(along.abs() - length.view(-1, 1, 1) / 2, across.abs() - width.view(-1, 1, 1) / 2)


def _random_angle(generator: torch.Generator, n: int) -> torch.Tensor:
    return _uniform(generator, n, high=2 * math.pi)


# --- the tasks ----------------------------------------------------------------------------------------------

_MAX_COUNT = 4
_CELLS = 3  # objects sit in distinct cells of a 3x3 grid, so they never overlap and the count is unambiguous


def _render_counting(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    n = labels.shape[0]
    images = _background(n, generator, size)
    cells = torch.rand(n, _CELLS * _CELLS, generator=generator).argsort(dim=1)
    cell = 1.0 / _CELLS
    for slot in range(_MAX_COUNT):
        row, col = cells[:, slot] // _CELLS, cells[:, slot] % _CELLS
        radius = _uniform(generator, n, low=0.07, high=0.11)
        # Jitter inside the cell, keeping the whole disc in it.
        slack = cell / 2 - radius
        cy = (row + 0.5) * cell + slack * _uniform(generator, n, low=-1.0, high=1.0)
        cx = (col + 0.5) * cell + slack * _uniform(generator, n, low=-1.0, high=1.0)
        alpha = _coverage(_disc_sdf(size, cy, cx, radius), size)
        present = (slot < labels + 1).float().view(-1, 1, 1)  # label k means k + 1 objects
        images = _paint(images, alpha * present, _bright_colours(generator, n))
    return images


def _render_location(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    n = labels.shape[0]
    images = _background(n, generator, size)
    radius = _uniform(generator, n, low=0.07, high=0.12)
    # Quadrant 0..3 = (top-left, top-right, bottom-left, bottom-right); keep clear of the midlines.
    top, left = labels // 2, labels % 2
    cy = 0.5 * top + _uniform(generator, n, low=0.13, high=0.37)
    cx = 0.5 * left + _uniform(generator, n, low=0.13, high=0.37)
    square = torch.rand(n, generator=generator) < 0.5
    sdf = torch.where(
        square.view(-1, 1, 1),
        _polygon_sdf(size, cy, cx, radius * 1.2, 4, _random_angle(generator, n)),
        _disc_sdf(size, cy, cx, radius),
    )
    return _paint(images, _coverage(sdf, size), _bright_colours(generator, n))


_ORIENTATIONS = 4  # 0, 45, 90, 135 degrees


def _render_orientation(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    n = labels.shape[0]
    images = _background(n, generator, size)
    jitter = math.radians(10.0) * _uniform(generator, n, low=-1.0, high=1.0)
    angle = labels.float() * math.pi / _ORIENTATIONS + jitter
    cy, cx = _uniform(generator, n, low=0.35, high=0.65), _uniform(generator, n, low=0.35, high=0.65)
    length, width = _uniform(generator, n, low=0.45, high=0.65), _uniform(generator, n, low=0.08, high=0.13)
    alpha = _coverage(_bar_sdf(size, cy, cx, length, width, angle), size)
    return _paint(images, alpha, _bright_colours(generator, n))


def _two_tone(pattern: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Map a per-pixel pattern in [0, 1] (n, H, W) to a blend of two random colours per image."""
    n = pattern.shape[0]
    a, b = _uniform(generator, n, 3, high=0.4), _bright_colours(generator, n)
    p = pattern.unsqueeze(1)
    return a.view(-1, 3, 1, 1) * (1 - p) + b.view(-1, 3, 1, 1) * p


def _render_texture(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    # 0 stripes, 1 checkerboard, 2 dots, 3 concentric rings; each at a random scale, phase and rotation.
    n = labels.shape[0]
    ys, xs = _grid(size)
    theta = _random_angle(generator, n).view(-1, 1, 1)
    u = xs * torch.cos(theta) + ys * torch.sin(theta)
    v = -xs * torch.sin(theta) + ys * torch.cos(theta)
    freq = _uniform(generator, n, low=3.0, high=5.0).view(-1, 1, 1)
    pu = _uniform(generator, n).view(-1, 1, 1)
    pv = _uniform(generator, n).view(-1, 1, 1)
    # Smooth square waves (tanh of a sine) so edges are anti-aliased at any size.
    su, sv = torch.sin(2 * math.pi * (freq * u + pu)), torch.sin(2 * math.pi * (freq * v + pv))
    sharp = 4.0
    stripes = 0.5 + 0.5 * torch.tanh(sharp * su)
    checker = 0.5 + 0.5 * torch.tanh(sharp * su * sv * 2)
    # remainder, not frac: the rotated coordinates go negative, and frac keeps the sign.
    fu = torch.remainder(freq * u + pu, 1.0) - 0.5
    fv = torch.remainder(freq * v + pv, 1.0) - 0.5
    dots = _coverage(torch.sqrt(fu * fu + fv * fv) / freq - 0.22 / freq, size)
    cy, cx = _uniform(generator, n, low=0.3, high=0.7), _uniform(generator, n, low=0.3, high=0.7)
    r = torch.sqrt((ys - cy.view(-1, 1, 1)) ** 2 + (xs - cx.view(-1, 1, 1)) ** 2)
    rings = 0.5 + 0.5 * torch.tanh(sharp * torch.sin(2 * math.pi * (freq * r + pu)))
    patterns = torch.stack([stripes, checker, dots, rings], dim=1)  # (n, 4, H, W)
    chosen = patterns[torch.arange(n), labels]
    images = _two_tone(chosen, generator)
    return images + 0.03 * torch.randn(images.shape, generator=generator)


# Stripe cycles across the image: a factor 2 apart, and well inside Nyquist even at 32 px.
_FREQUENCIES = (1.5, 3.0, 6.0)


def _render_frequency(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    n = labels.shape[0]
    ys, xs = _grid(size)
    theta = _random_angle(generator, n).view(-1, 1, 1)
    u = xs * torch.cos(theta) + ys * torch.sin(theta)
    base = torch.tensor(_FREQUENCIES)[labels]
    freq = (base * _uniform(generator, n, low=0.85, high=1.15)).view(-1, 1, 1)
    phase = _uniform(generator, n).view(-1, 1, 1)
    wave = 0.5 + 0.5 * torch.sin(2 * math.pi * (freq * u + phase))
    images = _two_tone(wave, generator)
    return images + 0.04 * torch.randn(images.shape, generator=generator)


_PALETTE = torch.tensor(
    [
        [0.9, 0.15, 0.15],  # red
        [0.15, 0.8, 0.2],  # green
        [0.2, 0.3, 0.95],  # blue
        [0.95, 0.85, 0.15],  # yellow
    ]
)


def _render_colour(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    # The label is the colour of the largest object; two smaller distractors take random palette colours.
    n = labels.shape[0]
    images = _background(n, generator, size)
    cells = torch.rand(n, _CELLS * _CELLS, generator=generator).argsort(dim=1)
    cell = 1.0 / _CELLS
    for slot in range(2):
        row, col = cells[:, slot] // _CELLS, cells[:, slot] % _CELLS
        cy, cx = (row + 0.5) * cell, (col + 0.5) * cell
        radius = _uniform(generator, n, low=0.06, high=0.09)
        distractor = torch.randint(0, len(_PALETTE), (n,), generator=generator)
        jitter = 0.06 * torch.randn(n, 3, generator=generator)
        images = _paint(
            images, _coverage(_disc_sdf(size, cy, cx, radius), size), _PALETTE[distractor] + jitter
        )
    # The large object is drawn last, on top, anywhere: partly covering a distractor is fine.
    radius = _uniform(generator, n, low=0.17, high=0.24)
    cy, cx = _uniform(generator, n, low=0.25, high=0.75), _uniform(generator, n, low=0.25, high=0.75)
    jitter = 0.06 * torch.randn(n, 3, generator=generator)
    return _paint(images, _coverage(_disc_sdf(size, cy, cx, radius), size), _PALETTE[labels] + jitter)


_DISTANCE_BINS = ((0.0, 0.1), (0.17, 0.26), (0.33, 0.42))  # from the centre, in image widths


def _render_distance(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    n = labels.shape[0]
    images = _background(n, generator, size)
    bins = torch.tensor(_DISTANCE_BINS)[labels]
    dist = bins[:, 0] + (bins[:, 1] - bins[:, 0]) * torch.rand(n, generator=generator)
    angle = _random_angle(generator, n)
    # Along the diagonals the largest distance still fits the object inside the image.
    cy, cx = 0.5 + dist * torch.sin(angle), 0.5 + dist * torch.cos(angle)
    radius = _uniform(generator, n, low=0.05, high=0.08)
    cy, cx = cy.clamp(radius, 1 - radius), cx.clamp(radius, 1 - radius)
    return _paint(images, _coverage(_disc_sdf(size, cy, cx, radius), size), _bright_colours(generator, n))


def _render_shape(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    # 0 disc, 1 square, 2 triangle; random size, rotation and position.
    n = labels.shape[0]
    images = _background(n, generator, size)
    radius = _uniform(generator, n, low=0.2, high=0.3)
    cy, cx = _uniform(generator, n, low=0.35, high=0.65), _uniform(generator, n, low=0.35, high=0.65)
    angle = _random_angle(generator, n)
    # Scale each shape to about the same area, so size is no clue to the label.
    disc = _disc_sdf(size, cy, cx, radius * 0.8)
    square = _polygon_sdf(size, cy, cx, radius * 0.9, 4, angle)
    triangle = _polygon_sdf(size, cy, cx, radius * 1.1, 3, angle)
    sdf = torch.stack([disc, square, triangle], dim=1)[torch.arange(n), labels]
    return _paint(images, _coverage(sdf, size), _bright_colours(generator, n))


_SIZE_BINS = ((0.06, 0.1), (0.15, 0.2), (0.26, 0.32))  # disc radius, in image widths


def _render_size(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    n = labels.shape[0]
    images = _background(n, generator, size)
    bins = torch.tensor(_SIZE_BINS)[labels]
    radius = bins[:, 0] + (bins[:, 1] - bins[:, 0]) * torch.rand(n, generator=generator)
    # Anywhere the disc fits, so position says nothing about size.
    cy = radius + (1 - 2 * radius) * torch.rand(n, generator=generator)
    cx = radius + (1 - 2 * radius) * torch.rand(n, generator=generator)
    return _paint(images, _coverage(_disc_sdf(size, cy, cx, radius), size), _bright_colours(generator, n))


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("counting", _MAX_COUNT, "number of discs, 1-4 (CLEVR-count analogue)", _render_counting),
        Task("location", 4, "quadrant holding the object (dSprites-location analogue)", _render_location),
        Task(
            "orientation",
            _ORIENTATIONS,
            "bar angle: 0/45/90/135 degrees (dSprites analogue)",
            _render_orientation,
        ),
        Task("texture", 4, "stripes / checkerboard / dots / rings (DTD analogue)", _render_texture),
        Task("frequency", len(_FREQUENCIES), "stripe frequency: low / mid / high", _render_frequency),
        Task("colour", len(_PALETTE), "colour of the largest object: red/green/blue/yellow", _render_colour),
        Task(
            "distance",
            len(_DISTANCE_BINS),
            "distance from the centre (CLEVR-distance analogue)",
            _render_distance,
        ),
        Task("shape", 3, "disc / square / triangle", _render_shape),
        Task("size", len(_SIZE_BINS), "disc size: small / medium / large", _render_size),
    )
}


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str) -> Task:
    """The task called ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def mixture_task(names: list[str] | None = None) -> Task:
    """All of ``names`` (default: every task) as one task whose classes are the (task, class) pairs.

    The generalisation objective for pre-training a root from a random initialisation: a network that
    solves it has learnt counting, location, orientation, texture, colour, ... at once, as an ImageNet
    backbone has learnt general features before any fine-tune specialises it.
    """
    members = [get_task(name) for name in (names or task_names())]
    offsets = torch.tensor([0, *[t.n_classes for t in members]]).cumsum(0)

    def render(labels: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
        owner = torch.bucketize(labels, offsets[1:], right=True)
        images = torch.empty(labels.shape[0], 3, size, size)
        for k, task in enumerate(members):
            chosen = (owner == k).nonzero().flatten()
            if chosen.numel():
                images[chosen] = task._render(labels[chosen] - offsets[k], generator, size).clamp(0.0, 1.0)
        return images

    described = ", ".join(t.name for t in members)
    return Task("mixture", int(offsets[-1]), f"which task and which class: {described}", render)
