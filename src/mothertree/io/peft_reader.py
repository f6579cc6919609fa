"""PEFT LoRA adapters, read as the models they make: the base model's tensors with every LoRA update added.

An adapter folder (peft ``save_pretrained``) holds ``adapter_config.json`` and ``adapter_model.safetensors``
(or the legacy pickle ``adapter_model.bin``). peft strips the adapter name on saving, so the keys are

- ``base_model.model.<module>.lora_A.weight`` [r, in] and ``...lora_B.weight`` [out, r] (a Conv layer's
  carry kernel dimensions: [r, in, *k] and [out, r, 1, ...]; ``lora_bias=True`` adds ``lora_B.bias``);
- ``base_model.model.<module>.lora_embedding_A`` [r, vocab] and ``...lora_embedding_B`` [dim, r], no
  ``.weight``;
- whole tensors that replace the base's: ``modules_to_save`` heads, biases trained with ``bias="all"`` or
  ``"lora_only"`` (saved as ``<module>.base_layer.bias`` when the module is wrapped), embeddings saved by
  ``save_embedding_layers``. So an adapter is not only low-rank factors.

Merging is what peft's ``merge_and_unload`` computes, in float32::

    W = W_base + scaling * B @ A      transposed for embeddings and for GPT-2's Conv1D (``fan_in_fan_out``)
    scaling = alpha / r               alpha / sqrt(r) with ``use_rslora``

with ``r`` and ``alpha`` per module from ``rank_pattern`` / ``alpha_pattern`` when one of their keys matches
the module's name (peft's rule: the key, a regex, matches the whole name or a dot-separated tail of it; the
first matching key wins).

A module name is the key without ``base_model.model.``; its tensor in the base checkpoint is
``<module>.weight``, else the one base tensor whose name ends with ``.<module>.weight`` (the base was saved
with a prefix such as ``bert.``), else the longest dot-separated tail of ``<module>.weight`` the base holds
(the adapter was trained on a model with a head, the base saved without its prefix).

Not supported, each refused by name: other ``peft_type``s (IA3, prompt tuning, ...), LoRA variants whose
merge is not the formula above (DoRA, QA-LoRA, aLoRA, ...), and adapters initialised by PiSSA, OLoRA, CorDA,
LoftQ or LoRA-GA, whose factors belong to a residual of the base that peft rewrote, not to the base itself.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import regex

from ..errors import (
    CheckpointNotFoundError,
    InvalidCheckpointError,
    LimitExceededError,
    UnsupportedFormatError,
)
from ._files import ADAPTER_CONFIG, broken_link_error, is_broken_link, read_json, shown
from .safetensors_reader import SafetensorsCheckpoint
from .torch_reader import TorchCheckpoint
from .types import Checkpoint, TensorInfo

# A regex from a config file is matched with a time limit (the `regex` module's): Python's `re` has none,
# and `(.|.)*Z` backtracks for ever on a long module name.
PATTERN_TIMEOUT_S = 0.5

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_KEY_PREFIX = "base_model.model."
_MERGE_HINT = "merge it into its base model (peft `merge_and_unload()`) and save that"
_RESAVE_HINT = "the adapter's files do not belong together: save or download the adapter again"
_WRONG_BASE_HINT = (
    "the adapter was trained on another model: check `base_model_name_or_path` in `adapter_config.json`, "
    "or name the right base model with `--base PATH`"
)
# LoraConfig fields that make a LoRA variant whose merge differs from W + scaling * B @ A, or that change
# which tensors exist. peft tags most of them `is_lora_variant`; the rest change shapes or names.
_VARIANTS = (
    ("use_dora", "DoRA"),
    ("use_qalora", "QA-LoRA"),
    ("alora_invocation_tokens", "aLoRA"),
    ("velora_config", "VeLoRA"),
    ("monteclora_config", "MonteCLoRA"),
    ("use_bdlora", "block-diagonal LoRA"),
    ("arrow_config", "Arrow"),
    ("kasa_config", "KaSA"),
    ("layer_replication", "layer-replicating LoRA"),
    ("target_parameters", "parameter-targeting LoRA"),
    ("trainable_token_indices", "trainable-tokens LoRA"),
)
# `init_lora_weights` values after which peft subtracts the initial B @ A from the base weights, so that the
# factors only make sense on that rewritten base (unless saved with
# `path_initial_model_for_weight_conversion`, which rewrites the config to `init_lora_weights: true`).
_RESIDUAL_INITS = (
    ("pissa", "PiSSA"),
    ("olora", "OLoRA"),
    ("corda", "CorDA"),
    ("loftq", "LoftQ"),
    ("lora_ga", "LoRA-GA"),
)
# Elements per block of B @ A added at a time: reads stay at one full matrix plus this much.
_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class AdapterConfig:
    """What ``adapter_config.json`` says about merging (only what changes the merged weights).

    Attributes:
        path: the ``adapter_config.json`` file.
        base_name: ``base_model_name_or_path`` (``""`` when the config names no base model).
        r, lora_alpha: the default rank and alpha.
        use_rslora: scale by ``alpha / sqrt(r)`` instead of ``alpha / r``.
        fan_in_fan_out: the saved flag; peft rewrites it per module type, so it only decides square matrices.
        rank_pattern, alpha_pattern: per-module overrides, regex key -> value, in the config's order.
    """

    path: Path
    base_name: str
    r: int
    lora_alpha: float
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)

    def rank_and_alpha(self, module: str) -> tuple[int, float]:
        """The rank and alpha peft gives ``module`` (its name without ``base_model.model.``)."""
        r_key = _pattern_key(self.rank_pattern, module, self.path)
        alpha_key = _pattern_key(self.alpha_pattern, module, self.path)
        r = self.rank_pattern[r_key] if r_key is not None else self.r
        alpha = self.alpha_pattern[alpha_key] if alpha_key is not None else self.lora_alpha
        return r, alpha

    def scaling(self, r: int, alpha: float) -> float:
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def is_adapter_folder(folder: Path) -> bool:
    """Whether ``folder`` holds ``adapter_config.json`` (a broken link to one counts: it is still meant)."""
    # Any entry of that name counts (a broken link, a FIFO): it is still meant, and reading it says why not.
    config = folder / ADAPTER_CONFIG
    return os.path.lexists(config) and not os.path.isdir(config)


def adapter_folder_of(path: Path) -> Path | None:
    """The adapter folder ``path`` names: the folder itself, or its config or weights file; else None."""
    if os.path.isdir(path):
        return path if is_adapter_folder(path) else None
    if path.name in (ADAPTER_CONFIG, *ADAPTER_WEIGHTS) and is_adapter_folder(path.parent):
        return path.parent
    return None


def adapter_weights_file(folder: Path) -> Path:
    """``adapter_model.safetensors``, else ``adapter_model.bin``.

    Raises:
        CheckpointNotFoundError: the folder holds neither.
        MissingShardError: the file is a broken link (a cache snapshot whose blob is missing).
    """
    for name in ADAPTER_WEIGHTS:
        file = folder / name
        if is_broken_link(file):
            raise broken_link_error(file)
        if os.path.lexists(file) and not os.path.isdir(file):
            return file
    raise CheckpointNotFoundError(
        f"{shown(folder)} holds `{ADAPTER_CONFIG}` but no adapter weights "
        f"(`{ADAPTER_WEIGHTS[0]}` or `{ADAPTER_WEIGHTS[1]}`)",
        hint="download or save the adapter again: peft `save_pretrained` writes both files",
        path=folder,
    )


def read_adapter_config(folder: Path, boundary: Path | None = None) -> AdapterConfig:
    """Parse and check ``folder/adapter_config.json``: a plain LoRA adapter, with sane ranks and alphas.

    Raises:
        InvalidCheckpointError: the file is not JSON, or a field has the wrong type.
        UnsupportedFormatError: the adapter is not LoRA, or a LoRA variant mothertree cannot merge.
        MissingShardError: the config is a broken link.
    """
    path = folder / ADAPTER_CONFIG
    raw = _config_json(path, boundary)
    _refuse_other_adapters(path, raw)
    base_name = raw.get("base_model_name_or_path")
    if base_name is not None and not isinstance(base_name, str):
        raise _bad_config(path, "`base_model_name_or_path` is not a string")
    return AdapterConfig(
        path=path,
        base_name=(base_name or "").strip(),
        r=_positive_int(path, "r", raw.get("r", 8)),
        lora_alpha=_number(path, "lora_alpha", raw.get("lora_alpha", 8)),
        use_rslora=_flag(path, "use_rslora", raw.get("use_rslora")),
        fan_in_fan_out=_flag(path, "fan_in_fan_out", raw.get("fan_in_fan_out")),
        rank_pattern={
            key: _positive_int(path, f"rank_pattern[{key!r}]", value)
            for key, value in _pattern(path, "rank_pattern", raw.get("rank_pattern")).items()
        },
        alpha_pattern={
            key: _number(path, f"alpha_pattern[{key!r}]", value)
            for key, value in _pattern(path, "alpha_pattern", raw.get("alpha_pattern")).items()
        },
    )


def _config_json(path: Path, boundary: Path | None) -> dict[str, Any]:
    """The JSON object in ``path``, or a clear error."""
    raw = read_json(path, "a valid PEFT adapter config", hint=_CONFIG_HINT, boundary=boundary)
    if not isinstance(raw, dict):
        raise _bad_config(path, "it is not a JSON object")
    return raw


def _refuse_other_adapters(path: Path, raw: Mapping[str, Any]) -> None:
    """Refuse any adapter but plain LoRA: other PEFT types, LoRA variants, residual initialisations."""
    peft_type = raw.get("peft_type")
    if not isinstance(peft_type, str):
        raise _bad_config(path, "it has no `peft_type`")
    if peft_type.upper() != "LORA":
        raise UnsupportedFormatError(
            f"{shown(path)} describes a PEFT `{peft_type}` adapter; only LoRA adapters are supported",
            hint=_MERGE_HINT,
            path=path,
        )
    for name, what in _VARIANTS:
        if raw.get(name):
            raise UnsupportedFormatError(
                f"{shown(path)} describes a {what} adapter (`{name}`); "
                "only plain LoRA adapters are supported",
                hint=_MERGE_HINT,
                path=path,
            )
    init = raw.get("init_lora_weights")
    if isinstance(init, str):
        for prefix, what in _RESIDUAL_INITS:
            if init.lower().startswith(prefix):
                raise UnsupportedFormatError(
                    f'{shown(path)} describes a {what} adapter (`init_lora_weights: "{init}"`): its factors '
                    "apply to the residual model peft wrote, not to the base model",
                    hint="save it with peft `save_pretrained(..., path_initial_model_for_weight_conversion="
                    "...)`, which makes it a plain LoRA adapter, or merge it into its base model and save "
                    "that",
                    path=path,
                )


@dataclass(frozen=True)
class _Update:
    """One low-rank update of a base tensor: ``scaling * left @ right`` reshaped to the tensor's shape.

    ``transposed`` means the update is ``(B @ A).T``, computed as ``A.T @ B.T``.
    """

    module: str
    a_key: str
    b_key: str
    rank: int
    scaling: float
    transposed: bool


@dataclass(frozen=True)
class _BiasUpdate:
    """``lora_bias=True``: ``scaling * lora_B.bias`` added to the module's bias."""

    key: str
    scaling: float


