"""Tensor selection and architecture grouping, on header-only TensorInfo values (no weights needed)."""

import pytest

from mothertree.errors import InvalidParameterError, NoComparableTensorsError
from mothertree.features.select import group_by_architecture, select_tensors, weight_signature
from mothertree.io.types import TensorInfo


def infos(*specs):
    return {name: TensorInfo(name, shape, dtype) for name, shape, dtype in specs}


def bert_like(head_classes=2):
    specs = []
    for layer in range(2):
        for part in ("query", "key", "value", "output"):
            specs.append((f"l{layer}.{part}.weight", (8, 8), "F32"))
            specs.append((f"l{layer}.{part}.bias", (8,), "F32"))
        specs.append((f"l{layer}.ffn.weight", (32, 8), "BF16"))
    specs.append(("embeddings", (100, 8), "F32"))
    specs.append(("position_ids", (1, 16), "I64"))
    specs.append(("head.weight", (head_classes, 8), "F32"))
    return infos(*specs)


def cnn_like():
    return infos(
        ("conv1.weight", (16, 3, 3, 3), "F32"),
        ("bn1.weight", (16,), "F32"),
        ("bn1.running_mean", (16,), "F32"),
        ("conv2.weight", (16, 1, 3, 3), "F32"),
        ("fc.weight", (10, 16), "F32"),
    )


def test_square_matrices_by_default_when_there_are_enough():
    selected = select_tensors([bert_like(2), bert_like(5)])
    assert [t.name for t in selected] == [
        f"l{layer}.{p}.weight" for layer in range(2) for p in ("query", "key", "value", "output")
    ]


def test_every_multidimensional_float_weight_when_no_square_matrices():
    selected = select_tensors([cnn_like(), cnn_like()])
    assert [t.name for t in selected] == ["conv1.weight", "conv2.weight", "fc.weight"]


def test_head_with_other_class_count_is_not_compared():
    selected = select_tensors(
        [cnn_like(), {**cnn_like(), "fc.weight": TensorInfo("fc.weight", (4, 16), "F32")}]
    )
    assert "fc.weight" not in [t.name for t in selected]


def test_layers_regex_selects_matching_shared_tensors():
    selected = select_tensors([bert_like(), bert_like()], layers=r"ffn|embeddings")
    assert [t.name for t in selected] == ["l0.ffn.weight", "l1.ffn.weight", "embeddings"]


def test_layers_regex_without_match_names_an_example():
    with pytest.raises(
        NoComparableTensorsError, match=r"no shared weight tensor matches `--layers nothing`"
    ) as info:
        select_tensors([bert_like(), bert_like()], layers="nothing")
    assert info.value.hint == "shared tensors look like `l0.query.weight`"


def test_invalid_regex_is_a_parameter_error():
    with pytest.raises(InvalidParameterError, match=r"`--layers \(` is not a valid regular expression"):
        select_tensors([bert_like(), bert_like()], layers="(")


def test_nothing_shared():
    with pytest.raises(
        NoComparableTensorsError, match="the models share no weight tensor of the same name and shape"
    ):
        select_tensors([infos(("a", (2, 2), "F32")), infos(("b", (2, 2), "F32"))])


def test_grouping_keeps_fine_tunes_with_new_heads_together_and_splits_architectures():
    signatures = [
        weight_signature(m) for m in (bert_like(2), cnn_like(), bert_like(7), cnn_like(), bert_like(2))
    ]
    assert group_by_architecture(signatures) == [[0, 2, 4], [1, 3]]
