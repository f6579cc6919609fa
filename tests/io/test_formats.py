"""ONNX and GGUF files, written by the tools users write them with, read back as their source's tensors.

The models here are tiny transformers models at their random initialisation, saved with
``save_pretrained``: what is tested is that a reader gives back the stored tensors under their source's
names, which does not depend on training (tests/test_relations.py recovers really trained ones).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mothertree.errors import InvalidCheckpointError, MissingDependencyError
from mothertree.features.quantized import within_one_step
from mothertree.features.reductions import PRECISIONS, rounded
from mothertree.io import GgufCheckpoint, OnnxCheckpoint, open_checkpoint
from mothertree.zoo import formats

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mothertree.zoo.text import minilm_path

    torch.manual_seed(0)
    from tiny_bert import TINY_BERT

    # MiniLM's vocabulary: the GGUF converter needs its tokenizer beside the weights.
    config = transformers.BertConfig(**{**TINY_BERT, "vocab_size": 30522})
    folder = tmp_path_factory.mktemp("formats") / "tiny-bert"
    transformers.BertModel(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return folder


def _converter() -> None:
    try:
        formats.llama_cpp_dir()
    except MissingDependencyError as exc:
        pytest.skip(f"{exc} ({exc.hint})")


def _tensors_equal(checkpoint, source) -> list[str]:  # type: ignore[no-untyped-def]
    """The names ``checkpoint`` lists that are not ``source``'s tensor, equal."""
    return [
        name
        for name in checkpoint.tensors
        if name not in source.tensors or not np.array_equal(checkpoint.read(name), source.read(name))
    ]


def test_onnx_export_reads_back_as_the_pytorch_parameters(tiny_bert: Path, tmp_path: Path) -> None:
    exported = formats.export_onnx(tiny_bert, tmp_path / "model.onnx")
    source = open_checkpoint(tiny_bert)
    with open_checkpoint(exported) as checkpoint:
        assert isinstance(checkpoint, OnnxCheckpoint)
        assert checkpoint.format == "onnx"
        # The MatMul weights the exporter transposed and renamed (`onnx::MatMul_123`) are named back.
        assert "encoder.layer.0.attention.self.query.weight" in checkpoint.tensors
        assert checkpoint.tensors["encoder.layer.0.intermediate.dense.weight"].shape == (64, 32)
        assert _tensors_equal(checkpoint, source) == []
        # The exporter drops what the graph does not use (the pooler) and shares identical initial values.
        matrices = [n for n, i in source.tensors.items() if len(i.shape) == 2 and not n.startswith("pooler")]
        assert set(matrices) <= set(checkpoint.tensors)


def test_dynamo_onnx_export_is_named_from_its_scopes(tiny_bert: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    model = transformers.AutoModel.from_pretrained(tiny_bert).eval()

    class Hidden(torch.nn.Module):  # the dynamo exporter takes keyword inputs through a plain module
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, ids, mask):  # type: ignore[no-untyped-def]
            return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state

    ids = torch.ones((1, 8), dtype=torch.long)
    torch.onnx.export(Hidden(), (ids, torch.ones_like(ids)), str(tmp_path / "dynamo.onnx"), dynamo=True)
    source = open_checkpoint(tiny_bert)
    with open_checkpoint(tmp_path / "dynamo.onnx") as checkpoint:
        named = {n.removeprefix("bert."): n for n in checkpoint.tensors}
        for name in ("encoder.layer.1.attention.self.value.weight", "encoder.layer.0.output.dense.weight"):
            assert np.array_equal(checkpoint.read(named[name]), source.read(name))