class PeftCheckpoint(Checkpoint):
    """A PEFT LoRA adapter read as the merged model: the base's tensors, each LoRA target plus its update.

    Opening checks everything that can be checked without reading tensor data: the config (a plain LoRA
    adapter), the adapter weights file (present, header parses), every ``lora_A`` paired with its ``lora_B``
    and rank as the config says, and every target present in the base with a shape the update fits.

    The checkpoint owns ``base`` from then on: ``close`` closes it too (and so does a failed open).

    Attributes:
        path: the adapter folder.
        base: the base model's checkpoint.
        base_name: ``base_model_name_or_path`` from the config (``""`` when it names none).
        config: the parsed ``adapter_config.json``.
        weights_file: ``adapter_model.safetensors`` or ``adapter_model.bin``.
    """

    format = "peft"

    def __init__(self, folder: str | Path, base: Checkpoint, *, boundary: Path | None = None) -> None:
        self.path = Path(folder)
        self.base = base
        self._adapter: Checkpoint | None = None
        try:
            self.config = read_adapter_config(self.path, boundary)
            self.base_name = self.config.base_name
            self.weights_file = adapter_weights_file(self.path)
            self._adapter = _open_weights(self.weights_file, boundary)
            self._plan()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> PeftCheckpoint:
        return self

    @property
    def tensors(self) -> Mapping[str, TensorInfo]:
        return self._tensors

    def rank_of(self, name: str) -> int | None:
        """The LoRA rank of the update added to tensor ``name``; None when LoRA leaves it alone (a bias that
        only ``lora_bias`` moves, or a tensor the adapter replaces whole, counts as untouched)."""
        update = self._updates.get(name)
        return update.rank if update is not None else None

    def read(self, name: str) -> np.ndarray:
        if name not in self._tensors:
            raise KeyError(f"{shown(self.path)} has no tensor `{name}`")
        adapter = self._open_adapter()
        replaced = self._replaced.get(name)
        array = adapter.read(replaced) if replaced is not None else self.base.read(name)
        update = self._updates.get(name)
        bias_update = self._bias_updates.get(name)
        if update is None and bias_update is None:
            return array
        if not array.flags.writeable:  # a reader may hand out a read-only view; the sum needs its own copy
            array = array.copy()
        if update is not None:
            _add_low_rank(array, adapter.read(update.a_key), adapter.read(update.b_key), update)
        if bias_update is not None:
            array += np.float32(bias_update.scaling) * adapter.read(bias_update.key).reshape(array.shape)
        return array

    def close(self) -> None:
        if self._adapter is not None:
            self._adapter.close()
        self.base.close()

    def _open_adapter(self) -> Checkpoint:
        if self._adapter is None:  # only after a failed open, whose caller has the error already
            raise ValueError(f"{shown(self.path)} was not opened")
        return self._adapter

    def _plan(self) -> None:
        """Classify every adapter key and tie it to the base tensor it changes, checking shapes."""
        adapter = self._open_adapter()
        file = self.weights_file
        base_infos = self.base.tensors
        resolve = _NameResolver(base_infos, self.base.path, file)

        factors: dict[str, dict[str, str]] = {}  # module -> {"A"|"B"|"bias"|"embedding": key}
        whole: dict[str, str] = {}  # adapter tensor name (prefix and `base_layer` dropped) -> key
        for key in adapter.tensors:
            name = key.removeprefix(_KEY_PREFIX)
            parts = name.split(".")
            if "lora_magnitude_vector" in parts:
                raise UnsupportedFormatError(
                    f"{shown(file)} holds DoRA magnitudes (`{key}`); only plain LoRA adapters are supported",
                    hint=_MERGE_HINT,
                    path=file,
                )
            factor = _factor_of(parts)
            if factor is not None:
                module, role = factor
                factors.setdefault(module, {})[role] = key
            elif any(part.startswith("lora_") or "trainable_tokens" in part for part in parts):
                raise UnsupportedFormatError(
                    f"{shown(file)} holds `{key}`, which is no LoRA tensor mothertree knows",
                    hint=_MERGE_HINT,
                    path=file,
                )
            else:
                whole[".".join(part for part in parts if part != "base_layer")] = key

        infos = dict(base_infos)
        self._replaced: dict[str, str] = {}
        for name, key in whole.items():
            target = resolve.find(name) or name
            info = adapter.tensors[key]
            infos[target] = TensorInfo(target, info.shape, info.dtype)
            self._replaced[target] = key

        self._updates: dict[str, _Update] = {}
        self._bias_updates: dict[str, _BiasUpdate] = {}
        for module, roles in factors.items():
            update, target = self._update_of(module, roles, infos, resolve)
            self._updates[target] = update
            bias_key = roles.get("bias")
            if bias_key is not None:
                bias_target = resolve.require(f"{module}.bias")
                bias_info, bias_shape = infos[bias_target], adapter.tensors[bias_key].shape
                if bias_info.shape != bias_shape:
                    raise _shape_error(file, bias_key, bias_shape, bias_info, self.base.path)
                self._bias_updates[bias_target] = _BiasUpdate(bias_key, update.scaling)
        self._tensors = MappingProxyType(infos)

    def _update_of(
        self,
        module: str,
        roles: Mapping[str, str],
        infos: Mapping[str, TensorInfo],
        resolve: _NameResolver,
    ) -> tuple[_Update, str]:
        adapter = self._open_adapter()
        file = self.weights_file
        embedding = "embedding_A" in roles or "embedding_B" in roles
        a_key = roles.get("embedding_A" if embedding else "A")
        b_key = roles.get("embedding_B" if embedding else "B")
        if a_key is None or b_key is None:
            have, lack = (a_key, "B") if a_key is not None else (b_key or roles["bias"], "A")
            suffix = f"lora_embedding_{lack}" if embedding else f"lora_{lack}.weight"
            raise InvalidCheckpointError(
                f"{shown(file)} holds `{have}` but no `{_KEY_PREFIX}{module}.{suffix}`",
                hint="the adapter file is incomplete: save or download the adapter again",
                path=file,
            )
        a_shape, b_shape = adapter.tensors[a_key].shape, adapter.tensors[b_key].shape
        rank = a_shape[0] if a_shape else 0
        if (
            len(a_shape) < 2
            or len(b_shape) < 2
            or b_shape[1] != rank
            or len(b_shape) != len(a_shape)
            or any(n != 1 for n in b_shape[2:])
            or (embedding and len(a_shape) != 2)
        ):
            raise InvalidCheckpointError(
                f"{shown(file)}: `{a_key}` {list(a_shape)} and `{b_key}` {list(b_shape)} are not the two "
                "factors of one LoRA update",
                hint=_RESAVE_HINT,
                path=file,
            )
        r, alpha = self.config.rank_and_alpha(module)
        if r != rank:
            raise InvalidCheckpointError(
                f"{shown(file)} holds rank {rank} factors for `{module}`, but {shown(self.config.path)} "
                f"gives it rank {r}",
                hint=_RESAVE_HINT,
                path=file,
            )
        target = resolve.require(f"{module}.weight")  # embeddings too: peft wraps the module
        transposed = self._orientation(module, target, infos[target], a_shape, b_shape, embedding)
        return _Update(module, a_key, b_key, rank, self.config.scaling(r, alpha), transposed), target

    def _orientation(
        self,
        module: str,
        target: str,
        info: TensorInfo,
        a_shape: tuple[int, ...],
        b_shape: tuple[int, ...],
        embedding: bool,
    ) -> bool:
        """Whether ``B @ A`` is added transposed to the base tensor ``target``; refuses one it cannot fit."""
        file = self.weights_file
        plain = (b_shape[0], *a_shape[1:])
        flipped = (a_shape[1], b_shape[0])
        if embedding:
            transposed = True
            fits = info.shape == flipped
        elif len(a_shape) == 2 and info.shape == plain and info.shape == flipped:
            transposed = self.config.fan_in_fan_out  # square: the shapes cannot tell, the saved flag must
            fits = True
        else:
            # peft rewrites `fan_in_fan_out` per module (True for Conv1D, False for Linear) and saves
            # whichever it set last, so the base tensor's shape is the better witness.
            transposed = len(a_shape) == 2 and info.shape == flipped and info.shape != plain
            fits = info.shape in (plain, flipped) if len(a_shape) == 2 else info.shape == plain
        if not fits:
            raise _shape_error(file, module, flipped if embedding else plain, info, self.base.path)
        if not info.is_float:
            raise UnsupportedFormatError(
                f"{shown(file)} updates `{target}`, which holds `{info.dtype}` values in the base model "
                f"{shown(self.base.path)}",
                hint=_WRONG_BASE_HINT,
                path=file,
            )
        return transposed


