"""Variants of a Model Graph (pruned, fp16, int8), made of real models with the real torch and bitsandbytes.

``graph`` holds every layout a variant must handle: a transformers folder (fp32, one file), its child saved
sharded in bf16, a peft LoRA adapter of the root, and torchvision's ImageNet MobileNetV2 as
``pytorch_model.bin`` with a re-headed child as ``model.safetensors``. The BERTs are trained a few steps,
so no weight is an initialisation. ``bert_family`` (really fine-tuned MiniLMs) checks that each variant
graph still goes through the whole pipeline.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_bert import TINY_BERT, train_tiny

from mothertree.errors import CheckpointNotFoundError, InvalidParameterError, UnsupportedFormatError
from mothertree.io import INT8_ROWWISE, open_checkpoint
from mothertree.pipeline import recover

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
bnb = pytest.importorskip("bitsandbytes")

from safetensors.torch import load_file  # noqa: E402 - after the skips: needs torch

from mothertree.zoo.variants import build_variant, parse_variant  # noqa: E402 - needs torch

VARIANTS = ("prune:0.5", "fp16", "int8")
BERTS = ("bert-root", "bert-child")
NETS = ("net-root", "net-child")


@dataclass(frozen=True)
class Source:
    path: Path
    digest: dict[str, tuple[str, int]]  # every file: sha256 and mtime, taken right after the build


def _digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(path.relative_to(folder)): (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mtime_ns,
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Source:
    from safetensors.torch import save_file

    from mothertree.zoo.mobilenet import load_imagenet_mobilenet_v2, replace_head

    out = tmp_path_factory.mktemp("source") / "graph"
    torch.manual_seed(0)
    root = transformers.BertModel(transformers.BertConfig(**TINY_BERT))
    train_tiny(root, seed=1)
    root.save_pretrained(out / "bert-root")
    (out / "bert-root" / "README.md").write_text("# tiny bert\n")
    child = transformers.BertModel.from_pretrained(out / "bert-root")
    train_tiny(child, seed=2)
    child.to(torch.bfloat16).save_pretrained(out / "bert-child", max_shard_size="20KB")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft 0.21 on transformers 5
        base = transformers.BertModel.from_pretrained(out / "bert-root")  # so the adapter names its path
        lora = peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["query", "value"]))
        with torch.no_grad():
            for name, parameter in lora.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(3))
        lora.save_pretrained(out / "bert-lora")

    net = load_imagenet_mobilenet_v2()
    (out / "net-root").mkdir()
    torch.save(net.state_dict(), out / "net-root" / "pytorch_model.bin")
    replace_head(net, 5, generator=torch.Generator().manual_seed(4))
    (out / "net-child").mkdir()
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, out / "net-child" / "model.safetensors"
    )

    edges = [("bert-root", "bert-child"), ("bert-root", "bert-lora"), ("net-root", "net-child")]
    truth = {"edges": [{"parent": p, "child": c} for p, c in edges], "models": {"bert-root": {"task": "toy"}}}
    (out / "truth.json").write_text(json.dumps(truth))
    (out / "bert-root.info.json").write_text("{}")
    return Source(out, _digest(out))


@pytest.fixture(scope="module")
def built(graph: Source, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    return {v: build_variant(graph.path, root / v.replace(":", "-"), v, quiet=True) for v in VARIANTS}


def _stored(folder: Path) -> dict[str, Any]:
    """Every tensor of a model folder as saved (torch tensors in their own dtypes)."""
    tensors: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors":
            tensors.update(load_file(path))
        elif path.suffix == ".bin":
            tensors.update(torch.load(path, weights_only=True))
    return tensors


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- prune --------------------------------------------------------------------------------------------------


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
@pytest.mark.parametrize("amount", [0.3, 0.7])
def test_pruning_zeroes_the_smallest_share_of_every_weight_tensor(
    graph: Source, tmp_path: Path, amount: float
):
    out = build_variant(graph.path, tmp_path / "pruned", f"prune:{amount}", quiet=True)
    for model in BERTS + NETS:
        before, after = _stored(graph.path / model), _stored(out / model)
        assert _files(out / model) == _files(graph.path / model)  # same files, shards and index included
        assert list(after) == list(before)
        for name, original in before.items():
            pruned = after[name]
            assert pruned.dtype == original.dtype and pruned.shape == original.shape
            if not (original.is_floating_point() and original.dim() >= 2):
                assert torch.equal(pruned, original), name
                continue
            n, to_prune = original.numel(), round(amount * original.numel())
            zeros, zeros_before = int((pruned == 0).sum()), int((original == 0).sum())
            assert to_prune <= zeros <= to_prune + zeros_before, name
            kept = pruned != 0
            assert torch.equal(pruned[kept], original[kept])  # survivors are untouched
            if 0 < zeros < n:  # and they are the largest by magnitude
                assert original[~kept].abs().max() <= original[kept].abs().min()
    index = "model.safetensors.index.json"
    assert (out / "bert-child" / index).read_text() == (graph.path / "bert-child" / index).read_text()


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
def test_pruning_is_recorded_in_the_truth(graph: Source, built: dict[str, Path]):
    truth = json.loads((built["prune:0.5"] / "truth.json").read_text())
    source = json.loads((graph.path / "truth.json").read_text())
    assert {k: v for k, v in truth.items() if k != "variant"} == source
    variant = truth["variant"]
    assert variant["name"] == "prune:0.5" and variant["amount"] == 0.5
    assert variant["source"] == str(graph.path.resolve())
    assert "l1_unstructured" in variant["method"]
    assert set(variant["models"]) == set(BERTS + NETS)
    assert variant["models"]["bert-child"]["files"] == [
        f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
    ]


# --- fp16 ---------------------------------------------------------------------------------------------------


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
def test_fp16_casts_every_float_tensor_in_the_same_files(graph: Source, built: dict[str, Path]):
    out = built["fp16"]
    for model in BERTS + NETS:
        before, after = _stored(graph.path / model), _stored(out / model)
        assert _files(out / model) == _files(graph.path / model)
        assert list(after) == list(before)
        for name, original in before.items():
            if original.is_floating_point():
                assert after[name].dtype == torch.float16
                assert torch.equal(after[name], original.to(torch.float16)), name
            else:
                assert torch.equal(after[name], original), name
    for model in BERTS:
        assert json.loads((out / model / "config.json").read_text())["dtype"] == "float16"
    index = json.loads((out / "bert-child" / "model.safetensors.index.json").read_text())
    sizes = sum(t.numel() * t.element_size() for t in _stored(out / "bert-child").values())
    assert index["metadata"]["total_size"] == sizes


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
def test_fp16_round_trips_through_mothertree_and_transformers(graph: Source, built: dict[str, Path]):
    out = built["fp16"]
    for model in BERTS + NETS:
        with open_checkpoint(graph.path / model) as before, open_checkpoint(out / model) as after:
            assert list(after.tensors) == list(before.tensors)
            for name, info in after.tensors.items():
                if not info.is_float:
                    continue
                assert info.dtype == "F16"
                expected = before.read(name).astype(np.float16).astype(np.float32)
                np.testing.assert_array_equal(after.read(name), expected)
    reloaded = transformers.BertModel.from_pretrained(out / "bert-root", dtype="auto")
    assert reloaded.embeddings.word_embeddings.weight.dtype == torch.float16


# --- int8 ---------------------------------------------------------------------------------------------------


def _linear_weights(stored: dict[str, Any]) -> list[str]:
    return sorted(name for name, tensor in stored.items() if tensor.dtype == torch.int8)


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
def test_int8_files_are_written_by_bitsandbytes(graph: Source, built: dict[str, Path]):
    out = built["int8"]
    for model in BERTS + NETS:
        assert "model.safetensors" in _files(out / model)
        assert not [name for name in _files(out / model) if name.endswith((".bin", ".index.json"))]
        before, after = _stored(graph.path / model), _stored(out / model)
        int8 = _linear_weights(after)
        assert len(int8) == (13 if model in BERTS else 1)  # every nn.Linear (MobileNetV2: its classifier)
        for name in int8:
            prefix = name.removesuffix("weight")
            # What bitsandbytes' own row-wise quantisation of the fp16 weight gives, bit for bit.
            values, scales, _ = bnb.functional.int8_vectorwise_quant(before[name].to(torch.float16))
            assert torch.equal(after[name], values) and torch.equal(after[prefix + "SCB"], scales)
            assert (
                after[prefix + "weight_format"].dtype == torch.uint8
                and int(after[prefix + "weight_format"]) == 0
            )
        helpers = {n for n in after if n.endswith((".SCB", ".weight_format"))}
        assert set(after) - helpers == set(before) - {"embeddings.position_ids"}
        for name in set(before) & set(after) - set(int8):
            assert torch.equal(after[name], before[name]), name  # not a Linear weight: as it was
    config = json.loads((out / "bert-child" / "config.json").read_text())
    assert config["quantization_config"]["load_in_8bit"] is True and config["dtype"] == "bfloat16"


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
def test_transformers_loads_the_int8_variant_back_quantised(graph: Source, built: dict[str, Path]):
    original = transformers.BertModel.from_pretrained(graph.path / "bert-root").eval()
    quantised = transformers.BertModel.from_pretrained(built["int8"] / "bert-root", device_map="cpu").eval()
    assert isinstance(quantised.encoder.layer[0].attention.self.query, bnb.nn.Linear8bitLt)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "inputs will be cast to float16"
        got, want = quantised(input_ids=ids).last_hidden_state, original(input_ids=ids).last_hidden_state
    assert 0 < float((got - want).norm() / want.norm()) < 0.05


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
def test_int8_reads_back_within_int8_error_of_the_original(graph: Source, built: dict[str, Path]):
    out = built["int8"]
    for model in BERTS + NETS:
        stored = _stored(out / model)
        int8 = _linear_weights(stored)
        with open_checkpoint(graph.path / model) as before, open_checkpoint(out / model) as after:
            assert not [name for name in after.tensors if name.endswith((".SCB", ".weight_format"))]
            for name in int8:
                assert after.tensors[name].dtype == INT8_ROWWISE and after.tensors[name].is_float
                original, read = before.read(name), after.read(name)
                scales = stored[name.removesuffix("weight") + "SCB"].numpy()
                bound = scales[:, None] / 254 + np.abs(original) * 2.0**-11  # half an int8 step + fp16
                assert np.all(np.abs(read - original) <= bound * 1.0001 + 1e-7), name
                relative = float(np.linalg.norm(read - original) / np.linalg.norm(original))
                assert 0 < relative < 0.02, name
                assert not np.array_equal(read, original)


def test_int8_of_an_unknown_plain_state_dict_is_refused(tmp_path: Path):
    from safetensors.torch import save_file

    graph = tmp_path / "graph"
    (graph / "mlp").mkdir(parents=True)
    save_file({"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}, graph / "mlp" / "model.safetensors")
    (graph / "truth.json").write_text('{"edges": []}')
    with pytest.raises(UnsupportedFormatError, match="not a MobileNetV2"):
        build_variant(graph, tmp_path / "out", "int8", quiet=True)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".*"))  # nor a partial build
    # prune and fp16 need no architecture.
    build_variant(graph, tmp_path / "fp16", "fp16", quiet=True)
    assert load_file(tmp_path / "fp16" / "mlp" / "model.safetensors")["fc.weight"].dtype == torch.float16


# --- every variant ------------------------------------------------------------------------------------------


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
@pytest.mark.parametrize("variant", VARIANTS)
def test_adapters_are_copied_unchanged_and_read_on_the_variant_base(
    graph: Source, built: dict[str, Path], variant: str
):
    out = built[variant]
    assert _digest(out / "bert-lora").keys() == _digest(graph.path / "bert-lora").keys()
    for name in _files(graph.path / "bert-lora"):
        assert (out / "bert-lora" / name).read_bytes() == (graph.path / "bert-lora" / name).read_bytes()
    entry = json.loads((out / "truth.json").read_text())["variant"]
    assert list(entry["unchanged"]) == ["bert-lora"] and "adapter" in entry["unchanged"]["bert-lora"]
    result = recover([out])
    assert not result.broken
    assert sorted(m.id for m in result.models) == sorted(["bert-lora", *BERTS, *NETS])
    assert ("bert-root", "bert-lora") in {(e.parent, e.child) for e in result.edges}


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
def test_the_source_graph_is_left_untouched(graph: Source, built: dict[str, Path]):
    assert _digest(graph.path) == graph.digest
    for out in built.values():
        assert (out / "bert-root.info.json").read_text() == "{}"
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no partial build left


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
def test_building_again_does_nothing(graph: Source, built: dict[str, Path]):
    for variant, out in built.items():
        before = _digest(out)
        assert build_variant(graph.path, out, variant, quiet=True) == out
        assert _digest(out) == before
    # The same variant spelled differently is the same variant.
    assert build_variant(graph.path, built["prune:0.5"], " PRUNE:.50", quiet=True) == built["prune:0.5"]


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
@pytest.mark.parametrize("variant", ["prune:0.5", "int8"])
def test_variants_are_deterministic(graph: Source, built: dict[str, Path], tmp_path: Path, variant: str):
    again = build_variant(graph.path, tmp_path / "again", variant, quiet=True)
    for model in BERTS + NETS:
        first, second = _stored(built[variant] / model), _stored(again / model)
        assert list(first) == list(second)
        assert all(torch.equal(first[name], second[name]) for name in first)
        for path in (again / model).glob("*.safetensors"):
            assert path.read_bytes() == (built[variant] / model / path.name).read_bytes()


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
def test_a_variant_never_overlaps_its_source_or_another_variant(
    graph: Source, built: dict[str, Path], tmp_path
):
    for out in (graph.path, graph.path / "variant", graph.path.parent):
        with pytest.raises(InvalidParameterError, match="overlaps the source graph"):
            build_variant(graph.path, out, "fp16", quiet=True)
    with pytest.raises(InvalidParameterError, match="already holds variant `fp16`"):
        build_variant(graph.path, built["fp16"], "int8", quiet=True)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidParameterError, match="not empty"):
        build_variant(graph.path, tmp_path / "busy", "fp16", quiet=True)
    with pytest.raises(CheckpointNotFoundError, match="truth.json"):
        build_variant(graph.path / "bert-root", tmp_path / "x", "fp16", quiet=True)
    assert _digest(graph.path) == graph.digest


@pytest.mark.parametrize("text", ["prune", "prune:0", "prune:0.95", "prune:half", "int4", ""])
def test_unknown_variants_are_refused(text: str):
    with pytest.raises(InvalidParameterError):
        parse_variant(text)


def test_variant_names_are_canonical():
    assert parse_variant("prune:.5").name == "prune:0.5"
    assert parse_variant(" FP16 ").name == "fp16"
    assert parse_variant("int8").amount is None


@pytest.mark.slow  # trains the tiny BERTs of `graph` (or uses a trained family)
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_graphs_of_a_real_family_go_through_the_pipeline(
    bert_family: Path, tmp_path: Path, variant: str
):
    from mothertree.evaluation.metrics import score_edges
    from mothertree.evaluation.truth import load_edges

    out = build_variant(bert_family, tmp_path / "variant", variant, quiet=True)
    result = recover([out])
    assert not result.broken
    assert sorted(m.id for m in result.models) == sorted(p.name for p in bert_family.iterdir() if p.is_dir())
    assert len(result.trees) == 1
    score = score_edges({(e.parent, e.child) for e in result.edges}, load_edges(out / "truth.json"))
    # Measured: every edge, directed too, for all three variants; the undirected tree is what must hold.
    assert score.n_undirected_correct == score.n_edges == 4


def test_every_model_must_be_a_folder_holding_its_weights(tmp_path: Path):
    from safetensors.torch import save_file

    graph = tmp_path / "graph"
    (graph / "cache" / "snapshots" / "abc").mkdir(parents=True)
    save_file({"w": torch.ones(2, 2)}, graph / "cache" / "snapshots" / "abc" / "model.safetensors")
    (graph / "truth.json").write_text('{"edges": []}')
    with pytest.raises(UnsupportedFormatError, match="only in sub-folders"):
        build_variant(graph, tmp_path / "out", "fp16", quiet=True)
    (graph / "cache" / "snapshots" / "abc" / "model.safetensors").rename(graph / "loose.safetensors")
    with pytest.raises(UnsupportedFormatError, match="loose weight file"):
        build_variant(graph, tmp_path / "out", "fp16", quiet=True)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*"))
