"""Mutated checkpoints for fuzzing the readers: ``tests/io/test_fuzz.py`` (a few hundred inputs per reader, in
``make test``) and ``benchmarks/fuzz.py`` (``make fuzz``: tens of thousands, counted in docs/RESULTS.md).

The seeds are valid files written by the real writers (safetensors, ``torch.save``, peft ``save_pretrained``,
an index as transformers writes it). A mutation works on bytes (bit flips, interesting integers, cuts,
splices) or on structure (a JSON value replaced by a huge integer, a deep nest, a path, a wrong type; a
pickle inside a zip ``.bin`` mutated and the archive rebuilt, so the unpickler sees it). Each input is opened
with ``open_checkpoint`` and every tensor read; the only acceptable outcomes are a valid read and a
``MotherTreeError``, within ``TIME_LIMIT_S``.
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
import re
import shutil
import signal
import struct
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mothertree.errors import MotherTreeError
from mothertree.io import open_checkpoint

TIME_LIMIT_S = 5

# --- seeds --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeds:
    """Valid inputs, one per reader, and the fixed files each needs beside it."""

    safetensors: Path  # one file: three tensors (F32, F16, BF16) and metadata
    sharded: Path  # a folder: model.safetensors.index.json and two shards
    adapter: Path  # a peft LoRA adapter folder of a tiny BERT
    base: Path  # that adapter's base model folder
    zip_bin: Path  # torch.save of a small state_dict


def write_seeds(folder: Path) -> Seeds:
    import ml_dtypes
    import torch
    import transformers
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "encoder.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "encoder.bias": rng.standard_normal(4).astype(np.float16),
        "decoder.weight": rng.standard_normal((3, 4)).astype(ml_dtypes.bfloat16),
    }
    single = folder / "seed.safetensors"
    save_file(arrays, str(single), metadata={"format": "np"})

    sharded = folder / "sharded"
    sharded.mkdir()
    names = list(arrays)
    weight_map = {}
    for number, chunk in enumerate((names[:2], names[2:]), start=1):
        shard = f"model-{number:05d}-of-00002.safetensors"
        save_file({name: arrays[name] for name in chunk}, str(sharded / shard))
        weight_map.update(dict.fromkeys(chunk, shard))
    index = {"metadata": {"total_size": sum(a.nbytes for a in arrays.values())}, "weight_map": weight_map}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))

    import peft
    from tiny_bert import TINY_BERT

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**TINY_BERT))
    base = folder / "base"
    model.save_pretrained(base)
    adapter = folder / "adapter"
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]))
    lora.save_pretrained(adapter)

    zip_bin = folder / "seed.bin"
    torch.save({"layer": {"weight": torch.randn(3, 2), "bias": torch.randn(3)}, "step": 7}, zip_bin)
    return Seeds(single, sharded, adapter, base, zip_bin)


# --- mutations ----------------------------------------------------------------------------------------------

_INTERESTING_INTS = (0, 1, -1, 2, 7, 8, 255, 2**31 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64)
_INTERESTING_BYTES = b'\x00\xff\x7f\x80{}[]":,0-9eE.\\'
_RAW = "\x00RAW\x00"  # a string value to be replaced by raw JSON text (see mutate_json)


def mutate_bytes(data: bytes, rng: random.Random, focus: int | None = None) -> bytes:
    """One to four byte-level mutations, most of them inside the first ``focus`` bytes when given."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out.extend(rng.randbytes(rng.randint(1, 16)))
            continue
        end = min(len(out), focus) if focus else len(out)
        at = rng.randrange(end)
        op = rng.randrange(8)
        if op == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at] = rng.choice(_INTERESTING_BYTES)
        elif op == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 32))
        elif op == 3:
            del out[at : at + rng.randint(1, 64)]
        elif op == 4:
            del out[rng.randrange(len(out) + 1) :]
        elif op == 5:
            width = rng.randint(1, 64)
            out[at:at] = out[at : at + width]
        elif op == 6 and at + 8 <= len(out):
            out[at : at + 8] = struct.pack("<Q", rng.choice(_INTERESTING_INTS) % 2**64)
        else:
            out[at : at + 1] = rng.choice((b"\x00" * rng.randint(1, 9), b"9" * rng.randint(1, 400)))
    return bytes(out)


def mutate_json(value: Any, rng: random.Random) -> str:
    """``value`` with one to three of its nodes replaced, removed or duplicated, serialised as JSON text."""
    value = copy.deepcopy(value)
    for _ in range(rng.randint(1, 3)):
        value = _mutate_node(value, rng)
    text = json.dumps(value)
    # Values json.dumps cannot write (a 5000-digit integer, a nest 100,000 deep) are spliced in as text.
    pattern = re.escape(json.dumps(_RAW)[:-1]) + r"([^\"]*)\""
    text = re.sub(pattern, lambda m: _raw_text(m.group(1)), text)
    if rng.random() < 0.15 and text.startswith("{") and len(text) > 2:  # a key written twice
        first_key = text[1 : text.find(":") + 1]
        text = "{" + first_key + " null, " + text[1:]
    return text


def _raw_text(spec: str) -> str:
    kind, _, size = spec.partition(":")
    n = int(size)
    return "1" + "0" * n if kind == "digits" else "[" * n + "]" * n