class _NameResolver:
    """Maps adapter tensor names to base tensor names: exact, else by a dot-separated tail either way."""

    def __init__(self, base: Mapping[str, TensorInfo], base_path: Path, file: Path) -> None:
        self._names = base
        self._base_path = base_path
        self._file = file
        self._by_tail: dict[str, list[str]] | None = None

    def require(self, name: str) -> str:
        found = self.find(name)
        if found is None:
            raise InvalidCheckpointError(
                f"{shown(self._file)} updates `{name}`, but the base model {shown(self._base_path)} "
                "has no such tensor",
                hint=_WRONG_BASE_HINT,
                path=self._file,
            )
        return found

    def find(self, name: str) -> str | None:
        if name in self._names:
            return name
        longer = self._tails().get(name, [])
        if len(longer) > 1:
            listed = ", ".join(f"`{n}`" for n in sorted(longer)[:3]) + (", ..." if len(longer) > 3 else "")
            raise InvalidCheckpointError(
                f"{shown(self._file)}: `{name}` matches several tensors of the base model "
                f"{shown(self._base_path)} ({listed})",
                hint="the adapter was saved from a model whose module names differ from the base "
                "checkpoint's; save the adapter from the base model as `from_pretrained` loads it",
                path=self._file,
            )
        if longer:
            return longer[0]
        parts = name.split(".")
        for start in range(1, len(parts) - 1):  # keep at least `<module>.weight`
            shorter = ".".join(parts[start:])
            if shorter in self._names:
                return shorter
        return None

    def _tails(self) -> dict[str, list[str]]:
        # Built on the first miss only: most adapters name the base's tensors exactly.
        if self._by_tail is None:
            self._by_tail = {}
            for full in self._names:
                parts = full.split(".")
                for start in range(1, len(parts) - 1):
                    self._by_tail.setdefault(".".join(parts[start:]), []).append(full)
        return self._by_tail


def lora_file_error(names: Iterable[str], file: Path) -> UnsupportedFormatError | None:
    """Why a plain checkpoint file whose tensors have these names is a LoRA file and no model, if it is one.

    Kohya-style files (``<prefix>_<path>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``, common for
    Stable Diffusion) and PEFT adapter weights separated from their ``adapter_config.json`` hold low-rank
    factors, not weights; comparing them with models would be meaningless.
    """
    kohya = peft = None
    for name in names:
        if kohya is None and name.endswith((".lora_down.weight", ".lora_up.weight")):
            kohya = name
        elif peft is None and _factor_of(name.split(".")) is not None:
            peft = name
    if kohya is not None:
        return UnsupportedFormatError(
            f"{shown(file)} is a kohya-style LoRA file; only PEFT adapters are supported",
            hint="convert it to a PEFT adapter, or merge it into its base model "
            "(kohya's `networks/merge_lora.py`) and pass the merged model",
            path=file,
        )
    if peft is not None:
        return UnsupportedFormatError(
            f"{shown(file)} holds PEFT LoRA factors (`{peft}`) but no `{ADAPTER_CONFIG}` lies beside it",
            hint=f"keep the adapter's `{ADAPTER_CONFIG}` and weights file together in one folder, "
            "and pass that folder",
            path=file,
        )
    return None


def _factor_of(parts: list[str]) -> tuple[str, str] | None:
    """(module, role) for a LoRA factor's key split at dots; role: A, B, bias, embedding_A or embedding_B."""
    if len(parts) >= 3 and parts[-2] in ("lora_A", "lora_B") and parts[-1] in ("weight", "bias"):
        role = parts[-2][-1] if parts[-1] == "weight" else ("bias" if parts[-2] == "lora_B" else None)
        return (".".join(parts[:-2]), role) if role is not None else None
    if len(parts) >= 2 and parts[-1] in ("lora_embedding_A", "lora_embedding_B"):
        return ".".join(parts[:-1]), parts[-1].removeprefix("lora_")
    return None


def _add_low_rank(out: np.ndarray, a: np.ndarray, b: np.ndarray, update: _Update) -> None:
    """``out += scaling * B @ A`` (or its transpose), in row blocks so that no second full matrix exists."""
    rank = update.rank
    left, right = b.reshape(b.shape[0], rank), a.reshape(rank, -1)
    if update.transposed:
        left, right = right.T, left.T
    flat = out.reshape(left.shape[0], right.shape[1])  # a view: `out` is C-contiguous
    rows = max(1, _BLOCK_ELEMENTS // max(1, right.shape[1]))
    scaling = np.float32(update.scaling)
    for start in range(0, flat.shape[0], rows):
        # peft scales B @ A, then adds; doing the same keeps results equal to the last bit more often.
        block = left[start : start + rows] @ right
        block *= scaling
        flat[start : start + rows] += block


def _open_weights(file: Path, boundary: Path | None) -> Checkpoint:
    if file.suffix == ".safetensors":
        return SafetensorsCheckpoint(file, boundary=boundary)
    return TorchCheckpoint(file, boundary=boundary)


def _pattern_key(pattern: Mapping[str, object], module: str, path: Path) -> str | None:
    # peft's `get_pattern_key`: the key is a regex that must match the whole name or a tail after a dot.
    for key in pattern:
        try:
            if regex.match(rf"(.*\.)?({key})$", module, timeout=PATTERN_TIMEOUT_S):
                return key
        except TimeoutError:
            raise LimitExceededError(
                f"{shown(path)}: the pattern `{key}` takes more than {PATTERN_TIMEOUT_S} s to match "
                f"`{module}`: it backtracks without end",
                hint="peft patterns are module names such as `query` or `layer\\.0\\..*`; fix the config",
                path=path,
            ) from None
    return None


def _shape_error(
    file: Path, what: str, shape: Collection[int], info: TensorInfo, base_path: Path
) -> InvalidCheckpointError:
    return InvalidCheckpointError(
        f"{shown(file)}: the LoRA update of `{what}` has shape {list(shape)}, but `{info.name}` of the base "
        f"model {shown(base_path)} has shape {list(info.shape)}",
        hint=_WRONG_BASE_HINT,
        path=file,
    )


_CONFIG_HINT = "save the adapter again with peft `save_pretrained`"


def _bad_config(path: Path, why: str) -> InvalidCheckpointError:
    return InvalidCheckpointError(
        f"{shown(path)} is not a valid PEFT adapter config: {why}", hint=_CONFIG_HINT, path=path
    )


def _positive_int(path: Path, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad_config(path, f"`{name}` is {json.dumps(value)}, not a positive integer")
    return value


def _number(path: Path, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad_config(path, f"`{name}` is {json.dumps(value)}, not a number")
    return float(value)


def _flag(path: Path, name: str, value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad_config(path, f"`{name}` is {json.dumps(value)}, not true or false")
    return value


def _pattern(path: Path, name: str, value: object) -> dict[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad_config(path, f"`{name}` is not an object of module patterns")
    for key in value:
        try:
            regex.compile(key)
        except regex.error:
            raise _bad_config(path, f"`{name}` key `{key}` is not a valid regular expression") from None
    return value
