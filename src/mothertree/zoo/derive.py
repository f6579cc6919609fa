"""Models made from other models without training, by the tools users make them with (a node's ``derive``).

A hub holds more than fine-tunes: copies of a model re-saved in another layout or dtype, quantised exports,
pruned copies and merges. Each derivation here is made the way a user makes it, and names the relation it
makes, in Hugging Face's words where it has one (``quantized``, ``merge``; ``duplicate`` and ``pruned`` are
ours):

| derive | relation | family | made with |
|---|---|---|---|
| ``copy`` | duplicate | both | a byte copy of the folder |
| ``bf16``, ``fp16`` | duplicate | text | ``AutoModel`` cast, ``save_pretrained`` |
| ``fp16`` | duplicate | vision | every float tensor cast (``zoo.variants``) |
| ``safetensors`` | duplicate | vision | the ``.bin`` state dict re-saved as safetensors |
| ``onnx`` | duplicate | text | ``torch.onnx.export`` (fp32) |
| ``gguf-f16`` | duplicate | text | llama.cpp's ``convert_hf_to_gguf.py --outtype f16`` |
| ``onnx-int8``, ``onnx-int8-channel`` | quantized | text | onnxruntime ``quantize_dynamic`` (per channel) |
| ``gguf-q8_0`` | quantized | text | ``convert_hf_to_gguf.py --outtype q8_0`` |
| ``gguf-q4_0`` | quantized | text | the converter (f32), then the ``gguf`` package's Q4_0 |
| ``int8`` | quantized | text | bitsandbytes LLM.int8 (``zoo.variants``) |
| ``nf4`` | quantized | text | transformers ``load_in_4bit`` (bitsandbytes NF4) |
| ``prune:<amount>`` | pruned | both | ``torch.nn.utils.prune`` by magnitude (``zoo.variants``) |
| ``linear``, ``slerp``, ``ties``, ``dare_ties`` | merge | both | mergekit's arithmetic (``zoo.merges``) |

A TIES or DARE-TIES merge is made onto the models' nearest common ancestor, as its authors would. ONNX
exports of MobileNetV2 are not made: the exporter folds BatchNorm into the convolutions, so the file holds
no tensor its source holds. bitsandbytes LLM.int8 of a MobileNetV2 changes only its classifier, which is
not compared, so it is not made either.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import InvalidParameterError

__all__ = ["DERIVATIONS", "MERGES", "Derivation", "derivation", "derive_model"]

Relation = Literal["duplicate", "quantized", "pruned", "merge"]
MERGES = ("linear", "slerp", "ties", "dare_ties")
_BOTH = ("vision", "text")


@dataclass(frozen=True)
class Derivation:
    """One way of making a model from others: the relation it makes and the tool that makes it."""

    name: str
    relation: Relation
    families: tuple[str, ...]
    how: str


DERIVATIONS: dict[str, Derivation] = {
    d.name: d
    for d in (
        Derivation("copy", "duplicate", _BOTH, "byte copy"),
        Derivation("bf16", "duplicate", ("text",), "bf16 cast, save_pretrained"),
        Derivation("fp16", "duplicate", _BOTH, "fp16 cast"),
        Derivation("safetensors", "duplicate", ("vision",), "the .bin state dict re-saved as safetensors"),
        Derivation("onnx", "duplicate", ("text",), "torch.onnx.export, fp32"),
        Derivation("gguf-f16", "duplicate", ("text",), "convert_hf_to_gguf.py --outtype f16"),
        Derivation("onnx-int8", "quantized", ("text",), "onnxruntime quantize_dynamic, int8"),
        Derivation(
            "onnx-int8-channel", "quantized", ("text",), "onnxruntime quantize_dynamic, int8 per channel"
        ),
        Derivation("gguf-q8_0", "quantized", ("text",), "convert_hf_to_gguf.py --outtype q8_0"),
        Derivation("gguf-q4_0", "quantized", ("text",), "convert_hf_to_gguf.py, then gguf Q4_0"),
        Derivation("int8", "quantized", ("text",), "bitsandbytes LLM.int8"),
        Derivation("nf4", "quantized", ("text",), "transformers load_in_4bit, NF4 (bitsandbytes)"),
        Derivation("prune", "pruned", _BOTH, "torch.nn.utils.prune by magnitude, per tensor"),
        Derivation("linear", "merge", _BOTH, "mergekit linear"),
        Derivation("slerp", "merge", _BOTH, "mergekit SLERP"),
        Derivation("ties", "merge", _BOTH, "mergekit TIES, density 0.5"),
        Derivation("dare_ties", "merge", _BOTH, "mergekit DARE-TIES, density 0.5"),
    )
}


def derivation(name: str, family: str) -> Derivation:
    """The derivation ``name`` (``prune:<amount>`` for pruning) for ``family``.

    Raises:
        InvalidParameterError: an unknown name, or one not made for this family.
    """
    from .variants import parse_variant

    kind = name.split(":", 1)[0]
    known = [d for d, spec in DERIVATIONS.items() if family in spec.families]
    if (
        kind not in DERIVATIONS
        or family not in DERIVATIONS[kind].families
        or (kind == "prune") != (":" in name)
    ):
        spelled = ", ".join("prune:<amount>" if d == "prune" else d for d in known)
        raise InvalidParameterError(f"unknown {family} derivation {name!r}", hint=f"{family}: {spelled}")
    if kind == "prune":
        parse_variant(name)  # checks the amount
    return DERIVATIONS[kind]


def derive_model(
    name: str,
    family: str,
    sources: Sequence[Path],
    folder: Path,
    *,
    weights: Sequence[float] = (),
    base: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Make model ``folder`` (not existing yet) from ``sources`` (a merge: several) by ``name``.

    ``base`` is a TIES merge's common ancestor. Returns what ``truth.json`` records of the model.
    """
    spec = derivation(name, family)
    kind = name.split(":", 1)[0]
    source = sources[0]
    with tempfile.TemporaryDirectory(prefix="mothertree-derive-") as scratch_dir:
        scratch = Path(scratch_dir)
        if kind in MERGES:
            _merge(kind, sources, folder, weights, base, seed)
        elif kind == "copy":
            shutil.copytree(source, folder)
        elif kind in ("prune", "int8") or (kind == "fp16" and family == "vision"):
            from .variants import derive_copy

            derive_copy(source, folder, name)
        elif kind in ("bf16", "fp16"):
            _cast_text(source, folder, kind)
        elif kind == "safetensors":
            _resave_safetensors(source, folder)
        elif kind == "nf4":
            _nf4(source, folder)
        else:
            _export(kind, source, folder, scratch)
    return {"derived": name, "relation": spec.relation, "how": spec.how}


