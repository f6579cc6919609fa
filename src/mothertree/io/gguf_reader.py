"""``.gguf`` files (llama.cpp): tensors read dequantised under the Hugging Face names they came from.

A GGUF file is a header (metadata key-values, then each tensor's name, ggml type, dimensions and offset)
and the tensors' bytes, aligned. Opening parses the header with the ``gguf`` package (llama.cpp's own
reader) and keeps only each tensor's byte range; reading one tensor reads that range from the file and
dequantises it with ``gguf.quants.dequantize`` (F32/F16/BF16, Q8_0, Q4_0/Q4_1/Q5_0/Q5_1 and the K-quants
Q2_K-Q6_K, as llama.cpp defines them), so one tensor is in memory at a time.

Names. llama.cpp's converter (``convert_hf_to_gguf.py``) renames tensors by ``gguf.TensorNameMap``
(``model.layers.0.self_attn.q_proj.weight`` -> ``blk.0.attn_q.weight``). The map lists every Hugging Face
name each llama.cpp name may come from, across model families, so the name listed is the candidate of the
family the file's ``general.architecture`` is converted from (``embeddings.``/``encoder.layer.`` for BERT,
``model.``/``lm_head`` for the decoder families); a tensor with no such candidate keeps its GGUF name.
ggml's dimensions run fastest first; tensors are listed in numpy's order, as PyTorch holds them.

Undone: the converter permutes the rows of ``q_proj`` and ``k_proj`` for the ``llama`` architecture (its
rotary embedding pairs dimensions differently from Hugging Face's), so those weights are permuted back.

Not read: a GGUF split into several files by ``llama-gguf-split`` (``general.split.count`` > 1), refused
with a hint; tensor types ``gguf.quants`` cannot dequantise (the IQ* formats), refused by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import (
    InvalidCheckpointError,
    UnsupportedFormatError,
    UnsupportedQuantizationError,
)
from ._files import import_optional, shown
from ._guards import boundary_of, check_regular, open_regular, os_error
from .types import Checkpoint, TensorInfo

# The Hugging Face name families the converter reads, by GGUF architecture: the candidate chosen is the
# first of ``gguf.TensorNameMap``'s that starts with one of these.
_BERT_FAMILY = ("embeddings.", "encoder.layer.", "pooler.")
_DECODER_FAMILY = ("model.", "lm_head")
_FAMILIES = {"bert": _BERT_FAMILY, "nomic-bert": _BERT_FAMILY, "jina-bert-v2": _BERT_FAMILY}
# Architectures whose converter permutes q_proj/k_proj rows (``LlamaModel.permute``).
_PERMUTED = frozenset({"llama"})
_NATIVE: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8")}
_SUFFIXES = (".weight", ".bias")


@dataclass(frozen=True)
class _Stored:
    """Where one tensor's bytes lie and how to turn them into floats."""

    offset: int
    n_bytes: int
    ggml_type: str
    byte_shape: tuple[int, ...]  # the shape gguf's reader gives the raw data (rows x bytes for quantised)
    permute_heads: int | None = None  # undo the converter's rotary permutation, with this many heads


