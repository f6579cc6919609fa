"""Value types shared by every reader: what a model is, what a tensor is, what a reader offers."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as its file header describes it; reading it costs nothing.

    Attributes:
        name: the tensor's key in the checkpoint (e.g. ``encoder.layer.0.attention.self.query.weight``).
        shape: its shape.
        dtype: safetensors' dtype name (``F32``, ``F16``, ``BF16``, ``I64``, ...), also for pickled tensors;
            ``I8_SCB`` (``INT8_ROWWISE``) for a bitsandbytes int8 weight, ``I8_LINEAR`` for an ONNX
            int8/uint8 one, ggml's names (``Q8_0``, ``Q4_K``, ...) for GGUF's: all read dequantised.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def is_quantized(self) -> bool:
        """Stored as integers on a quantisation grid, read dequantised."""
        return self.dtype in QUANTIZED_DTYPES


# Integer-quantised weights, stored as integers and read as the float weights they stand for (so they count
# as float tensors): a bitsandbytes LLM.int8 weight (int8 values and per-row scales, see ``quantized``) or
# 4-bit one (NF4/FP4 codes and per-block scales);
# an ONNX int8/uint8 weight with its scale and zero point (``onnx_reader``); and GGUF's block formats, by
# ggml's names (``gguf_reader``).
INT8_ROWWISE = "I8_SCB"
LINEAR_INT8 = "I8_LINEAR"
GGUF_QUANTIZED = frozenset(
    {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0"}
)
EXPORT_FORMATS = frozenset({"onnx", "gguf"})
# bitsandbytes 4-bit, by its ``quant_type``.
FOUR_BIT = {"nf4": "NF4", "fp4": "FP4"}
QUANTIZED_DTYPES = frozenset({INT8_ROWWISE, LINEAR_INT8, *FOUR_BIT.values(), *GGUF_QUANTIZED})
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", *QUANTIZED_DTYPES})


@dataclass(frozen=True)
class ModelRef:
    """One model found on disk.

    Attributes:
        id: a short name, unique within a collection: the folder name (a file's name without extension); on a
            clash, the path relative to the folder that was searched.
        path: the folder or file the user has (for a Hugging Face cache entry, the ``models--org--name``
            folder).
        weights_path: the folder or file the weights are read from (for a cache entry, its snapshot).
        declared_base_models: ``base_model`` names from a README's front matter, if any (a list: merges have
            several), and an adapter's ``base_model_name_or_path``. Optional truth, never used by recovery.
        adapter_base: for a PEFT LoRA adapter, the ``base_model_name_or_path`` its ``adapter_config.json``
            declares (``""`` when it declares none); None for every other model. An adapter is read as its
            base model plus the update, so opening it needs the base (``open_checkpoint``'s ``resolve_base``).
        boundary: the resolved folder the model's files must lie inside (the input it was found in); None
            means the folder of ``weights_path``.
    """

    id: str
    path: Path
    weights_path: Path
    declared_base_models: tuple[str, ...] = field(default=())
    adapter_base: str | None = None
    boundary: Path | None = field(default=None, compare=False)


class Checkpoint(ABC):
    """Lazy access to one model's tensors. Opening reads headers only; ``read`` reads one tensor.

    Implementations hold at most one file (shard) open at a time, and validate everything that can be
    validated without reading data (every shard present, headers parse, offsets inside the file) when opened,
    so that a broken model fails before the expensive pass.
    """

    path: Path
    # The file format, as results name it. Formats exported for inference (``EXPORT_FORMATS``) leave out
    # what their graph does not use (a pooler, a training head), so they may hold fewer tensors.
    format: str = "unknown"

    @property
    @abstractmethod
    def tensors(self) -> Mapping[str, TensorInfo]:
        """Every tensor of the model, in storage order (shard by shard, offset by offset)."""

    @abstractmethod
    def read(self, name: str) -> np.ndarray:
        """One tensor as a float32 array (bf16/fp16/fp64 converted), C-contiguous, not memory-mapped."""

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Some rows of a tensor seen as a matrix (its first dimension by the rest), float32, ``rows``
        sorted. Readers that can seek (safetensors) read only those rows' bytes; others read it all."""
        info = self.tensors[name]
        return np.ascontiguousarray(self.read(name).reshape(info.shape[0], -1)[rows])

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Tensor ``name`` written into ``out``, a C-contiguous float32 array of as many values (of any
        shape). Readers that store it as float32 (safetensors) read its bytes straight into ``out``: the
        feature loop then copies nothing. ``ValueError`` when the sizes differ."""
        np.copyto(out.reshape(-1), self.read(name).reshape(-1))

    def close(self) -> None:  # noqa: B027 - readers without handles have nothing to close
        """Release any open file handle."""

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class BrokenModel:
    """A model that was found but could not be used, and why (the batch goes on without it)."""

    path: Path
    error: Exception
