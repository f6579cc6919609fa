"""The demo Model Graph: ImageNet MobileNetV2, really fine-tuned into a known tree of ten models.

The root is torchvision's ImageNet MobileNetV2, written exactly as loaded. Three children are full fine-tunes
of it on three different procedural tasks; each child has two children of its own, fine-tuned from it on
yet other tasks, with different seeds and learning rates. Every model is saved the way users save models
(some as ``pytorch_model.bin``, some as ``model.safetensors``), one folder per model, and ``truth.json``
records the edges and how each model was trained, so recovery can be scored against the truth.

Model ids are the task names: they say what a model does, never who its parent is, so nothing but the
weights gives the tree away (not even sorting the ids). ``DEMO_GRAPH`` and its test-sized
``TINY_DEMO_GRAPH`` are specs like any other, built (and resumed) by ``build_graph``.
"""

from __future__ import annotations

from pathlib import Path

from .build import build_graph
from .files import cache_dir
from .spec import GraphSpec, NodePlan

__all__ = ["DEMO_GRAPH", "ROOT_ID", "TINY_DEMO_GRAPH", "build_demo_graph", "default_demo_dir"]

ROOT_ID = "mobilenetv2-imagenet"
# The cache folder's name changes whenever what a build of the demo writes there does: a folder of another
# version is left alone rather than refused.
_CACHE_SUBDIR = "demo-v2"

# Siblings learn different tasks and get different learning rates, and no task repeats, so every model can
# simply be named by its task. Both weights formats are used, so that both readers see trained models.
# Settings measured on an otherwise idle 2-core CPU: the build takes about 3.5 minutes, and every model ends
# far above chance on its 512 held-out samples; 48 px rather than 64 buys more steps in the same time,
# which helped accuracy more than resolution did.
DEMO_GRAPH = GraphSpec(
    name="demo",
    family="vision",
    steps=250,
    batch_size=32,
    image_size=48,
    eval_samples=512,
    nodes=(
        NodePlan(ROOT_ID, root="imagenet"),
        NodePlan("counting", ROOT_ID, task="counting", lr=1e-4, seed=1, save="safetensors"),
        NodePlan("orientation", ROOT_ID, task="orientation", lr=3e-4, seed=2, save="bin"),
        NodePlan("texture", ROOT_ID, task="texture", lr=1e-3, seed=3, save="safetensors"),
        NodePlan("colour", "counting", task="colour", lr=1e-4, seed=4, save="bin"),
        NodePlan("size", "counting", task="size", lr=3e-4, seed=5, save="safetensors"),
        NodePlan("location", "orientation", task="location", lr=1e-3, seed=6, save="bin"),
        NodePlan("frequency", "orientation", task="frequency", lr=1e-4, seed=7, save="safetensors"),
        NodePlan("shape", "texture", task="shape", lr=3e-4, seed=8, save="bin"),
        NodePlan("distance", "texture", task="distance", lr=1e-3, seed=9, save="safetensors"),
    ),
)

# Four models (root -> 2 children -> 1 grandchild), small images, few steps: for tests. The root is still
# the real ImageNet MobileNetV2 and the training code is the same.
TINY_DEMO_GRAPH = GraphSpec(
    name="demo-tiny",
    family="vision",
    steps=30,
    batch_size=16,
    image_size=32,
    eval_samples=256,
    nodes=(
        NodePlan(ROOT_ID, root="imagenet"),
        NodePlan("orientation", ROOT_ID, task="orientation", lr=1e-3, seed=1, save="safetensors"),
        NodePlan("size", ROOT_ID, task="size", lr=3e-4, seed=2, save="bin"),
        NodePlan("colour", "orientation", task="colour", lr=1e-3, seed=3, save="safetensors"),
    ),
)


def default_demo_dir() -> Path:
    """Where ``build_demo_graph`` builds by default: ``cache_dir() / "demo-v2"``."""
    return cache_dir() / _CACHE_SUBDIR


def build_demo_graph(out: Path | None = None, *, quiet: bool = False, force: bool = False) -> Path:
    """Fine-tune the demo Model Graph ``DEMO_GRAPH`` and return its folder.

    Args:
        out: where to build it; default ``default_demo_dir()`` (the user's cache).
        quiet: no log lines.
        force: make every model again even if a complete or partial build is already there.

    Returns:
        The folder: ``<id>/pytorch_model.bin`` or ``<id>/model.safetensors`` per model, and ``truth.json``
        with ``edges`` (parent -> child) and, per model, its task, lr, seed, steps, held-out accuracy,
        final loss and relative weight change from its parent. A finished build is returned at once; an
        interrupted one resumes where it stopped.
    """
    return build_graph(
        DEMO_GRAPH, out if out is not None else default_demo_dir(), quiet=quiet, force=force
    ).path
