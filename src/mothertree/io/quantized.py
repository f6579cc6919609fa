"""Integer-quantised weights: bitsandbytes LLM.int8 and 4-bit read back as floats, other schemes refused.

bitsandbytes' ``Linear8bitLt`` (LLM.int8 with ``has_fp16_weights=False``, also what transformers'
``load_in_8bit`` makes) saves a linear layer ``m`` as

- ``m.weight``: int8, ``(out, in)``: each row of the float16 weight divided by its absolute maximum, times
  127, rounded (bitsandbytes' ``int8_vectorwise_quant``);
- ``m.SCB``: float32, ``(out,)``: each row's absolute maximum;
- ``m.weight_format``: a uint8 scalar naming the layout; 0 is row-major, the only one bitsandbytes still
  writes or loads;
- ``m.bias``: as it was.

Readers list such a weight under its own name with dtype ``I8_SCB`` (a float dtype to everything downstream)
and read it as bitsandbytes' own ``int8_vectorwise_dequant`` computes it, in float32:
``weight * SCB[:, None] * float32(1/127)``, equal to it bit for bit. ``SCB`` and ``weight_format`` are
helpers, not model tensors, and are not listed.

bitsandbytes' 4-bit ``Linear4bit`` (transformers' ``load_in_4bit``, QLoRA's NF4) saves ``m.weight`` as
uint8 bytes each holding two 4-bit codes (high nibble first), beside

- ``m.weight.quant_map``: the 16 values the codes stand for (NF4's or FP4's);
- ``m.weight.absmax``: one scale per block of ``blocksize`` weights, float32, or with double quantisation
  (``compress_statistics``) uint8 codes into ``m.weight.nested_quant_map`` times ``m.weight.nested_absmax``
  per block of ``nested_blocksize`` scales, plus ``nested_offset``;
- ``m.weight.quant_state.bitsandbytes__nf4`` (or ``__fp4``): uint8 bytes of a JSON object with the
  weight's ``shape``, ``blocksize`` and the nested fields.

Such a weight is listed under its own name with dtype ``NF4``/``FP4`` and its real shape, and read as
bitsandbytes' ``dequantize_4bit`` computes it on the CPU, ``quant_map[code] * absmax[block]`` in float32,
equal to it bit for bit.

Other integer schemes store weights that cannot be compared as stored, and leaving them out would compare
the model on whatever float tensors remain (its embeddings), so opening such a checkpoint fails with
UnsupportedQuantizationError (a collection goes on without the model, which is reported as skipped):

- GPTQ/AWQ packing: ``m.qweight``;
- an int8 ``*.weight`` of two or more dimensions without ``SCB`` beside it (a scale of another name).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from ..errors import InvalidCheckpointError, UnsupportedQuantizationError
from ._files import shown
from ._guards import parse_json
from .types import FLOAT_DTYPES, FOUR_BIT, INT8_ROWWISE, Checkpoint, TensorInfo

# bitsandbytes multiplies by the float32 reciprocal of 127 rather than dividing; so do we, to match it.
_INV_127 = np.float32(1 / 127)
# bitsandbytes' LINEAR_8BIT_WEIGHTS_FORMAT_MAPPING: 0 = "row"; col32/col_turing/col_ampere are GPU tilings
# that no bitsandbytes since 0.45 can load.
ROW_FORMAT = 0
_WEIGHT = "weight"
_SCALES = "SCB"
_FORMAT = "weight_format"
# What bitsandbytes' 4-bit QuantState adds after a weight's name.
_FOUR_BIT_HELPERS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")
_FOUR_BIT_STATE = "quant_state.bitsandbytes__"
_FOUR_BIT_STATE_BYTES = 1 << 16  # a few hundred bytes of JSON in practice
_INTEGER_DTYPES = frozenset({"I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64"})


@dataclass(frozen=True)
class Int8Weight:
    """Where the parts of one bitsandbytes int8 weight are stored (tensor names in the checkpoint)."""

    weight: str
    scales: str
    weight_format: str | None

    def read(self, read_stored: Callable[[str], np.ndarray], path: Path) -> np.ndarray:
        """The dequantised weight, float32; ``read_stored`` reads a stored tensor as float32."""
        if self.weight_format is not None:
            layout = read_stored(self.weight_format)
            if layout.size != 1 or layout.reshape(-1)[0] != ROW_FORMAT:
                raise UnsupportedQuantizationError(
                    f"{shown(path)}: `{self.weight}` is int8 in a bitsandbytes GPU tile layout "
                    f"(`{self.weight_format}` = {layout.reshape(-1).tolist()}), not row-major",
                    hint="load the model with a current bitsandbytes and save it again (that writes rows)",
                    path=path,
                )
        return dequantize_int8(read_stored(self.weight), read_stored(self.scales))


@dataclass(frozen=True)
class FourBitWeight:
    """Where the parts of one bitsandbytes 4-bit weight are, and its quantisation state's numbers."""

    weight: str
    shape: tuple[int, ...]
    blocksize: int
    nested_blocksize: int | None
    nested_offset: float
    quant_type: str

    def read(self, read_stored: Callable[[str], np.ndarray], path: Path) -> np.ndarray:
        """The dequantised weight, float32, as ``bitsandbytes.functional.dequantize_4bit`` gives it."""
        packed = read_stored(self.weight).astype(np.uint8).ravel()
        codes = np.empty(packed.size * 2, dtype=np.uint8)
        codes[0::2], codes[1::2] = packed >> 4, packed & 0x0F
        quant_map = read_stored(f"{self.weight}.quant_map").astype(np.float32)
        absmax = read_stored(f"{self.weight}.absmax")
        if self.nested_blocksize is not None:
            nested_map = read_stored(f"{self.weight}.nested_absmax").astype(np.float32)
            code_map = read_stored(f"{self.weight}.nested_quant_map").astype(np.float32)
            scales = np.repeat(nested_map, self.nested_blocksize)[: absmax.size]
            absmax = code_map[absmax.astype(np.int64)] * scales + np.float32(self.nested_offset)
        count = math.prod(self.shape)
        if codes.size < count or absmax.size * self.blocksize < count or quant_map.size != 16:
            raise InvalidCheckpointError(
                f"{shown(path)}: the 4-bit weight `{self.weight}` holds {codes.size:,} codes and "
                f"{absmax.size:,} block scales, too few for its shape {list(self.shape)}",
                path=path,
            )
        values = quant_map[codes[:count]] * np.repeat(absmax.astype(np.float32), self.blocksize)[:count]
        return values.reshape(self.shape)


