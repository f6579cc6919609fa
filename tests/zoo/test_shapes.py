"""The shapes zoo's specs, and the per-node recipe fields they use (steps, weight decay, fp16 saves)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
from torch_threads import one_thread

from mothertree.errors import InvalidParameterError
from mothertree.features.featureset import FeatureSet
from mothertree.pipeline import read_features
from mothertree.zoo.build import build_graph
from mothertree.zoo.shapes import HELDOUT, RECIPES, SHAPES, TUNING
from mothertree.zoo.spec import GraphSpec, NodePlan, plan_graph


def test_every_shape_is_one_tree_with_opaque_ids_and_a_recipe():
    assert not {s.name for s in TUNING} & {s.name for s in HELDOUT}
    assert set(RECIPES) == set(SHAPES)
    for spec in SHAPES.values():
        plans = plan_graph(spec)
        assert spec.trees == 1 and 7 <= len(plans) <= 9
        assert plans[0].parent is None and all(p.parent is not None for p in plans[1:])
        degree = Counter(p.parent for p in plans if p.parent)
        if "chain" in spec.name:  # a chain: every stage but the last continues, two stages branch
            assert max(degree.values()) == 2 and sum(d == 2 for d in degree.values()) == 2


def test_node_recipe_fields_are_validated_and_left_out_of_the_fingerprint_when_unset():
    base = NodePlan("base", root="imagenet")
    plain = GraphSpec(name="g", family="vision", nodes=(base, NodePlan("a", "base", task="size", lr=1e-3)))
    assert set(plain.to_json()["nodes"][1]) == {
        "id",
        "parent",
        "root",
        "task",
        "lr",
        "seed",
        "lora_rank",
        "save",
    }
    tuned = NodePlan("a", "base", task="size", lr=1e-3, steps=7, weight_decay=0.1, save="fp16")
    spec = GraphSpec(name="g", family="vision", nodes=(base, tuned))
    assert spec.to_json()["nodes"][1]["weight_decay"] == 0.1 and spec.to_json()["nodes"][1]["steps"] == 7
    with pytest.raises(InvalidParameterError, match="weight_decay must be >= 0"):
        GraphSpec(
            name="g",
            family="vision",
            nodes=(base, NodePlan("a", "base", task="size", lr=1e-3, weight_decay=-1)),
        )
    with pytest.raises(InvalidParameterError, match="no steps or weight_decay"):
        GraphSpec(name="g", family="vision", nodes=(NodePlan("base", root="imagenet", steps=3),))


@pytest.mark.slow
def test_weight_decay_and_half_precision_reach_the_weights(tmp_path: Path):
    # Two children of one root, equal but for weight decay: strong decay shrinks the weights, none lets the
    # update add to them. One is stored in fp16, and is read as such.
    nodes = (
        NodePlan("base", root="imagenet"),
        NodePlan("kept", "base", task="size", lr=1e-3, seed=1, weight_decay=0.0, save="fp16"),
        NodePlan("decayed", "base", task="size", lr=1e-3, seed=1, weight_decay=50.0, save="safetensors"),
    )
    spec = GraphSpec(
        name="decay", family="vision", steps=6, batch_size=8, image_size=16, eval_samples=256, nodes=nodes
    )
    with one_thread():
        graph = build_graph(spec, tmp_path / "decay", quiet=True).path
    stored = safetensors.torch.load_file(str(graph / "kept" / "model.safetensors"))
    assert {str(t.dtype) for t in stored.values() if t.is_floating_point()} == {"torch.float16"}
    (features,), _ = read_features([graph])
    assert isinstance(features, FeatureSet) and features.precisions is not None
    norms = dict(zip(features.model_ids, features.log_norms(), strict=True))
    assert norms["decayed"] < norms["base"] < norms["kept"]
    assert np.isfinite(features.kurtosis_pairs()).all()
