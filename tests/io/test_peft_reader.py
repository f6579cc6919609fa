"""PEFT LoRA adapters read as models, checked against peft's own ``merge_and_unload``.

Every adapter here is written by peft ``save_pretrained`` from a tiny, really trained model (BERT, GPT-2 for
Conv1D, a two-layer CNN for Conv2d), and its LoRA factors are trained too, so that ``B != 0`` and the merge
is not the base. Only the error cases that peft cannot produce (a kohya file, a damaged adapter file) are
synthetic, and say so.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_bert import TINY_BERT

from mothertree.errors import (
    CheckpointNotFoundError,
    InvalidCheckpointError,
    InvalidParameterError,
    UnsupportedFormatError,
)
from mothertree.io import (
    Checkpoint,
    ModelRef,
    PeftCheckpoint,
    SafetensorsCheckpoint,
    discover,
    match_base,
    open_checkpoint,
    peft_reader,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

MERGE_HINT = "merge it into its base model (peft `merge_and_unload()`) and save that"
BERT = TINY_BERT


@dataclass(frozen=True)
class Adapter:
    """An adapter folder peft wrote, and the merged model peft itself makes of it."""

    folder: Path
    merged: dict[str, np.ndarray]


def _train(model: Any, inputs: Any, steps: int = 3) -> None:
    # Pull the output towards a fixed target: enough to move every trainable weight (LoRA's B included).
    with torch.no_grad():
        target = torch.randn(_output(model, inputs).shape, generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(_output(model, inputs), target).backward()
        optimizer.step()
    model.eval()


def _output(model: Any, inputs: Any) -> Any:
    if inputs.is_floating_point():  # images for the CNN
        return model(inputs)
    out = model(input_ids=inputs)
    if hasattr(out, "logits"):
        return out.logits
    pooled = getattr(out, "pooler_output", None)
    return out.last_hidden_state.mean(dim=1) + (pooled if pooled is not None else 0)


def _ids() -> Any:
    return torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(1))


def _state(model: Any) -> dict[str, np.ndarray]:
    return {name: tensor.detach().float().numpy().copy() for name, tensor in model.state_dict().items()}


def _lora(base: Any, config: Any, folder: Path, inputs: Any, **save: Any) -> Adapter:
    with warnings.catch_warnings():
        # peft warns about transformers 5 deprecations and about saving embedding layers; neither is ours.
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(base, config)
        _train(model, inputs)
        model.save_pretrained(folder, **save)
        merged = model.merge_and_unload()
    return Adapter(folder, _state(merged))


@dataclass(frozen=True)
class Zoo:
    root: Path  # holds every folder below
    bert_base: Path
    adapters: dict[str, Adapter]
    gpt2_base: Path
    conv_base: Path
    ia3: Path
    dora: Path
    seqcls_base: Path  # the BERT base saved as BertForSequenceClassification: names carry `bert.`
    seqcls_adapter: Adapter  # a LoRA of BertForSequenceClassification: names carry `bert.`, base's don't


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    root = tmp_path_factory.mktemp("peft")
    torch.manual_seed(0)
    bert_config = transformers.BertConfig(**BERT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bert = transformers.BertModel(bert_config)
        _train(bert, _ids(), steps=5)
        bert_base = root / "bert-base"
        bert.save_pretrained(bert_base)

    def fresh_bert() -> Any:
        # peft wraps the model in place; from_pretrained on the absolute path is what makes peft record it.
        return transformers.BertModel.from_pretrained(str(bert_base))

    qv = ["query", "value"]
    variants = {
        "plain": peft.LoraConfig(r=4, lora_alpha=8, target_modules=qv),
        "rslora": peft.LoraConfig(r=4, lora_alpha=8, target_modules=qv, use_rslora=True),
        "patterns": peft.LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=qv,
            rank_pattern={"layer.1.attention.self.query": 2},
            alpha_pattern={"value": 16},
        ),
        # Whole tensors in the adapter (the pooler, query/value biases, the embedding matrix as
        # `save_embedding_layers` saves it) and an embedding LoRA on top of the last.
        "extras": peft.LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=[*qv, "word_embeddings"],
            modules_to_save=["pooler"],
            bias="lora_only",
        ),
        # Every bias trained and saved whole, and the LoRA modules' biases moved by lora_B's bias on top.
        "lora_bias": peft.LoraConfig(r=4, lora_alpha=8, target_modules=qv, lora_bias=True, bias="all"),
    }
    adapters = {
        name: _lora(
            fresh_bert(), config, root / f"lora-{name}", _ids(), save_embedding_layers=name == "extras"
        )
        for name, config in variants.items()
    }
    adapters["bin"] = _lora(
        fresh_bert(), variants["plain"], root / "lora-bin", _ids(), safe_serialization=False
    )

    gpt2_config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpt2_base = root / "gpt2-base"
        transformers.GPT2Model(gpt2_config).save_pretrained(gpt2_base)
        gpt2 = transformers.GPT2Model.from_pretrained(str(gpt2_base))
    # c_attn is a Conv1D [32, 96], attn.c_proj a square one: fan_in_fan_out decides the latter.
    adapters["gpt2"] = _lora(
        gpt2,
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"]),
        root / "lora-gpt2",
        _ids(),
    )

    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    _train(conv, images)
    conv_base = root / "conv-base.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in conv.state_dict().items()}, conv_base)
    adapters["conv"] = _lora(
        conv, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0", "2"]), root / "lora-conv", images
    )

    ia3 = root / "ia3"
    dora = root / "dora"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft.get_peft_model(
            fresh_bert(), peft.IA3Config(target_modules=qv, feedforward_modules=[])
        ).save_pretrained(ia3)
        peft.get_peft_model(
            fresh_bert(), peft.LoraConfig(r=4, target_modules=qv, use_dora=True)
        ).save_pretrained(dora)

        seqcls = transformers.BertForSequenceClassification(transformers.BertConfig(**BERT, num_labels=3))
        seqcls.bert.load_state_dict(bert.state_dict())
        seqcls_base = root / "bert-cls-base"
        seqcls.save_pretrained(seqcls_base)
        wrapped = transformers.BertForSequenceClassification(transformers.BertConfig(**BERT, num_labels=3))
        wrapped.bert.load_state_dict(bert.state_dict())
    seqcls_adapter = _lora(
        wrapped,
        peft.LoraConfig(r=4, lora_alpha=8, target_modules=qv, modules_to_save=["classifier"]),
        root / "lora-cls",
        _ids(),
    )
    return Zoo(root, bert_base, adapters, gpt2_base, conv_base, ia3, dora, seqcls_base, seqcls_adapter)


def _peft(zoo: Zoo, name: str, base: Path | None = None) -> PeftCheckpoint:
    base = base or (zoo.gpt2_base if name == "gpt2" else zoo.conv_base if name == "conv" else zoo.bert_base)
    return PeftCheckpoint(zoo.adapters[name].folder, open_checkpoint(base))


def _assert_merged(
    checkpoint: Checkpoint, merged: dict[str, np.ndarray], rename: Callable[[str], str]
) -> None:
    assert {rename(name) for name in checkpoint.tensors} == set(merged)
    for name, info in checkpoint.tensors.items():
        value = checkpoint.read(name)
        assert value.dtype == np.float32 and value.shape == info.shape, name
        np.testing.assert_allclose(value, merged[rename(name)], rtol=0, atol=1e-6, err_msg=name)


VARIANTS = ["plain", "rslora", "patterns", "extras", "lora_bias", "bin", "gpt2", "conv"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_reads_what_merge_and_unload_makes(zoo: Zoo, variant: str) -> None:
    adapter = zoo.adapters[variant]
    with _peft(zoo, variant) as checkpoint:
        assert checkpoint.weights_file.name == f"adapter_model.{'bin' if variant == 'bin' else 'safetensors'}"
        _assert_merged(checkpoint, adapter.merged, rename=lambda name: name)
        base = checkpoint.base
        changed = {
            name for name in checkpoint.tensors if not np.array_equal(checkpoint.read(name), base.read(name))
        }
        low_rank = {name for name in checkpoint.tensors if checkpoint.rank_of(name) is not None}
    assert low_rank and low_rank <= changed  # trained factors: every update moves its tensor


@pytest.mark.slow
def test_fan_in_fan_out_is_decided_by_shape(zoo: Zoo, tmp_path: Path) -> None:
    # peft saves whichever `fan_in_fan_out` it set last; a wrong flag must not transpose a non-square Conv1D.
    folder = shutil.copytree(zoo.adapters["gpt2"].folder, tmp_path / "lora")
    _edit_config(folder, fan_in_fan_out=False)
    merged = zoo.adapters["gpt2"].merged
    with PeftCheckpoint(folder, open_checkpoint(zoo.gpt2_base)) as checkpoint:
        for name in ("h.0.attn.c_attn.weight", "h.0.mlp.c_proj.weight"):  # [32, 96] and [128, 32]
            np.testing.assert_allclose(checkpoint.read(name), merged[name], rtol=0, atol=1e-6)
        # A square one cannot tell: the flag decides, and here it is wrong.
        assert not np.allclose(checkpoint.read("h.0.attn.c_proj.weight"), merged["h.0.attn.c_proj.weight"])


@pytest.mark.slow
def test_large_updates_are_added_block_by_block(zoo: Zoo, monkeypatch: pytest.MonkeyPatch) -> None:
    # A block smaller than one row of the tiny models exercises the same path a 4096-wide matrix takes.
    monkeypatch.setattr(peft_reader, "_BLOCK_ELEMENTS", 20)
    for variant in ("plain", "gpt2", "extras", "lora_bias", "conv"):
        with _peft(zoo, variant) as checkpoint:
            _assert_merged(checkpoint, zoo.adapters[variant].merged, rename=lambda name: name)


@pytest.mark.slow
def test_tensors_are_the_bases(zoo: Zoo) -> None:
    with _peft(zoo, "plain") as checkpoint:
        assert dict(checkpoint.tensors) == dict(checkpoint.base.tensors)
        assert list(checkpoint.tensors) == list(checkpoint.base.tensors)
        assert checkpoint.base_name == str(zoo.bert_base)
        assert checkpoint.path == zoo.adapters["plain"].folder
    with _peft(zoo, "extras") as checkpoint:
        # Replaced whole (modules_to_save, save_embedding_layers): listed once, under the base's name.
        assert set(checkpoint.tensors) == set(checkpoint.base.tensors)
        saved = SafetensorsCheckpoint(checkpoint.weights_file).tensors
        assert "base_model.model.embeddings.word_embeddings.base_layer.weight" in saved
        assert "base_model.model.pooler.dense.weight" in saved
        assert checkpoint.rank_of("embeddings.word_embeddings.weight") == 4


@pytest.mark.slow
def test_rank_of(zoo: Zoo) -> None:
    query, value = (
        "encoder.layer.{}.attention.self.query.weight",
        "encoder.layer.{}.attention.self.value.weight",
    )
    with _peft(zoo, "patterns") as checkpoint:
        assert [checkpoint.rank_of(query.format(i)) for i in (0, 1)] == [4, 2]
        assert [checkpoint.rank_of(value.format(i)) for i in (0, 1)] == [4, 4]
        assert checkpoint.rank_of("encoder.layer.0.attention.self.key.weight") is None
        assert checkpoint.rank_of("encoder.layer.0.attention.self.query.bias") is None
        # alpha_pattern `value` gives 16 / 4: the merge test checks the values, this the plan.
        assert {u.module: u.scaling for u in checkpoint._updates.values()}[
            "encoder.layer.0.attention.self.value"
        ] == 4
    with _peft(zoo, "extras") as checkpoint:
        assert checkpoint.rank_of("embeddings.word_embeddings.weight") == 4
        assert checkpoint.rank_of("pooler.dense.weight") is None  # replaced whole, not low-rank
    with _peft(zoo, "rslora") as checkpoint:
        assert checkpoint._updates[query.format(0)].scaling == pytest.approx(8 / 2)  # alpha / sqrt(r)


@pytest.mark.slow
def test_base_saved_with_a_prefix(zoo: Zoo) -> None:
    # The adapter was trained on BertModel (`encoder.…`); the base checkpoint says `bert.encoder.…`.
    merged = zoo.adapters["plain"].merged
    with _peft(zoo, "plain", base=zoo.seqcls_base) as checkpoint:
        assert checkpoint.rank_of("bert.encoder.layer.0.attention.self.query.weight") == 4
        for name in checkpoint.tensors:
            expected = merged.get(name.removeprefix("bert."))
            if expected is None:  # the classifier, which the adapter never saw
                np.testing.assert_array_equal(checkpoint.read(name), checkpoint.base.read(name))
            else:
                np.testing.assert_allclose(checkpoint.read(name), expected, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_adapter_with_a_prefix_the_base_lacks(zoo: Zoo) -> None:
    # The adapter wraps BertForSequenceClassification (`bert.encoder.…`, plus its classifier via
    # modules_to_save); the base is the plain BertModel checkpoint.
    adapter = zoo.seqcls_adapter
    with PeftCheckpoint(adapter.folder, open_checkpoint(zoo.bert_base)) as checkpoint:
        assert list(checkpoint.tensors)[-2:] == ["classifier.bias", "classifier.weight"]
        assert checkpoint.tensors["classifier.weight"].shape == (3, 32)
        _assert_merged(
            checkpoint,
            adapter.merged,
            rename=lambda name: name if name.startswith("classifier") else f"bert.{name}",
        )


@pytest.mark.slow
def test_discovery_and_match_base(zoo: Zoo) -> None:
    models, broken = discover(zoo.root)
    by_id = {model.id: model for model in models}
    lora = by_id["lora-plain"]
    assert lora == ModelRef(
        "lora-plain",
        zoo.adapters["plain"].folder,
        zoo.adapters["plain"].folder,
        declared_base_models=(str(zoo.bert_base),),  # the config's, and the README peft wrote says the same
        adapter_base=str(zoo.bert_base),
    )
    assert by_id["lora-conv"].adapter_base == ""  # a base built in code has no name
    assert by_id["lora-conv"].declared_base_models == ()
    assert by_id["bert-base"].adapter_base is None
    assert {b.path for b in broken} == {zoo.ia3, zoo.dora}

    assert match_base(lora.adapter_base or "", models) == by_id["bert-base"]  # by path, as peft wrote it
    assert match_base("", models) is None

    def resolve(name: str) -> Checkpoint | None:
        ref = match_base(name, models)
        return open_checkpoint(ref) if ref is not None else None

    with open_checkpoint(lora, resolve_base=resolve) as checkpoint:
        assert isinstance(checkpoint, PeftCheckpoint)
        assert checkpoint.path == lora.path
        _assert_merged(checkpoint, zoo.adapters["plain"].merged, rename=lambda name: name)


@pytest.mark.slow
def test_match_base_by_name(tmp_path: Path, zoo: Zoo, make_cache_entry: Callable[..., Path]) -> None:
    refs = [
        ModelRef("bert-base", tmp_path / "bert-base", tmp_path / "bert-base"),
        ModelRef("group/gpt2", tmp_path / "group" / "gpt2", tmp_path / "group" / "gpt2"),
        ModelRef("lora", tmp_path / "lora", tmp_path / "lora", adapter_base="org/lora"),
    ]
    assert match_base("org/bert-base", refs) == refs[0]  # last component
    assert match_base("/moved/away/bert-base/", refs) == refs[0]  # a path that is gone: its folder name
    assert match_base("gpt2", refs) == refs[1]
    assert match_base("org/lora", refs) is None  # an adapter is never a base
    assert match_base("org/unknown", refs) is None

    entry = make_cache_entry(tmp_path / "hub", "org/bert-base", zoo.bert_base)
    models, _ = discover(tmp_path / "hub")
    assert [m.id for m in models] == ["org/bert-base"]
    both = [*refs, *models]
    assert match_base("org/bert-base", both) == models[0]  # an exact id beats a last component
    assert match_base(str(entry), both) == models[0]
    with pytest.raises(InvalidParameterError) as caught:
        match_base("other/bert-base", both)
    assert str(caught.value) == (
        "the base model `other/bert-base` an adapter declares matches several models: "
        "`bert-base`, `org/bert-base`"
    )
    assert caught.value.hint == "name the base model's folder with `--base PATH`"


@pytest.mark.slow
def test_adapter_folder_in_the_hf_cache(
    tmp_path: Path, zoo: Zoo, make_cache_entry: Callable[..., Path]
) -> None:
    entry = make_cache_entry(tmp_path, "org/lora", zoo.adapters["plain"].folder)
    models, broken = discover(entry)
    assert broken == [] and [(m.id, m.adapter_base) for m in models] == [("org/lora", str(zoo.bert_base))]
    with open_checkpoint(entry, resolve_base=lambda name: open_checkpoint(name)) as checkpoint:
        assert checkpoint.path == entry
        _assert_merged(checkpoint, zoo.adapters["plain"].merged, rename=lambda name: name)


@pytest.mark.slow
def test_adapter_weights_file_given_as_the_path(zoo: Zoo) -> None:
    folder = zoo.adapters["plain"].folder
    models, _ = discover(folder / "adapter_model.safetensors")
    assert [(m.id, m.path) for m in models] == [("lora-plain", folder)]
    with open_checkpoint(folder / "adapter_model.safetensors", resolve_base=open_checkpoint) as checkpoint:
        assert isinstance(checkpoint, PeftCheckpoint)


# --- errors -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_missing_base(zoo: Zoo, tmp_path: Path) -> None:
    folder = zoo.adapters["plain"].folder
    expected = f"`{folder}` is a LoRA adapter of `{zoo.bert_base}`, which is not in this collection"
    for resolver in (None, lambda name: None):
        with pytest.raises(CheckpointNotFoundError) as caught:
            open_checkpoint(folder, resolve_base=resolver)
        assert str(caught.value) == expected
        assert (
            caught.value.hint
            == "add the base model's folder to the collection, or name it with `--base PATH`"
        )

    with pytest.raises(CheckpointNotFoundError) as caught:
        open_checkpoint(zoo.adapters["conv"].folder)
    assert str(caught.value) == (
        f"`{zoo.adapters['conv'].folder}` is a LoRA adapter whose `adapter_config.json` names no base model"
    )
    assert caught.value.hint == "name the base model's folder with `--base PATH`"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("ia3", "describes a PEFT `IA3` adapter; only LoRA adapters are supported"),
        ("dora", "describes a DoRA adapter (`use_dora`); only plain LoRA adapters are supported"),
    ],
)
def test_adapters_that_are_not_plain_lora(zoo: Zoo, which: str, message: str) -> None:
    folder = zoo.ia3 if which == "ia3" else zoo.dora
    expected = f"`{folder / 'adapter_config.json'}` {message}"
    models, broken = discover(folder)
    assert models == [] and [(b.path, str(b.error)) for b in broken] == [(folder, expected)]
    with pytest.raises(UnsupportedFormatError) as caught:
        open_checkpoint(folder, resolve_base=open_checkpoint)
    assert str(caught.value) == expected
    assert caught.value.hint == MERGE_HINT


@pytest.mark.slow
def test_residual_initialisation_is_refused(zoo: Zoo, tmp_path: Path) -> None:
    folder = shutil.copytree(zoo.adapters["plain"].folder, tmp_path / "pissa")
    _edit_config(folder, init_lora_weights="pissa_niter_4")
    with pytest.raises(UnsupportedFormatError) as caught:
        open_checkpoint(folder, resolve_base=open_checkpoint)
    assert str(caught.value) == (
        f"`{folder / 'adapter_config.json'}` describes a PiSSA adapter "
        '(`init_lora_weights: "pissa_niter_4"`): its factors apply to the residual model peft wrote, '
        "not to the base model"
    )


@pytest.mark.slow
def test_missing_adapter_weights(zoo: Zoo, tmp_path: Path) -> None:
    folder = shutil.copytree(zoo.adapters["plain"].folder, tmp_path / "lora")
    (folder / "adapter_model.safetensors").unlink()
    models, broken = discover(folder)
    assert [m.id for m in models] == ["lora"] and broken == []  # like any model: open_checkpoint says what
    asked: list[str] = []
    with pytest.raises(CheckpointNotFoundError) as caught:
        open_checkpoint(models[0], resolve_base=lambda name: asked.append(name))
    assert str(caught.value) == (
        f"`{folder}` holds `adapter_config.json` but no adapter weights "
        "(`adapter_model.safetensors` or `adapter_model.bin`)"
    )
    assert caught.value.hint == "download or save the adapter again: peft `save_pretrained` writes both files"
    assert asked == []  # the adapter's own files are checked before its base is looked for


@pytest.mark.slow
def test_unpaired_factor(zoo: Zoo, tmp_path: Path) -> None:
    # Synthetic damage to a real adapter file: one lora_B dropped.
    folder = shutil.copytree(zoo.adapters["plain"].folder, tmp_path / "lora")
    weights = folder / "adapter_model.safetensors"
    tensors = safetensors_torch.load_file(weights)
    module = "base_model.model.encoder.layer.1.attention.self.value"
    del tensors[f"{module}.lora_B.weight"]
    safetensors_torch.save_file(tensors, weights)
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(folder, resolve_base=open_checkpoint)
    assert str(caught.value) == f"`{weights}` holds `{module}.lora_A.weight` but no `{module}.lora_B.weight`"


@pytest.mark.slow
def test_adapter_of_another_model(zoo: Zoo) -> None:
    folder = zoo.adapters["plain"].folder
    weights = folder / "adapter_model.safetensors"
    with pytest.raises(InvalidCheckpointError) as caught:
        PeftCheckpoint(folder, open_checkpoint(zoo.gpt2_base))
    assert str(caught.value) == (
        f"`{weights}` updates `encoder.layer.0.attention.self.query.weight`, but the base model "
        f"`{zoo.gpt2_base}` has no such tensor"
    )
    assert "check `base_model_name_or_path` in `adapter_config.json`" in (caught.value.hint or "")


@pytest.mark.slow
def test_adapter_of_a_wider_model(zoo: Zoo, tmp_path: Path) -> None:
    wide = tmp_path / "wide-bert"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.BertModel(transformers.BertConfig(**{**BERT, "hidden_size": 48})).save_pretrained(wide)
    weights = zoo.adapters["plain"].folder / "adapter_model.safetensors"
    with pytest.raises(InvalidCheckpointError) as caught:
        PeftCheckpoint(zoo.adapters["plain"].folder, open_checkpoint(wide))
    assert str(caught.value) == (
        f"`{weights}`: the LoRA update of `encoder.layer.0.attention.self.query` has shape [32, 32], but "
        f"`encoder.layer.0.attention.self.query.weight` of the base model `{wide}` has shape [48, 48]"
    )


@pytest.mark.slow
def test_ambiguous_module_name(zoo: Zoo, tmp_path: Path) -> None:
    # Synthetic: a real factor pair renamed to a module name that both BERT layers end with.
    folder = shutil.copytree(zoo.adapters["plain"].folder, tmp_path / "lora")
    weights = folder / "adapter_model.safetensors"
    tensors = safetensors_torch.load_file(weights)
    layer = "base_model.model.encoder.layer.0.attention.self.query"
    renamed = {
        f"base_model.model.attention.self.query.lora_{ab}.weight": tensors[f"{layer}.lora_{ab}.weight"]
        for ab in "AB"
    }
    safetensors_torch.save_file(renamed, weights)
    with pytest.raises(InvalidCheckpointError) as caught:
        PeftCheckpoint(folder, open_checkpoint(zoo.bert_base))
    assert str(caught.value) == (
        f"`{weights}`: `attention.self.query.weight` matches several tensors of the base model "
        f"`{zoo.bert_base}` (`encoder.layer.0.attention.self.query.weight`, "
        "`encoder.layer.1.attention.self.query.weight`)"
    )


@pytest.mark.slow
def test_failed_open_closes_the_base(zoo: Zoo, tmp_path: Path) -> None:
    closed: list[str] = []

    class Base(SafetensorsCheckpoint):
        def close(self) -> None:
            closed.append(self.path.name)
            super().close()

    with pytest.raises(InvalidCheckpointError):
        PeftCheckpoint(zoo.adapters["plain"].folder, Base(zoo.gpt2_base))
    assert closed == ["gpt2-base"]


def test_kohya_lora_file(tmp_path: Path) -> None:
    # Synthetic: kohya's sd-scripts write these for Stable Diffusion; the key names are all that matters.
    file = tmp_path / "style.safetensors"
    prefix = "lora_unet_down_blocks_0_attentions_0_proj_in"
    safetensors_torch.save_file(
        {
            f"{prefix}.lora_down.weight": torch.randn(4, 32),
            f"{prefix}.lora_up.weight": torch.zeros(32, 4),
            f"{prefix}.alpha": torch.tensor(4.0),
        },
        file,
        metadata={"ss_base_model_version": "sd_v1", "ss_network_dim": "4"},
    )
    models, _ = discover(file)
    assert [m.id for m in models] == ["style"]  # found as a model: only its key names tell
    with pytest.raises(UnsupportedFormatError) as caught:
        open_checkpoint(models[0])
    assert str(caught.value) == f"`{file}` is a kohya-style LoRA file; only PEFT adapters are supported"
    assert caught.value.hint == (
        "convert it to a PEFT adapter, or merge it into its base model "
        "(kohya's `networks/merge_lora.py`) and pass the merged model"
    )


@pytest.mark.slow
def test_adapter_weights_without_their_config(zoo: Zoo, tmp_path: Path) -> None:
    file = tmp_path / "loose.safetensors"
    shutil.copyfile(zoo.adapters["plain"].folder / "adapter_model.safetensors", file)
    with pytest.raises(UnsupportedFormatError) as caught:
        open_checkpoint(file)
    first = next(iter(SafetensorsCheckpoint(file).tensors))
    assert (
        str(caught.value)
        == f"`{file}` holds PEFT LoRA factors (`{first}`) but no `adapter_config.json` lies beside it"
    )


@pytest.mark.slow
def test_bad_config(zoo: Zoo, tmp_path: Path) -> None:
    folder = shutil.copytree(zoo.adapters["plain"].folder, tmp_path / "lora")
    config = folder / "adapter_config.json"
    config.write_text("{not json")
    models, broken = discover(folder)
    assert models == [] and [str(b.error) for b in broken] == [
        f"`{config}` is not a valid PEFT adapter config: invalid JSON at line 1"
    ]
    _edit_config(folder, replace={"peft_type": "LORA", "r": 0})
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(folder)
    assert (
        str(caught.value)
        == f"`{config}` is not a valid PEFT adapter config: `r` is 0, not a positive integer"
    )


@pytest.mark.slow
def test_rank_that_disagrees_with_the_config(zoo: Zoo, tmp_path: Path) -> None:
    folder = shutil.copytree(zoo.adapters["patterns"].folder, tmp_path / "lora")
    _edit_config(folder, rank_pattern={})  # layer 1's query is rank 2 in the file, now 4 by the config
    with pytest.raises(InvalidCheckpointError) as caught:
        PeftCheckpoint(folder, open_checkpoint(zoo.bert_base))
    assert str(caught.value) == (
        f"`{folder / 'adapter_model.safetensors'}` holds rank 2 factors for "
        f"`encoder.layer.1.attention.self.query`, but `{folder / 'adapter_config.json'}` gives it rank 4"
    )


def _edit_config(folder: Path, *, replace: dict[str, Any] | None = None, **changes: Any) -> None:
    path = folder / "adapter_config.json"
    config = replace if replace is not None else {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(config))