def _merge(
    method: str,
    sources: Sequence[Path],
    folder: Path,
    weights: Sequence[float],
    base: Path | None,
    seed: int,
) -> None:
    from .merges import merge_models

    given = list(weights) or [1.0 / len(sources)] * len(sources)
    if method == "slerp":
        merge_models("slerp", sources, folder, t=given[1] / sum(given))
    elif method == "linear":
        merge_models("linear", sources, folder, weights=given)
    else:
        merge_models(method, sources, folder, weights=given, base=base, seed=seed)  # type: ignore[arg-type]


def _cast_text(source: Path, folder: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source, dtype=torch.float32)
    model.to(torch.bfloat16 if dtype == "bf16" else torch.float16).save_pretrained(folder)


def _resave_safetensors(source: Path, folder: Path) -> None:
    from .files import WEIGHT_FILES, load_state_dict, save_state_dict

    folder.mkdir()
    save_state_dict(load_state_dict(source / WEIGHT_FILES["bin"]), folder, "safetensors")


def _nf4(source: Path, folder: Path) -> None:
    import transformers

    config = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    model = transformers.AutoModel.from_pretrained(source, quantization_config=config, device_map="cpu")
    model.save_pretrained(folder)


def _export(kind: str, source: Path, folder: Path, scratch: Path) -> None:
    """ONNX and GGUF files, written into ``folder`` as ``model.onnx`` / ``model.gguf``."""
    from . import formats
    from .text import minilm_path

    folder.mkdir()
    if kind == "onnx":
        formats.export_onnx(source, folder / "model.onnx")
    elif kind.startswith("onnx-int8"):
        exported = formats.export_onnx(source, scratch / "model.onnx")
        formats.quantize_onnx(exported, folder / "model.onnx", per_channel=kind.endswith("channel"))
    elif kind == "gguf-q4_0":
        f32 = formats.convert_gguf(source, scratch / "model.gguf", tokenizer=minilm_path())
        formats.requantize_gguf(f32, folder / "model.gguf", "Q4_0")
    else:
        outtype = kind.removeprefix("gguf-")
        formats.convert_gguf(source, folder / "model.gguf", outtype=outtype, tokenizer=minilm_path())