def dequantize_int8(weight: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``weight * scales[:, None] / 127`` in float32, as bitsandbytes' ``int8_vectorwise_dequant``.

    ``weight`` holds the int8 values (any numeric dtype), ``scales`` each row's absolute maximum (``SCB``).
    """
    out = np.multiply(weight, np.asarray(scales, dtype=np.float32).reshape(-1, 1), dtype=np.float32)
    out *= _INV_127
    return out


def dequantized_listing(
    tensors: Mapping[str, TensorInfo], path: Path, read_stored: Callable[[str], np.ndarray]
) -> tuple[Mapping[str, TensorInfo], dict[str, Int8Weight | FourBitWeight]]:
    """What a checkpoint whose stored tensors are ``tensors`` lists, and how to read each quantised weight.

    Int8 weights keep their name and place (storage order) with dtype ``I8_SCB``; their ``SCB`` and
    ``weight_format`` are left out. 4-bit weights keep theirs with dtype ``NF4``/``FP4`` and their real
    shape (``read_stored`` reads the quantisation state's JSON); their helpers are left out. Without any
    quantised tensor, ``tensors`` itself comes back.

    Raises:
        UnsupportedQuantizationError: another integer quantisation scheme (see the module's docstring).
        InvalidCheckpointError: an int8 weight whose ``SCB`` does not fit it; a 4-bit state that does not
            parse or lacks what it must say.
    """
    _refuse_other_schemes(tensors, path)
    int8: dict[str, Int8Weight | FourBitWeight] = {}
    helpers: set[str] = set()
    for name in tensors:
        owner, found, kind = name.partition("." + _FOUR_BIT_STATE)
        if not found or owner not in tensors:
            continue
        weight = _four_bit(owner, name, kind, read_stored, path)
        int8[owner] = weight
        helpers.add(name)
        helpers.update(f"{owner}.{helper}" for helper in _FOUR_BIT_HELPERS if f"{owner}.{helper}" in tensors)
    for name, info in tensors.items():
        if info.dtype != "I8" or not (name == _WEIGHT or name.endswith("." + _WEIGHT)):
            continue
        prefix = name[: -len(_WEIGHT)]  # the module's name with its trailing dot, or "" at the root
        scales = tensors.get(prefix + _SCALES)
        if scales is None:
            if len(info.shape) >= 2:
                raise UnsupportedQuantizationError(
                    f"{shown(path)} holds `{name}` as int8 without the `{prefix}{_SCALES}` row scales that "
                    "bitsandbytes saves beside it: an int8 scheme mothertree does not know",
                    path=path,
                )
            continue  # a 1-D int8 tensor is no weight matrix; it is listed as it is and never compared
        _check_scales(info, scales, path)
        layout = prefix + _FORMAT
        int8[name] = Int8Weight(name, scales.name, layout if layout in tensors else None)
        helpers.update(part for part in (scales.name, layout) if part in tensors)
    if not int8:
        return tensors, {}
    listed = {name: _listed(info, int8.get(name)) for name, info in tensors.items() if name not in helpers}
    return MappingProxyType(listed), int8


def _listed(info: TensorInfo, quantized: Int8Weight | FourBitWeight | None) -> TensorInfo:
    if isinstance(quantized, FourBitWeight):
        return TensorInfo(info.name, quantized.shape, FOUR_BIT[quantized.quant_type])
    if quantized is not None:
        return TensorInfo(info.name, info.shape, INT8_ROWWISE)
    return info


def _four_bit(
    weight: str, state: str, kind: str, read_stored: Callable[[str], np.ndarray], path: Path
) -> FourBitWeight:
    """The 4-bit weight ``weight`` as its quantisation state ``state`` (a JSON object's bytes) says."""
    raw = read_stored(state).astype(np.uint8).tobytes()
    what = f"a bitsandbytes 4-bit quantisation state (`{state}`)"
    if len(raw) > _FOUR_BIT_STATE_BYTES:
        raise InvalidCheckpointError(f"{shown(path)}: `{state}` is too large to be {what}", path=path)
    meta = parse_json(raw, path, what)
    try:
        assert isinstance(meta, dict)
        shape = tuple(int(d) for d in meta["shape"])
        blocksize = int(meta["blocksize"])
        nested = meta.get("nested_blocksize")
        quant_type = str(meta.get("quant_type", kind))
        assert blocksize > 0 and all(d >= 0 for d in shape) and quant_type in FOUR_BIT
        return FourBitWeight(
            weight,
            shape,
            blocksize,
            int(nested) if nested is not None else None,
            float(meta.get("nested_offset", 0.0)),
            quant_type,
        )
    except (AssertionError, KeyError, TypeError, ValueError):
        raise InvalidCheckpointError(
            f"{shown(path)}: `{state}` is not {what} mothertree knows (shape, blocksize, quant_type nf4/fp4)",
            path=path,
        ) from None


def _check_scales(weight: TensorInfo, scales: TensorInfo, path: Path) -> None:
    if len(weight.shape) != 2:
        raise InvalidCheckpointError(
            f"{shown(path)}: `{weight.name}` is int8 with `{scales.name}` row scales but has shape "
            f"{list(weight.shape)}; bitsandbytes int8 weights are matrices",
            path=path,
        )
    if scales.dtype not in FLOAT_DTYPES or scales.dtype == INT8_ROWWISE or scales.shape != weight.shape[:1]:
        raise InvalidCheckpointError(
            f"{shown(path)}: `{scales.name}` ({scales.dtype} {list(scales.shape)}) does not hold one float "
            f"scale per row of the int8 `{weight.name}` {list(weight.shape)}",
            path=path,
        )


def _refuse_other_schemes(tensors: Mapping[str, TensorInfo], path: Path) -> None:
    stateless = not any(_FOUR_BIT_STATE in n for n in tensors)
    for name, info in tensors.items():
        owner, _, helper = name.rpartition(".")
        if helper in _FOUR_BIT_HELPERS and owner in tensors and stateless:
            scheme = "bitsandbytes 4-bit without its quantisation state"
        elif helper == "qweight" and info.dtype in _INTEGER_DTYPES:
            scheme = "GPTQ/AWQ-packed"
        else:
            continue
        raise UnsupportedQuantizationError(
            f"{shown(path)} holds {scheme} weights (`{name}`), which mothertree cannot read back as floats",
            path=path,
        )


class StoredTensorsCheckpoint(Checkpoint):
    """A reader of stored tensors whose int8 weights read back dequantised.

    Subclasses call ``_list_tensors`` once with what their files store and implement ``_read_stored``;
    listing and reading (int8 through ``Int8Weight``, the rest as stored) are the same for every format.
    """

    path: Path
    _tensors: Mapping[str, TensorInfo]
    _int8: Mapping[str, Int8Weight | FourBitWeight]

    def _list_tensors(self, stored: Mapping[str, TensorInfo]) -> None:
        self._tensors, self._int8 = dequantized_listing(stored, self.path, self._read_stored)

    @property
    def tensors(self) -> Mapping[str, TensorInfo]:
        return self._tensors

    def read(self, name: str) -> np.ndarray:
        int8 = self._int8.get(name)
        if int8 is not None:
            return int8.read(self._read_stored, self.path)
        return self._read_stored(name)

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name in self._int8:
            return super().read_rows(name, rows)
        return self._read_stored_rows(name, rows)

    def read_into(self, name: str, out: np.ndarray) -> None:
        if name in self._int8:
            super().read_into(name, out)
        else:
            self._read_stored_into(name, out)

    @abstractmethod
    def _read_stored(self, name: str) -> np.ndarray:
        """One tensor as stored in the files, as a float32 array."""

    def _read_stored_into(self, name: str, out: np.ndarray) -> None:
        """``read_into`` of a tensor as stored; readers of float32 bytes read them into ``out``."""
        np.copyto(out.reshape(-1), self._read_stored(name).reshape(-1))

    def _read_stored_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """``read_rows`` of a tensor as stored; readers that can seek read only those rows."""
        return super().read_rows(name, rows)
