"""Names that differ by a wrapper prefix (`bert.` of a task model) are aligned before comparing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mothertree.evaluation.metrics import score_edges
from mothertree.evaluation.truth import load_edges
from mothertree.features.align import dominant_prefix, prefixes_to_strip
from mothertree.io.types import TensorInfo
from mothertree.pipeline import read_features, recover


def _tensors(*names: str) -> dict[str, TensorInfo]:
    # Header entries only (no weights): names and shapes are all that alignment looks at.
    return {name: TensorInfo(name, (4, 4), "F32") for name in names}


ENCODER = [
    f"encoder.layer.{i}.attention.self.{m}.weight" for i in range(3) for m in ("query", "key", "value")
]


def test_dominant_prefix_needs_nearly_every_matrix() -> None:
    assert dominant_prefix({"bert." + n for n in ENCODER} | {"classifier.weight"}) == "bert."
    assert dominant_prefix({"bert.a", "bert.b", "head.c"}) is None


def test_a_wrapped_model_is_stripped_only_where_it_helps() -> None:
    bare = _tensors(*ENCODER, "pooler.dense.weight")
    wrapped = _tensors(*("bert." + n for n in ENCODER), "bert.pooler.dense.weight", "classifier.weight")
    assert prefixes_to_strip([bare, wrapped]) == ["", "bert."]
    assert prefixes_to_strip([wrapped, wrapped]) == ["", ""]  # they match as stored


@pytest.mark.slow
def test_a_fine_tune_saved_by_a_task_class_is_placed_as_before(bert_family: Path, tmp_path: Path) -> None:
    import transformers

    family = tmp_path / "family"
    shutil.copytree(bert_family, family)
    # What a user gets from a classification fine-tune: `bert.`-prefixed weights plus a new head.
    task_model = transformers.BertForSequenceClassification.from_pretrained(
        family / "ft-colour", num_labels=3
    )
    shutil.rmtree(family / "ft-colour")
    task_model.save_pretrained(family / "ft-colour")
    (features,), broken = read_features([family])
    assert broken == [] and features.n_models == 5
    result = recover([family])
    score = score_edges({(e.parent, e.child) for e in result.edges}, load_edges(family / "truth.json"))
    assert score.directed == 1.0
