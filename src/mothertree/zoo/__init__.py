"""A zoo of really fine-tuned models with a known Model Tree, for demos and for scoring recovery.

Needs torch (the ``zoo`` extra); nothing else in mothertree imports this package. One builder,
``build_graph(spec, out)``, makes every graph from a ``GraphSpec`` (``spec.py``): the benchmark's splits
from declarative specs (``load_spec``, built-in specs in ``specs/``), and the graphs listed model by model:
the ten-model demo tree of ImageNet MobileNetV2 fine-tunes (``DEMO_GRAPH``, or ``build_demo_graph()``
into the cache) and the MiniLM benchmark graphs (``MINILM_GRAPH``, ``MINILM_LORA_GRAPH``). Each graph has
``truth.json`` beside the weights.
"""

from __future__ import annotations

from mothertree.zoo.build import GraphBuild, build_graph, relative_change
from mothertree.zoo.demo import DEMO_GRAPH, ROOT_ID, TINY_DEMO_GRAPH, build_demo_graph, default_demo_dir
from mothertree.zoo.files import TRUTH_FILE, cache_dir, load_state_dict, weights_digest
from mothertree.zoo.mobilenet import MobileNetV2, load_imagenet_mobilenet_v2, replace_head
from mothertree.zoo.spec import GraphSpec, NodePlan, builtin_specs, load_spec, plan_graph
from mothertree.zoo.tasks import TASKS, Task, get_task
from mothertree.zoo.text import MINILM_GRAPH, MINILM_LORA_GRAPH
from mothertree.zoo.train import TrainResult, fine_tune

__all__ = [
    "DEMO_GRAPH",
    "MINILM_GRAPH",
    "MINILM_LORA_GRAPH",
    "ROOT_ID",
    "TASKS",
    "TINY_DEMO_GRAPH",
    "TRUTH_FILE",
    "GraphBuild",
    "GraphSpec",
    "MobileNetV2",
    "NodePlan",
    "Task",
    "TrainResult",
    "build_demo_graph",
    "build_graph",
    "builtin_specs",
    "cache_dir",
    "default_demo_dir",
    "fine_tune",
    "get_task",
    "load_imagenet_mobilenet_v2",
    "load_spec",
    "load_state_dict",
    "plan_graph",
    "relative_change",
    "replace_head",
    "weights_digest",
]
