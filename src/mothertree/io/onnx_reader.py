"""``.onnx`` models: initializers read as the PyTorch parameters they were exported from.

An ONNX file is one protobuf message holding the graph and, unless saved with external data, every
initializer's bytes; a file over 2 GiB keeps its initializers in files beside it, named by each
initializer's ``external_data`` (``location``, ``offset``, ``length``). Opening parses the message with the
``onnx`` package without loading external data; reading one tensor reads its bytes from the message or
from its external file, inside the model's boundary. So the whole message is in memory while the model is
open (for a file under 2 GiB, its size), and external data is read one tensor at a time.

Names. ``torch.onnx.export`` keeps a parameter's state-dict name for initializers it uses as they are
(embeddings, LayerNorm, biases), but a Linear's weight reaches the graph transposed for ``MatMul`` and gets
a name of the exporter's (``onnx::MatMul_392``, ``val_55``). Such an initializer is named back after the
module that uses it: the TorchScript exporter names nodes by module path
(``/encoder/layer.0/attention/self/query/MatMul``), the dynamo exporter records it in the node's
``pkg.torch.onnx.name_scopes`` (onnxruntime's quantiser drops that record, so a dynamo export quantised
by it keeps the exporter's names); the weight is listed as ``<module>.weight`` and read transposed back to
``(out, in)``, as the module holds it (``Gemm`` with ``transB = 1`` needs no transpose). A tensor that
cannot be named keeps its ONNX name and compares with nothing.

Quantisation. onnxruntime's ``quantize_dynamic`` and ``quantize_static`` replace a weight ``W`` with
``W_quantized`` (int8 or uint8), ``W_scale`` and ``W_zero_point``, per tensor or per output channel, used
by ``MatMulInteger``, ``Gather``, ``ConvInteger`` or a ``DequantizeLinear`` node. Such a weight is listed
under ``W``'s name with dtype ``I8_LINEAR`` and read as ONNX's ``DequantizeLinear`` computes it:
``(q - zero_point) * scale`` in float32.

Not undone: the exporter folds BatchNorm into the preceding Conv in eval mode, so a vision model's convs
differ from its PyTorch weights, and onnxruntime's transformer optimiser fuses Q, K and V into one
``Attention`` weight; such tensors compare only with models exported the same way.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import InvalidCheckpointError, UnsupportedQuantizationError
from ._files import import_optional, shown
from ._guards import boundary_of, check_regular, open_regular, os_error
from .types import LINEAR_INT8, Checkpoint, TensorInfo

# The protobuf limit: a larger message cannot be parsed, so no valid ONNX file without external data is.
_MAX_MESSAGE_BYTES = 2 << 30
_QUANTIZED = "_quantized"
_SCALE = "_scale"
_ZERO_POINT = "_zero_point"
# Ops whose input 1 is a weight matrix (rows = inputs for the MatMuls, output channels for the convs).
_MATMULS = frozenset({"MatMul", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"})
_CONVS = frozenset({"Conv", "ConvInteger", "ConvTranspose"})
_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
# A PyTorch state-dict name: dotted identifiers, as the exporter keeps for parameters it uses unchanged.
_PARAMETER_NAME = re.compile(r"^[A-Za-z_]\w*(\.\w+)+$")


@dataclass(frozen=True)
class _Stored:
    """How one listed tensor is read: its initializer, and for a quantised one its scale and zero point."""

    initializer: str
    scale: str | None = None
    zero_point: str | None = None
    axis: int | None = None  # the axis a per-channel scale runs along
    transpose: bool = False


class OnnxCheckpoint(Checkpoint):
    """One ``.onnx`` file, its initializers listed under their PyTorch names (see the module docstring)."""

    format = "onnx"

    def __init__(self, path: str | os.PathLike[str], *, boundary: Path | None = None) -> None:
        self.path = Path(path)
        # External data lies beside the file; ``path`` becomes the model's path as the user gave it.
        self._file = self.path
        self._boundary = boundary if boundary is not None else boundary_of(self.path)
        onnx = import_optional("onnx", "`.onnx` models", "formats")
        self._onnx = onnx
        size = check_regular(self.path, self._boundary)
        if size > _MAX_MESSAGE_BYTES:
            raise InvalidCheckpointError(
                f"{shown(self.path)} is {size / 2**30:.1f} GiB, larger than any ONNX protobuf can be",
                hint="an ONNX model this large keeps its weights as external data beside its `.onnx` file",
                path=self.path,
            )
        with open_regular(self.path, self._boundary) as file:
            try:
                raw = file.read()
            except OSError as exc:
                raise os_error(self.path, exc) from None
        try:
            model = onnx.load_model_from_string(raw)
        except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
            raise InvalidCheckpointError(
                f"{shown(self.path)} is not a readable ONNX model ({type(exc).__name__}: {exc})",
                hint="the file may be truncated or not ONNX at all; export the model again",
                path=self.path,
            ) from None
        del raw
        graph = model.graph
        self._initializers = {tensor.name: tensor for tensor in graph.initializer}
        self._stored: dict[str, _Stored] = {}
        self._tensors = MappingProxyType(self._list(graph))

    @property
    def tensors(self) -> Mapping[str, TensorInfo]:
        return self._tensors

    def read(self, name: str) -> np.ndarray:
        stored = self._stored[name]
        values = self._array(stored.initializer)
        if stored.scale is not None:
            values = self._dequantized(values, stored)
        if stored.transpose:
            values = values.T
        return np.ascontiguousarray(values, dtype=np.float32)

    def close(self) -> None:
        self._initializers = {}

    # -- listing -----------------------------------------------------------------------------------------

    def _list(self, graph: Any) -> dict[str, TensorInfo]:
        consumers = _consumers(graph)
        dequantized = _dequantize_nodes(graph, self._initializers)
        quantized: dict[str, tuple[str, _Stored]] = {}
        for name, tensor in self._initializers.items():
            found = self._quantized(name, tensor, consumers, dequantized)
            if found is not None:
                quantized[name] = found
        helpers = {
            part for _, stored in quantized.values() for part in (stored.scale, stored.zero_point) if part
        }
        listed: dict[str, TensorInfo] = {}
        for name, tensor in self._initializers.items():
            if name in helpers:
                continue
            shape = tuple(int(d) for d in tensor.dims)
            uses = consumers.get(name, [])
            if name in quantized:
                original, stored = quantized[name]
                info = TensorInfo(original, shape, LINEAR_INT8)
                uses = uses + consumers.get(dequantized[name][0], []) if name in dequantized else uses
            else:
                stored, info = _Stored(name), TensorInfo(name, shape, self._dtype_name(tensor))
            stored, info = self._named(stored, info, uses)
            if info.name in listed:  # a second initializer named after the same module keeps its own name
                stored, info = (
                    _Stored(name, stored.scale, stored.zero_point, stored.axis),
                    TensorInfo(name, shape, info.dtype),
                )
            listed[info.name] = info
            self._stored[info.name] = stored
        return listed

    def _quantized(
        self,
        name: str,
        tensor: Any,
        consumers: Mapping[str, list[tuple[Any, int]]],
        dequantized: Mapping[str, tuple[str, str, str | None, int]],
    ) -> tuple[str, _Stored] | None:
        """(the float tensor's name, how to read it) for a quantised weight; None for any other tensor."""
        if tensor.data_type not in (self._onnx.TensorProto.INT8, self._onnx.TensorProto.UINT8):
            return None
        if name in dequantized:  # a DequantizeLinear node reads it: its inputs are the authority
            output, scale, zero_point, node_axis = dequantized[name]
            original = name[: -len(_QUANTIZED)] if name.endswith(_QUANTIZED) else output
            return original, self._checked(name, _Stored(name, scale, zero_point, node_axis))
        if not name.endswith(_QUANTIZED):
            return None
        original = name[: -len(_QUANTIZED)]
        scale = original + _SCALE
        if scale not in self._initializers:
            raise UnsupportedQuantizationError(
                f"{shown(self.path)} holds `{name}` as {self._dtype_name(tensor)} without the `{scale}` "
                "beside it that onnxruntime writes: a quantisation scheme mothertree does not know",
                path=self.path,
            )
        zero_point = original + _ZERO_POINT
        uses = consumers.get(name, [])
        op = uses[0][0].op_type if uses else ""
        axis = (len(tensor.dims) - 1) if op in _MATMULS else 0 if op in _CONVS else None
        stored = _Stored(name, scale, zero_point if zero_point in self._initializers else None, axis)
        return original, self._checked(name, stored)

    def _checked(self, name: str, stored: _Stored) -> _Stored:
        """``stored`` with the axis of its per-channel scale settled; errors for a scale that does not fit."""
        assert stored.scale is not None
        dims = tuple(int(d) for d in self._initializers[name].dims)
        scale_dims = tuple(int(d) for d in self._initializers[stored.scale].dims)
        if len(scale_dims) == 0 or scale_dims == (1,):
            return _Stored(name, stored.scale, stored.zero_point, None)
        axis = stored.axis
        if axis is not None and axis < 0:
            axis += len(dims)
        if axis is None or not (0 <= axis < len(dims)) or dims[axis] != scale_dims[0]:
            fitting = [i for i, d in enumerate(dims) if d == scale_dims[0]]
            axis = fitting[0] if len(fitting) == 1 else None
        if len(scale_dims) != 1 or axis is None:
            raise UnsupportedQuantizationError(
                f"{shown(self.path)}: the scale `{stored.scale}` {list(scale_dims)} of `{name}` "
                f"{list(dims)} is neither one value nor one per channel of a known axis",
                path=self.path,
            )
        return _Stored(name, stored.scale, stored.zero_point, axis)

    def _named(
        self, stored: _Stored, info: TensorInfo, uses: list[tuple[Any, int]]
    ) -> tuple[_Stored, TensorInfo]:
        """``info`` renamed after the module that uses it, when the exporter gave it a name of its own."""
        if _PARAMETER_NAME.match(info.name) or len(info.shape) < 2:
            return stored, info
        for node, index in uses:
            scope = _module_of(node)
            if scope is None or index != 1:
                continue
            if node.op_type in _MATMULS and len(info.shape) == 2:
                transpose = True
            elif node.op_type == "Gemm":
                transpose = not any(a.name == "transB" and a.i == 1 for a in node.attribute)
            elif node.op_type in _CONVS:
                transpose = False
            else:
                continue
            shape = info.shape[::-1] if transpose else info.shape
            moved = _Stored(stored.initializer, stored.scale, stored.zero_point, stored.axis, transpose)
            return moved, TensorInfo(f"{scope}.weight", shape, info.dtype)
        return stored, info

    def _dtype_name(self, tensor: Any) -> str:
        proto = self._onnx.TensorProto
        names = {
            proto.FLOAT: "F32",
            proto.FLOAT16: "F16",
            proto.BFLOAT16: "BF16",
            proto.DOUBLE: "F64",
            proto.INT8: "I8",
            proto.UINT8: "U8",
            proto.INT16: "I16",
            proto.UINT16: "U16",
            proto.INT32: "I32",
            proto.UINT32: "U32",
            proto.INT64: "I64",
            proto.UINT64: "U64",
            proto.BOOL: "BOOL",
        }
        return names.get(tensor.data_type, self._onnx.TensorProto.DataType.Name(tensor.data_type))

    # -- reading -----------------------------------------------------------------------------------------

    def _array(self, name: str) -> np.ndarray:
        tensor = self._initializers[name]
        try:
            if tensor.data_location == self._onnx.TensorProto.EXTERNAL:
                return self._external(tensor)
            return np.asarray(self._onnx.numpy_helper.to_array(tensor))
        except (ValueError, TypeError) as exc:
            raise InvalidCheckpointError(
                f"{shown(self.path)}: the initializer `{name}` cannot be read ({exc})", path=self.path
            ) from None

    def _external(self, tensor: Any) -> np.ndarray:
        fields = {entry.key: entry.value for entry in tensor.external_data}
        location = fields.get("location", "")
        data = self._file.parent / location
        if not location or os.path.isabs(location):
            raise InvalidCheckpointError(
                f"{shown(self.path)}: the initializer `{tensor.name}` names external data "
                f"`{location}`, not a file beside the model",
                path=self.path,
            )
        dtype = np.dtype(self._onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
        shape = tuple(int(d) for d in tensor.dims)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        offset = int(fields.get("offset", 0))
        length = int(fields.get("length", expected))
        if length != expected:
            raise InvalidCheckpointError(
                f"{shown(self.path)}: the initializer `{tensor.name}` {list(shape)} should take "
                f"{expected:,} bytes of `{location}`, its record says {length:,}",
                path=self.path,
            )
        with open_regular(data, self._boundary, named_by=self.path) as file:
            try:
                file.seek(offset)
                raw = file.read(length)
            except OSError as exc:
                raise os_error(data, exc) from None
        if len(raw) != length:
            raise InvalidCheckpointError(
                f"`{data}` ends before the initializer `{tensor.name}` "
                f"(bytes {offset:,}-{offset + length:,})",
                hint="the external data file is truncated; copy or export the model again",
                path=data,
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def _dequantized(self, values: np.ndarray, stored: _Stored) -> np.ndarray:
        assert stored.scale is not None
        scale = self._array(stored.scale).astype(np.float32)
        zero_point = (
            self._array(stored.zero_point).astype(np.float32)
            if stored.zero_point is not None
            else np.zeros_like(scale)
        )
        if stored.axis is not None:
            shape = [1] * values.ndim
            shape[stored.axis] = -1
            scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
        out = np.subtract(values, zero_point, dtype=np.float32)
        out *= scale
        return out


def external_data_files(path: Path) -> set[str]:
    """The names of the files beside the ONNX file ``path`` that its initializers keep their data in.

    Empty when ``path`` cannot be parsed (opening it as a model says why) or leads out of its folder.
    """
    onnx = import_optional("onnx", "`.onnx` models", "formats")
    try:
        with open_regular(path, path.parent) as file:
            model = onnx.load_model_from_string(file.read())
    except Exception:  # any failure here is reported when the model itself is opened
        return set()
    return {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location" and entry.value and os.path.basename(entry.value) == entry.value
    }


def _consumers(graph: Any) -> dict[str, list[tuple[Any, int]]]:
    """Tensor name -> the (node, input index) pairs that read it."""
    found: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            found.setdefault(name, []).append((node, index))
    return found


def _dequantize_nodes(
    graph: Any, initializers: Mapping[str, Any]
) -> dict[str, tuple[str, str, str | None, int]]:
    """Initializer -> (output, scale, zero point, axis) of the ``DequantizeLinear`` node that reads it."""
    found = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 2 or node.input[0] not in initializers:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
        found[node.input[0]] = (node.output[0], node.input[1], zero_point, int(axis))
    return found


def _module_of(node: Any) -> str | None:
    """The PyTorch module path a node was exported from (``encoder.layer.0.attention.self.query``)."""
    for prop in node.metadata_props:
        if prop.key == _NAME_SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            # The last scope is the node's own (``linear_3``); the one before it is the module's path.
            if isinstance(scopes, list) and len(scopes) >= 2 and isinstance(scopes[-2], str) and scopes[-2]:
                return scopes[-2]
            return None
    if node.name.startswith("/"):
        parts = [part for part in node.name.split("/") if part]
        if len(parts) >= 2:
            return ".".join(parts[:-1])
    return None
