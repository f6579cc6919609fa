"""The zoo's parts without training: the network, the ImageNet weights, the tasks, the weight change."""

from __future__ import annotations

import pytest
import torch

from mothertree.errors import InvalidParameterError
from mothertree.zoo.build import relative_change
from mothertree.zoo.demo import DEMO_GRAPH, ROOT_ID
from mothertree.zoo.mobilenet import (
    MobileNetV2,
    imagenet_weights_path,
    load_imagenet_mobilenet_v2,
    replace_head,
)
from mothertree.zoo.spec import GraphSpec, NodePlan
from mothertree.zoo.tasks import TASKS, get_task


def test_mobilenet_keys_and_shapes_match_the_imagenet_checkpoint() -> None:
    published = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    ours = MobileNetV2().state_dict()
    assert list(ours) == list(published)
    assert all(ours[k].shape == published[k].shape for k in ours)


def test_imagenet_model_loads_and_heads_can_be_replaced() -> None:
    model = load_imagenet_mobilenet_v2()
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # MobileNetV2 1.0, as published
    with torch.inference_mode():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1000)
    backbone = model.features[0][0].weight.clone()
    replace_head(model, 5, generator=torch.Generator().manual_seed(0))
    assert model.num_classes == 5
    assert torch.equal(model.features[0][0].weight, backbone)
    with torch.inference_mode():
        assert model(torch.rand(2, 3, 48, 48)).shape == (2, 5)
    first = model.head.weight.clone()
    replace_head(model, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.head.weight, first)


@pytest.mark.parametrize("name", list(TASKS))
def test_tasks_are_deterministic_balanced_and_in_range(name: str) -> None:
    task = get_task(name)
    images, labels = task.sample(256, torch.Generator().manual_seed(3), size=32)
    again, labels_again = task.sample(256, torch.Generator().manual_seed(3), size=32)
    assert images.shape == (256, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert torch.equal(images, again) and torch.equal(labels, labels_again)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert set(labels.tolist()) == set(range(task.n_classes))
    # Images of one class differ from each other: the label is not the only thing that varies.
    first = images[labels == 0]
    assert float((first[0] - first[1]).abs().mean()) > 0.01


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="counting"):
        get_task("nope")


def test_relative_change_ignores_vectors_and_mismatched_heads() -> None:
    parent = {"a.weight": torch.ones(2, 2), "a.bias": torch.ones(2), "head": torch.ones(3, 2)}
    child = {"a.weight": torch.full((2, 2), 1.5), "a.bias": torch.zeros(2), "head": torch.ones(5, 2)}
    assert relative_change(child, parent) == pytest.approx(0.5)
    assert relative_change(parent, parent) == 0.0


def test_demo_graph_is_the_documented_ten_model_tree() -> None:
    root, *tuned = DEMO_GRAPH.nodes
    assert root.id == ROOT_ID and root.root == "imagenet"
    assert len(tuned) == 9
    children = [n for n in tuned if n.parent == ROOT_ID]
    assert len(children) == 3
    for child in children:
        grandchildren = [n for n in tuned if n.parent == child.id]
        assert len(grandchildren) == 2
        assert all(g.task != child.task for g in grandchildren)
        assert len({g.lr for g in grandchildren}) == 2
    assert all(n.id == n.task for n in tuned) and len({n.task for n in tuned}) == 9
    assert {n.save for n in tuned} == {"bin", "safetensors"}
    # Ids never start with their parent's id, so sorting them reveals nothing about the tree.
    assert not any(n.id.startswith(str(n.parent)) for n in tuned)


@pytest.mark.parametrize(
    ("nodes", "problem"),
    [
        (
            (NodePlan("a", "b", task="counting", lr=1e-3), NodePlan("b", ROOT_ID, task="size", lr=1e-3)),
            "parent",
        ),
        (
            (NodePlan("a", ROOT_ID, task="counting", lr=1e-3), NodePlan("a", ROOT_ID, task="size", lr=1e-3)),
            "twice",
        ),
        ((NodePlan("a", ROOT_ID, task="juggling", lr=1e-3),), "unknown vision tasks"),
        ((NodePlan("../a", ROOT_ID, task="size", lr=1e-3),), "plain folder name"),
        ((NodePlan("a", ROOT_ID, task="size"),), "positive lr"),
        ((NodePlan("a", ROOT_ID, task="size", lr=1e-3, lora_rank=4),), "text family only"),
        ((NodePlan("a", ROOT_ID, task="size", lr=1e-3, save="fp32"),), "unknown save formats"),
    ],
)
def test_invalid_node_lists_are_rejected(nodes: tuple[NodePlan, ...], problem: str) -> None:
    with pytest.raises(InvalidParameterError, match=problem):
        GraphSpec(name="bad", family="vision", nodes=(NodePlan(ROOT_ID, root="imagenet"), *nodes))