@pytest.mark.parametrize(
    ("per_channel", "unsigned"),
    [(False, False), (True, False), (False, True)],
    ids=["int8", "per-channel", "uint8"],
)
def test_onnxruntime_int8_weights_read_dequantised(
    tiny_bert: Path, tmp_path: Path, per_channel: bool, unsigned: bool
) -> None:
    exported = formats.export_onnx(tiny_bert, tmp_path / "model.onnx")
    quantized = formats.quantize_onnx(
        exported, tmp_path / "q.onnx", per_channel=per_channel, unsigned=unsigned
    )
    source = open_checkpoint(tiny_bert)
    model = onnx.load(str(quantized))
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    with open_checkpoint(quantized) as checkpoint:
        weights = {n: i for n, i in checkpoint.tensors.items() if i.dtype == "I8_LINEAR"}
        assert "encoder.layer.1.output.dense.weight" in weights
        assert "embeddings.word_embeddings.weight" in weights  # onnxruntime quantises the Gather too
        assert not any(name.endswith(("_scale", "_zero_point", "_quantized")) for name in checkpoint.tensors)
        for name, info in weights.items():
            values = checkpoint.read(name)
            assert values.shape == source.tensors[name].shape
            assert within_one_step(values, source.read(name), info.dtype), name
        # What ONNX's DequantizeLinear computes, from the stored integers, scale and zero point.
        stem = next(
            n.removesuffix("_quantized")
            for n in initializers
            if n.startswith("onnx::MatMul") and n.endswith("_quantized")
        )
        q, scale, zero = (initializers[stem + s] for s in ("_quantized", "_scale", "_zero_point"))
        expected = ((q.astype(np.float32) - zero.astype(np.float32)) * scale).T
        assert any(np.array_equal(checkpoint.read(n), expected) for n in weights)
        # What the quantiser left alone is the source's, bit for bit.
        assert np.array_equal(
            checkpoint.read("embeddings.LayerNorm.weight"), source.read("embeddings.LayerNorm.weight")
        )


def test_an_onnx_file_that_is_not_one_is_an_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"<html>rate limited</html>" * 10)
    with pytest.raises(InvalidCheckpointError, match="is not a readable ONNX model") as caught:
        open_checkpoint(bad)
    assert str(bad) in str(caught.value)


