"""A zoo of really fine-tuned models with a known Model Tree, for demos and for scoring recovery.

Needs torch (the ``zoo`` extra); nothing else in mothertree imports this package. The entry point is
``build_demo_graph``: ImageNet MobileNetV2 fine-tuned, on CPU, into a ten-model tree on procedural image
tasks, with ``truth.json`` beside the weights.
"""

from __future__ import annotations

from mothertree.zoo.demo import (
    DEFAULT_TREE,
    ROOT_ID,
    DemoBuild,
    DemoConfig,
    ModelSpec,
    build_demo,
    build_demo_graph,
    default_demo_dir,
    load_state_dict,
    relative_change,
)
from mothertree.zoo.mobilenet import MobileNetV2, load_imagenet_mobilenet_v2, replace_head
from mothertree.zoo.tasks import TASKS, Task, get_task
from mothertree.zoo.train import TrainResult, fine_tune

__all__ = [
    "DEFAULT_TREE",
    "ROOT_ID",
    "TASKS",
    "DemoBuild",
    "DemoConfig",
    "MobileNetV2",
    "ModelSpec",
    "Task",
    "TrainResult",
    "build_demo",
    "build_demo_graph",
    "default_demo_dir",
    "fine_tune",
    "get_task",
    "load_imagenet_mobilenet_v2",
    "load_state_dict",
    "relative_change",
    "replace_head",
]