def _replacement(rng: random.Random) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: rng.choice(_INTERESTING_INTS),
        lambda: 10 ** rng.choice((19, 20, 21)),
        lambda: f"{_RAW}digits:{rng.choice((400, 5_000))}",
        lambda: -rng.randint(1, 10**6),
        lambda: rng.choice((float("nan"), float("inf"), 1e308, -0.0, 0.5)),
        lambda: f"{_RAW}nest:{rng.choice((10, 100, 1_000, 100_000))}",
        lambda: "x" * rng.choice((0, 1, 1_000, 100_000)),
        lambda: rng.choice(
            ("../../etc/passwd", "/etc/passwd", "..", "a/../../b", "\ud800", "(.|.)*\\d(.|.)*\\d")
        ),
        lambda: rng.choice((None, True, False, [], {}, [1, 2], {"a": 1})),
        lambda: [rng.choice(_INTERESTING_INTS) for _ in range(rng.randint(0, 5))],
    ]
    return rng.choice(choices)()


def _mutate_node(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        op = rng.random()
        if op < 0.15:
            del value[key]
        elif op < 0.25:
            value[key + rng.choice(("", "_", ".weight", "\x00"))] = _replacement(rng)
        elif op < 0.55:
            value[key] = _replacement(rng)
        else:
            value[key] = _mutate_node(value[key], rng)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        at = rng.randrange(len(value))
        value[at] = _mutate_node(value[at], rng) if rng.random() < 0.5 else _replacement(rng)
        return value
    return _replacement(rng)


# --- the readers, each with its seed and its mutations ------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A reader under fuzz: how to derive an input from the seed, and where to put it to open it."""

    name: str
    make: Callable[[Seeds, random.Random], bytes]
    place: Callable[[Path, Seeds, bytes], Path]  # writes the input into a work folder; returns what to open
    resolve_base: bool = False


def _safetensors_input(seeds: Seeds, rng: random.Random) -> bytes:
    raw = seeds.safetensors.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    if rng.random() < 0.5:
        return mutate_bytes(raw, rng, focus=8 + length)
    header = mutate_json(json.loads(raw[8 : 8 + length]), rng).encode("utf-8", "surrogatepass")
    stated = len(header) if rng.random() < 0.9 else rng.choice(_INTERESTING_INTS) % 2**64
    return struct.pack("<Q", stated) + header + raw[8 + length :]


def _json_input(path: Callable[[Seeds], Path]) -> Callable[[Seeds, random.Random], bytes]:
    def make(seeds: Seeds, rng: random.Random) -> bytes:
        raw = path(seeds).read_bytes()
        if rng.random() < 0.3:
            return mutate_bytes(raw, rng)
        return mutate_json(json.loads(raw), rng).encode("utf-8", "surrogatepass")

    return make


def _zip_bin_input(seeds: Seeds, rng: random.Random) -> bytes:
    raw = seeds.zip_bin.read_bytes()
    if rng.random() < 0.4:
        return mutate_bytes(raw, rng)
    # Rebuild the archive with one member mutated: the unpickler (or the storage reader) sees the change.
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    pick = rng.randrange(len(members))
    pickled = [i for i, (info, _) in enumerate(members) if info.filename.endswith("data.pkl")]
    if pickled and rng.random() < 0.7:
        pick = pickled[0]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for i, (info, content) in enumerate(members):
            archive.writestr(info, mutate_bytes(content, rng) if i == pick else content)
    return out.getvalue()


def _as_file(name: str) -> Callable[[Path, Seeds, bytes], Path]:
    def place(work: Path, seeds: Seeds, data: bytes) -> Path:
        path = work / name
        path.write_bytes(data)
        return path

    return place


def _in_copy_of(folder: Callable[[Seeds], Path], name: str) -> Callable[[Path, Seeds, bytes], Path]:
    def place(work: Path, seeds: Seeds, data: bytes) -> Path:
        target = work / folder(seeds).name
        if not target.exists():
            shutil.copytree(folder(seeds), target)
        (target / name).write_bytes(data)
        return target

    return place


TARGETS = (
    Target("safetensors header", _safetensors_input, _as_file("input.safetensors")),
    Target(
        "shard index",
        _json_input(lambda s: s.sharded / "model.safetensors.index.json"),
        _in_copy_of(lambda s: s.sharded, "model.safetensors.index.json"),
    ),
    Target(
        "adapter config",
        _json_input(lambda s: s.adapter / "adapter_config.json"),
        _in_copy_of(lambda s: s.adapter, "adapter_config.json"),
        resolve_base=True,
    ),
    Target("zip .bin", _zip_bin_input, _as_file("input.bin")),
)


# --- running one input --------------------------------------------------------------------------------------


class Hung(Exception):
    """An input took longer than ``TIME_LIMIT_S``."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise Hung

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Outcome:
    kind: str  # "read" | "refused" (a MotherTreeError) | "crash" (any other exception) | "hang"
    detail: str
    seconds: float


def open_and_read(path: Path, seeds: Seeds, resolve_base: bool) -> None:
    """What a user's run does with one model: open it (headers checked) and read every tensor."""

    def base(_name: str) -> Any:
        return open_checkpoint(seeds.base)

    with open_checkpoint(path, resolve_base=base if resolve_base else None) as checkpoint:
        for name in checkpoint.tensors:
            checkpoint.read(name)


def run_one(target: Target, seeds: Seeds, work: Path, rng: random.Random) -> tuple[Outcome, bytes]:
    data = target.make(seeds, rng)
    path = target.place(work, seeds, data)
    start = time.perf_counter()
    try:
        with time_limit(TIME_LIMIT_S):
            open_and_read(path, seeds, target.resolve_base)
        kind, detail = "read", ""
    except Hung:
        kind, detail = "hang", f"more than {TIME_LIMIT_S} s"
    except MotherTreeError as exc:
        kind, detail = "refused", type(exc).__name__
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a Rust panic is a BaseException; every one is a finding
        kind, detail = "crash", f"{type(exc).__name__}: {str(exc)[:200]}"
    return Outcome(kind, detail, time.perf_counter() - start), data


def clean(work: Path) -> None:
    for child in work.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else os.unlink(child)