def test_onnx_external_data_outside_the_model_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    exported = formats.export_onnx(tiny_bert, tmp_path / "src" / "model.onnx")
    model = onnx.load(str(exported))
    (tmp_path / "ext").mkdir()
    onnx.save_model(
        model,
        str(tmp_path / "ext" / "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    source = open_checkpoint(tiny_bert)
    with open_checkpoint(tmp_path / "ext" / "model.onnx") as checkpoint:  # read one tensor at a time
        assert _tensors_equal(checkpoint, source) == []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = "../../etc/passwd"
    onnx.save_model(model, str(tmp_path / "ext" / "model.onnx"))
    with open_checkpoint(tmp_path / "ext" / "model.onnx") as checkpoint:
        name = next(n for n, i in checkpoint.tensors.items() if len(i.shape) == 2)
        with pytest.raises(Exception, match="outside the input"):
            checkpoint.read(name)


def test_external_data_named_like_a_checkpoint_is_part_of_its_onnx_model(
    tiny_bert: Path, tmp_path: Path
) -> None:
    from mothertree.io import discover

    exported = formats.export_onnx(tiny_bert, tmp_path / "src" / "model.onnx")
    folder = tmp_path / "collection" / "exported"
    folder.mkdir(parents=True)
    onnx.save_model(
        onnx.load(str(exported)),
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",  # a `.bin`, yet no PyTorch checkpoint: the ONNX model's data
        size_threshold=0,
    )
    models, broken = discover(tmp_path / "collection")
    assert [m.id for m in models] == ["exported"] and broken == []
    with open_checkpoint(folder) as checkpoint:  # the folder given alone is the one model too
        assert isinstance(checkpoint, OnnxCheckpoint)
        assert _tensors_equal(checkpoint, open_checkpoint(tiny_bert)) == []


@pytest.mark.parametrize("outtype", ["f32", "f16", "bf16", "q8_0"])
def test_gguf_from_llama_cpp_converter_reads_back_under_hf_names(
    tiny_bert: Path, tmp_path: Path, outtype: str
) -> None:
    _converter()
    converted = formats.convert_gguf(tiny_bert, tmp_path / f"bert-{outtype}.gguf", outtype=outtype)
    source = open_checkpoint(tiny_bert)
    with open_checkpoint(converted) as checkpoint:
        assert isinstance(checkpoint, GgufCheckpoint)
        assert set(checkpoint.tensors) == {n for n in source.tensors if not n.startswith("pooler.")}
        for name, info in checkpoint.tensors.items():
            values, expected = checkpoint.read(name), source.read(name)
            assert values.shape == expected.shape, name
            if info.dtype in PRECISIONS:  # stored as a float: the source's, rounded to it
                assert np.array_equal(values, rounded(expected, PRECISIONS.index(info.dtype))), name
            else:
                assert info.dtype == "Q8_0" and within_one_step(values, expected, info.dtype), name


def test_gguf_requantised_by_the_gguf_package(tiny_bert: Path, tmp_path: Path) -> None:
    _converter()
    converted = formats.convert_gguf(tiny_bert, tmp_path / "bert-f32.gguf", outtype="f32")
    requantized = formats.requantize_gguf(converted, tmp_path / "bert-q4.gguf", "Q4_0")
    source = open_checkpoint(tiny_bert)
    with open_checkpoint(requantized) as checkpoint:
        kinds = {info.dtype for info in checkpoint.tensors.values()}
        assert kinds == {"F32", "Q4_0"}
        for name, info in checkpoint.tensors.items():
            if info.dtype == "Q4_0":
                assert within_one_step(checkpoint.read(name), source.read(name), "Q4_0"), name


def test_exports_in_a_folder_of_their_own_are_read_through_the_folder(
    tiny_bert: Path, tmp_path: Path
) -> None:
    # A model's path is its folder, as the user gave it; the reads must still go to the file in it.
    _converter()
    formats.convert_gguf(tiny_bert, tmp_path / "gguf" / "model.gguf", outtype="f16")
    exported = formats.export_onnx(tiny_bert, tmp_path / "src" / "model.onnx")
    (tmp_path / "onnx").mkdir()
    onnx.save_model(
        onnx.load(str(exported)),
        str(tmp_path / "onnx" / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx_data",  # what optimum names it
        size_threshold=0,
    )
    source = open_checkpoint(tiny_bert)
    for folder in ("gguf", "onnx"):
        with open_checkpoint(tmp_path / folder) as checkpoint:
            assert checkpoint.path == tmp_path / folder
            name = "encoder.layer.0.attention.self.query.weight"
            assert np.allclose(checkpoint.read(name), source.read(name), atol=1e-3), folder


def test_gguf_llama_q_and_k_are_permuted_back(tmp_path: Path) -> None:
    _converter()
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the quick brown fox jumps over the lazy dog {i} times" for i in range(200)))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_path / "tok"),
        vocab_size=64,
        model_type="bpe",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    torch.manual_seed(0)
    config = transformers.LlamaConfig(  # grouped-query attention: K is permuted with its own head count
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    folder = tmp_path / "tiny-llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    (folder / "tokenizer.model").write_bytes((tmp_path / "tok.model").read_bytes())
    converted = formats.convert_gguf(folder, tmp_path / "llama.gguf", outtype="f32")
    source = open_checkpoint(folder)
    with open_checkpoint(converted) as checkpoint:
        assert set(checkpoint.tensors) == set(source.tensors)
        assert _tensors_equal(checkpoint, source) == []


def test_a_gguf_file_that_is_not_one_is_an_error_naming_it(tiny_bert: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(InvalidCheckpointError, match="is not a readable GGUF file") as caught:
        open_checkpoint(bad)
    assert str(bad) in str(caught.value)
    _converter()
    converted = formats.convert_gguf(tiny_bert, tmp_path / "bert.gguf", outtype="f32")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(converted.read_bytes()[: converted.stat().st_size // 2])
    with pytest.raises(InvalidCheckpointError, match="cut.gguf"):
        open_checkpoint(cut)
