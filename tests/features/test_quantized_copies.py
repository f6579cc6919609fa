"""Quantised copies are leaves under the model they round (features/quantized.py, issue 13).

The family is ``bert_family`` (tiny BERTs really fine-tuned, tests/family.py). Its copies are made by the
tools users make them with: onnxruntime's int8 ``quantize_dynamic`` of a ``torch.onnx.export``, llama.cpp's
``convert_hf_to_gguf.py`` (Q8_0, F32), the ``gguf`` package (Q4_0) and bitsandbytes' LLM.int8.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from family import linked

from mothertree.pipeline import recover
from mothertree.render import to_text
from mothertree.zoo import formats

pytest.importorskip("onnxruntime")
pytest.importorskip("gguf")


@pytest.mark.slow
def test_quantised_copies_are_leaves_under_their_source_and_leave_the_tree_as_it_was(
    bert_family: Path, tmp_path: Path
) -> None:
    from mothertree.zoo.text import minilm_path
    from mothertree.zoo.variants import build_variant

    try:
        formats.llama_cpp_dir()
    except Exception as exc:  # noqa: BLE001 - the converter is installed by `make install`
        pytest.skip(str(exc))
    names = ["root", "ft-colour", "ft-number", "ft-colour-person", "ft-number-water"]
    without = recover([linked(bert_family, tmp_path / "without", names)])

    folder = linked(bert_family, tmp_path / "with", names)
    scratch = tmp_path / "scratch"
    formats.quantize_onnx(
        formats.export_onnx(bert_family / "ft-colour", scratch / "ft-colour.onnx"),
        folder / "ft-colour-int8.onnx",
    )
    formats.convert_gguf(
        bert_family / "ft-number", folder / "ft-number-q8.gguf", outtype="q8_0", tokenizer=minilm_path()
    )
    f32 = formats.convert_gguf(bert_family / "root", scratch / "root-f32.gguf", tokenizer=minilm_path())
    formats.requantize_gguf(f32, folder / "root-q4.gguf", "Q4_0")
    graph = linked(bert_family, scratch / "graph", ["ft-number-water"])
    (graph / "truth.json").write_text('{"edges": [], "models": {}}')
    int8 = build_variant(graph, scratch / "int8", "int8", quiet=True)
    shutil.copytree(int8 / "ft-number-water", folder / "ft-number-water-int8")

    result = recover([folder])
    quantized = {(e.parent, e.child) for e in result.edges if e.relation == "quantized"}
    assert quantized == {
        ("ft-colour", "ft-colour-int8"),
        ("ft-number", "ft-number-q8"),
        ("root", "root-q4"),  # a quantised root is a leaf under it, never the root
        ("ft-number-water", "ft-number-water-int8"),
    }
    assert result.roots == without.roots
    parents = {e.parent for e in result.edges}
    assert not parents & {child for _, child in quantized}  # leaves
    assert [(e.parent, e.child, e.confidence) for e in result.edges if e.relation == "finetune"] == [
        (e.parent, e.child, e.confidence) for e in without.edges
    ]
    dtypes = {m.id: m.dtype for m in result.models}
    assert dtypes["ft-colour-int8"] == "I8_LINEAR" and dtypes["root-q4"] == "Q4_0"
    assert "ft-colour-int8  (quantized" in to_text(result)
    assert {e["relation"] for e in result.to_json()["edges"]} == {"finetune", "quantized"}


@pytest.mark.slow
def test_a_float_export_is_a_copy_of_its_source(bert_family: Path, tmp_path: Path) -> None:
    from mothertree.zoo.text import minilm_path

    try:
        formats.llama_cpp_dir()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(str(exc))
    folder = linked(bert_family, tmp_path / "with", ["root", "ft-colour", "ft-number"])
    formats.convert_gguf(
        bert_family / "ft-colour", folder / "ft-colour-f16.gguf", outtype="f16", tokenizer=minilm_path()
    )
    formats.export_onnx(bert_family / "ft-number", folder / "ft-number-export.onnx")
    result = recover([folder])
    models = {m.id: m for m in result.models}
    assert set(models) == {"root", "ft-colour", "ft-number"}
    assert models["ft-colour"].aliases == ("ft-colour-f16",)
    assert models["ft-number"].aliases == ("ft-number-export",)  # less its unused pooler


@pytest.mark.slow
def test_a_pruned_copy_is_a_leaf_under_its_source(bert_family: Path, tmp_path: Path) -> None:
    from mothertree.zoo.variants import build_variant

    names = ["root", "ft-colour", "ft-number", "ft-colour-person", "ft-number-water"]
    without = recover([linked(bert_family, tmp_path / "without", names)])
    folder = linked(bert_family, tmp_path / "with", names)
    graph = linked(bert_family, tmp_path / "graph", ["ft-colour"])
    (graph / "truth.json").write_text('{"edges": [], "models": {}}')
    pruned = build_variant(graph, tmp_path / "pruned", "prune:0.5", quiet=True)
    shutil.copytree(pruned / "ft-colour", folder / "ft-colour-pruned")
    result = recover([folder])
    assert {(e.parent, e.child) for e in result.edges if e.relation == "pruned"} == {
        ("ft-colour", "ft-colour-pruned")
    }
    finetunes = [e for e in result.edges if e.relation == "finetune"]
    assert [(e.parent, e.child) for e in finetunes] == [(e.parent, e.child) for e in without.edges]
    # Equal up to float64 rounding: with a pruned model in the group, distances go over common supports.
    assert [e.confidence for e in finetunes] == pytest.approx([e.confidence for e in without.edges], abs=1e-9)


@pytest.mark.slow
def test_compare_tells_a_copy_and_a_quantised_copy_from_a_fine_tune(
    bert_family: Path, tmp_path: Path
) -> None:
    from mothertree.pipeline import compare

    folder = linked(bert_family, tmp_path / "models", ["ft-colour"])
    shutil.copytree(bert_family / "ft-colour", folder / "ft-colour-copy")
    formats.quantize_onnx(
        formats.export_onnx(bert_family / "ft-colour", tmp_path / "ft-colour.onnx"),
        folder / "ft-colour-int8.onnx",
    )
    copy = compare(folder / "ft-colour", folder / "ft-colour-copy")
    assert copy.related and copy.edge is not None and copy.edge.relation == "duplicate"
    assert "is a copy of" in copy.why
    quantized = compare(folder / "ft-colour-int8.onnx", folder / "ft-colour")  # the copy named first
    assert quantized.related and quantized.edge is not None
    assert (quantized.edge.parent, quantized.edge.child, quantized.edge.relation) == (
        "ft-colour",
        "ft-colour-int8",
        "quantized",
    )
