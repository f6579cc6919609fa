"""A zoo of really fine-tuned models with a known Model Tree, for demos and for scoring recovery.

Needs torch (the ``zoo`` extra); nothing else in mothertree imports this package. Entry points:
``build_graph(load_spec(...))`` builds the benchmark's Model Graphs from a declarative spec (``spec.py``,
built-in specs in ``specs/``), and ``build_demo_graph`` fine-tunes ImageNet MobileNetV2 into the ten-model
demo tree. Each graph has ``truth.json`` beside the weights.
"""

from __future__ import annotations

from mothertree.zoo.build import GraphBuild, build_graph, weights_digest
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
from mothertree.zoo.spec import GraphSpec, NodePlan, builtin_specs, load_spec, plan_graph
from mothertree.zoo.tasks import TASKS, Task, get_task
from mothertree.zoo.train import TrainResult, fine_tune

__all__ = [
    "DEFAULT_TREE",
    "ROOT_ID",
    "TASKS",
    "DemoBuild",
    "DemoConfig",
    "GraphBuild",
    "GraphSpec",
    "NodePlan",
    "MobileNetV2",
    "ModelSpec",
    "Task",
    "TrainResult",
    "build_demo",
    "build_demo_graph",
    "build_graph",
    "builtin_specs",
    "load_spec",
    "plan_graph",
    "weights_digest",
    "default_demo_dir",
    "fine_tune",
    "get_task",
    "load_imagenet_mobilenet_v2",
    "load_state_dict",
    "relative_change",
    "replace_head",
]
