"""A model's derived copies in the formats models ship in, each written by the tool users write it with.

- ``export_onnx``: ``torch.onnx.export`` of a transformers model folder, with the TorchScript exporter
  (``dynamo=False``), which names each node by the module it comes from;
- ``quantize_onnx``: onnxruntime's ``quantize_dynamic`` (int8 or uint8 weights, per tensor or per channel,
  used through ``MatMulInteger``), what onnxruntime and optimum's int8 exports are;
- ``convert_gguf``: llama.cpp's own ``convert_hf_to_gguf.py`` (``--outtype f32|f16|bf16|q8_0``), from the
  ``llama-cpp-python`` source distribution (``make install`` unpacks it; ``MOTHERTREE_LLAMA_CPP`` names
  another copy);
- ``requantize_gguf``: a GGUF file's weight matrices quantised again with the ``gguf`` package
  (``gguf.quants.quantize``: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), every other tensor and all metadata copied.

Nothing is written into the source folders: a conversion that needs the tokenizer beside the weights
works on a copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError

LLAMA_CPP_ENV = "MOTHERTREE_LLAMA_CPP"
CONVERTER = "convert_hf_to_gguf.py"
# What a transformers folder needs besides its weights for the converter to write a vocabulary.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def llama_cpp_dir() -> Path:
    """The unpacked llama.cpp tree holding ``convert_hf_to_gguf.py`` (see the module docstring)."""
    configured = os.environ.get(LLAMA_CPP_ENV)
    folder = Path(configured) if configured else Path(sys.prefix) / "llama.cpp"
    if not (folder / CONVERTER).is_file():
        raise MissingDependencyError(
            f"llama.cpp's `{CONVERTER}` is not in `{folder}`",
            hint=f"`make install` unpacks it from the llama-cpp-python sdist; or set {LLAMA_CPP_ENV}",
        )
    return folder


def export_onnx(model_folder: Path, out: Path, *, sequence: int = 16) -> Path:
    """``model_folder`` (a transformers encoder) exported to ``out`` as ONNX, its hidden states as output."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_folder).eval()

    # The tracer passes inputs by position, which transformers' forward no longer takes beyond the first;
    # a subclass keeps the parameter names (a wrapper module would prefix them).
    class Exported(type(model)):  # type: ignore[misc]
        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    model.__class__ = Exported
    ids = torch.ones((1, sequence), dtype=torch.long)
    out.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids)),
        str(out),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_axes=axes,
        dynamo=False,
    )
    return out


def quantize_onnx(source: Path, out: Path, *, per_channel: bool = False, unsigned: bool = False) -> Path:
    """``source`` with int8 (``unsigned``: uint8) weights, by onnxruntime's ``quantize_dynamic``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.parent.mkdir(parents=True, exist_ok=True)
    weight_type = QuantType.QUInt8 if unsigned else QuantType.QInt8
    quantize_dynamic(str(source), str(out), per_channel=per_channel, weight_type=weight_type)
    return out


def convert_gguf(
    model_folder: Path, out: Path, *, outtype: str = "f32", tokenizer: Path | None = None
) -> Path:
    """``model_folder`` converted to GGUF by llama.cpp's converter; ``tokenizer`` a folder to take the
    tokenizer files from when the model's own folder has none."""
    converter = llama_cpp_dir() / CONVERTER
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        source = model_folder
        if tokenizer is not None:
            source = Path(scratch) / model_folder.name
            shutil.copytree(model_folder, source)
            _copy_files(tokenizer, source, TOKENIZER_FILES)
        subprocess.run(
            [sys.executable, str(converter), str(source), "--outfile", str(out), "--outtype", outtype],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    return out


def requantize_gguf(source: Path, out: Path, qtype: str) -> Path:
    """``source`` with its weight matrices quantised to ``qtype`` by the ``gguf`` package."""
    import gguf
    import numpy as np

    kind = gguf.GGMLQuantizationType[qtype]
    block, _ = gguf.GGML_QUANT_SIZES[kind]
    reader = gguf.GGUFReader(source, "r")
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(out, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), value_type, sub_type=sub_type)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        if values.ndim >= 2 and tensor.name.endswith(".weight") and values.shape[-1] % block == 0:
            data = gguf.quants.quantize(np.ascontiguousarray(values, dtype=np.float32), kind)
            writer.add_tensor(tensor.name, data, raw_dtype=kind)
        else:
            writer.add_tensor(tensor.name, np.array(tensor.data), raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _copy_files(source: Path, target: Path, names: Iterable[str]) -> None:
    for name in names:
        if (source / name).is_file() and not (target / name).exists():
            shutil.copy2(source / name, target / name)