class GgufCheckpoint(Checkpoint):
    """One ``.gguf`` file, its tensors under Hugging Face names (see the module docstring)."""

    format = "gguf"

    def __init__(self, path: str | os.PathLike[str], *, boundary: Path | None = None) -> None:
        self.path = Path(path)
        # Reads go to the file; ``path`` becomes the model's path as the user gave it (its folder).
        self._file = self.path
        self._boundary = boundary if boundary is not None else boundary_of(self.path)
        self._gguf = import_optional("gguf", "`.gguf` files", "formats")
        size = check_regular(self.path, self._boundary)
        try:
            reader = self._gguf.GGUFReader(self.path, "r")
        except Exception as exc:  # the reader raises ValueError, struct.error, IndexError, ... on garbage
            raise InvalidCheckpointError(
                f"{shown(self.path)} is not a readable GGUF file ({type(exc).__name__}: {exc})",
                hint="the file may be truncated or not GGUF at all; download or convert it again",
                path=self.path,
            ) from None
        try:
            self._tensors, self._stored = self._list(reader, size)
        finally:
            del reader  # its memory map: reads go through one file handle instead

    @property
    def tensors(self) -> Mapping[str, TensorInfo]:
        return self._tensors

    def read(self, name: str) -> np.ndarray:
        stored = self._stored[name]
        with open_regular(self._file, self._boundary) as file:
            try:
                file.seek(stored.offset)
                raw = file.read(stored.n_bytes)
            except OSError as exc:
                raise os_error(self._file, exc) from None
        if len(raw) != stored.n_bytes:
            raise InvalidCheckpointError(
                f"{shown(self.path)} ends inside the tensor `{name}`",
                hint="download it again",
                path=self.path,
            )
        values = self._floats(raw, stored)
        if stored.permute_heads is not None:
            values = _unpermuted(values, stored.permute_heads)
        return np.ascontiguousarray(values, dtype=np.float32)

    def _floats(self, raw: bytes, stored: _Stored) -> np.ndarray:
        if stored.ggml_type in _NATIVE:
            return np.frombuffer(raw, dtype=_NATIVE[stored.ggml_type]).reshape(stored.byte_shape)
        quants = self._gguf.quants
        kind = self._gguf.GGMLQuantizationType[stored.ggml_type]
        data = np.frombuffer(raw, dtype=np.uint8).reshape(stored.byte_shape)
        try:
            return np.asarray(quants.dequantize(data, kind))
        except NotImplementedError:
            raise UnsupportedQuantizationError(
                f"{shown(self.path)} holds {stored.ggml_type} tensors, which the `gguf` package cannot "
                "dequantise",
                hint="convert the model with llama.cpp to Q8_0, a K-quant or F16, or leave it out",
                path=self.path,
            ) from None

    def _list(self, reader: Any, size: int) -> tuple[Mapping[str, TensorInfo], dict[str, _Stored]]:
        fields = reader.fields
        split = _field(fields, "split.count", default=1)
        if int(split) > 1:
            raise UnsupportedFormatError(
                f"{shown(self.path)} is one of {split} parts of a split GGUF model",
                hint="merge the parts into one file with `llama-gguf-split --merge`, then pass that file",
                path=self.path,
            )
        arch = str(_field(fields, "general.architecture", default=""))
        n_blocks = int(_field(fields, f"{arch}.block_count", default=0))
        heads = _field(fields, f"{arch}.attention.head_count", default=None)
        kv_heads = _field(fields, f"{arch}.attention.head_count_kv", default=heads)
        names = self._hf_names(arch, n_blocks)
        listed: dict[str, TensorInfo] = {}
        stored: dict[str, _Stored] = {}
        for tensor in reader.tensors:
            ggml_type = tensor.tensor_type.name
            shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
            offset, n_bytes = int(tensor.data_offset), int(tensor.n_bytes)
            if offset + n_bytes > size:
                raise InvalidCheckpointError(
                    f"{shown(self.path)} ends before its tensor `{tensor.name}` (bytes {offset:,}-"
                    f"{offset + n_bytes:,} of a {size:,}-byte file)",
                    hint="the file is truncated; download or convert it again",
                    path=self.path,
                )
            name = _renamed(tensor.name, names)
            permute = None
            if arch in _PERMUTED and heads and len(shape) == 2:
                if name.endswith("self_attn.q_proj.weight"):
                    permute = int(heads)
                elif name.endswith("self_attn.k_proj.weight"):
                    permute = int(kv_heads)
            if name in listed:
                name = tensor.name
            listed[name] = TensorInfo(name, shape, ggml_type)
            stored[name] = _Stored(
                offset, n_bytes, ggml_type, tuple(int(d) for d in tensor.data.shape), permute
            )
        return MappingProxyType(listed), stored

    def _hf_names(self, arch: str, n_blocks: int) -> dict[str, str]:
        """llama.cpp base name (``blk.0.attn_q``) -> the Hugging Face one it was converted from."""
        gguf = self._gguf
        known = next((key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch), None)
        if known is None:
            return {}
        family = _FAMILIES.get(arch, _DECODER_FAMILY)
        candidates: dict[str, list[str]] = {}
        for hf_name, (_, gguf_name) in gguf.get_tensor_name_map(known, n_blocks).mapping.items():
            candidates.setdefault(gguf_name, []).append(hf_name)
        return {
            gguf_name: chosen
            for gguf_name, names in candidates.items()
            if (chosen := next((name for name in names if name.startswith(family)), None)) is not None
        }


def _field(fields: Mapping[str, Any], key: str, *, default: Any) -> Any:
    field = fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except (AttributeError, IndexError, ValueError):
        return default


def _renamed(name: str, hf_names: Mapping[str, str]) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in hf_names:
            return hf_names[name[: -len(suffix)]] + suffix
    return hf_names.get(name, name)


def _unpermuted(weight: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of llama.cpp's ``LlamaModel.permute``: rows back in Hugging Face's rotary order."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )
