"""Finding the models under a path, cheaply: file names and folder layout only, never tensor data.

Rules, applied to the path given (the root) and then to each folder below it:

1. A weight file (``.safetensors``, ``.bin``, ``.pt``, ``.pth``, ``.onnx``, ``.gguf``, or a ``*.index.json``
   shard index) given as the root is the one model.
2. A Hugging Face cache entry ``models--org--name`` (a folder with ``snapshots/``, ``refs/`` or ``blobs/``)
   is one model, read from its snapshot (the commit ``refs/main`` names, else the only snapshot, else the
   most recently modified one). Its id is ``org/name``.
3. A folder with ``adapter_config.json`` is a PEFT LoRA adapter, a model read as its base plus the update:
   ``ModelRef.adapter_base`` is the base its config declares (also in ``declared_base_models``). A config
   that does not parse, or describes an adapter mothertree cannot merge (not LoRA, DoRA, ...), makes it
   broken. Its weights file is checked by ``open_checkpoint``, like every model's. An adapter's weights
   file given as the root is its folder.
4. A folder is a model if it holds ``model.safetensors``, a ``*.safetensors.index.json``,
   ``pytorch_model.bin`` or a ``*.bin.index.json``. Its sub-folders are not searched: a Trainer's
   ``checkpoint-*`` folders are part of the run, not models to compare.
5. A folder is a model if it holds exactly one weight file and no model is found in its sub-folders.
6. Any other folder is a collection: each weight file in it is a model (id: the file name without its
   extension) and each sub-folder is searched with these same rules. A cache root (the folder holding
   ``models--*`` entries) is such a collection.
7. Shard files (``*-00001-of-00003.safetensors``) with no index beside them are reported as broken: only
   the index says which tensor is where.
8. A file in a model format mothertree does not read (``.h5``, ``.msgpack``, ``.tflite``, ``.mlmodel``,
   ``.ckpt``, ...) is reported as broken, naming its format, unless it sits beside a readable model (then it
   is another serialisation of that model, as ``tf_model.h5`` beside ``model.safetensors``).
9. Never models: hidden files and folders (``.git``, ``.cache``), ``datasets--*``/``spaces--*`` cache
   entries, files that are not weights (JSON, README, images, tokenizer files), and the training-state
   pickles trainers write next to weights (``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``,
   ``training_args.bin``).

A model's id is its folder's name (a loose file's name without extension, a cache entry's ``org/name``).
When ids clash, every clashing model gets its path relative to the root instead, with ``/`` separators.
Models are returned sorted by id, broken models by path.

A weights file that is a broken link (a cache snapshot whose blob is missing) makes its model broken;
everything else (index contents, headers, truncation) is checked by ``open_checkpoint``.

Hostile input is listed, never followed and never dropped without a word (each is a ``BrokenModel``): a
folder or weights file whose link leads outside the input (unless ``follow_links``), a folder nested more than
``MAX_DEPTH`` below the root, a folder that cannot be listed, a folder named like a weights file that holds
no model. Every ``ModelRef`` carries the input's boundary, which ``open_checkpoint`` confines its reads to
(see ``_guards``).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..errors import (
    CheckpointNotFoundError,
    InvalidCheckpointError,
    LimitExceededError,
    MotherTreeError,
    NoModelsFoundError,
    NotARegularFileError,
    OutsideInputError,
)
from ._files import (
    WEIGHT_SUFFIXES,
    broken_link_error,
    is_broken_link,
    is_shard_name,
    other_model_format,
    shown,
    unread_format_error,
)
from ._guards import FOLLOW_LINKS, boundary_of, check_inside, is_inside, os_error, real_path
from ._layout import INDEX_SUFFIXES, file_names, loose_weight_files, named_weights_file
from .hf_cache import OTHER_ENTRY_PREFIXES, is_cache_entry, repo_id, resolve_snapshot
from .model_card import read_declared_base_models
from .peft_reader import ADAPTER_WEIGHTS, adapter_folder_of, is_adapter_folder, read_adapter_config
from .types import BrokenModel, ModelRef

# Folders that never hold models and can be large; hidden ones are skipped by name already.
_SKIPPED_FOLDERS = frozenset({"__pycache__", "node_modules"})
# Real collections are a few levels deep (a cache root, an entry, a snapshot); the search recurses.
MAX_DEPTH = 64


def discover(root: Path, *, follow_links: bool = False) -> tuple[list[ModelRef], list[BrokenModel]]:
    """The models under ``root`` (see the module docstring for the rules), and those found but unusable.

    ``follow_links`` lets links lead anywhere (a symlink farm the user trusts); by default a model's files
    must lie inside ``root`` (or the Hugging Face cache entry ``root`` is in).

    Raises:
        CheckpointNotFoundError: ``root`` does not exist.
        NoModelsFoundError: nothing under ``root`` looks like a model, usable or not.
    """
    root = Path(root)
    if not os.path.exists(root) and not os.path.islink(root):
        raise CheckpointNotFoundError(f"{shown(root)} does not exist", path=root)
    if is_broken_link(root):
        raise broken_link_error(root)  # a link to nothing, or one that loops
    search = _Search(root, FOLLOW_LINKS if follow_links else boundary_of(root))
    adapter = adapter_folder_of(root)
    if adapter is not None and not os.path.isdir(root):
        search.adapter(_name(adapter), path=adapter, folder=adapter)
    elif os.path.isdir(root):
        search.folder(root)
    elif root.name.endswith(WEIGHT_SUFFIXES) or root.name.endswith(INDEX_SUFFIXES):
        model_id = _name(root.parent) if root.name.endswith(INDEX_SUFFIXES) else root.stem
        search.add(model_id, path=root, weights_path=root, weights_file=root)
    elif other_model_format(root.name) is not None:
        search.unread(root)
    else:
        raise NoModelsFoundError(f"{shown(root)} is not a checkpoint file", path=root)

    if not search.models and not search.broken:
        raise NoModelsFoundError(f"no models found in {shown(root)}", path=root)
    return _with_unique_ids(search.models, root), sorted(search.broken, key=lambda b: str(b.path))


class _Search:
    def __init__(self, root: Path, boundary: Path) -> None:
        self.root = root
        self.boundary = boundary
        self.models: list[ModelRef] = []
        self.broken: list[BrokenModel] = []
        self._visited: set[Path] = set()

    def found(self) -> int:
        return len(self.models) + len(self.broken)

    def add(
        self,
        model_id: str,
        *,
        path: Path,
        weights_path: Path,
        weights_file: Path,
        declared: tuple[str, ...] = (),
        adapter_base: str | None = None,
    ) -> None:
        if is_broken_link(weights_file):
            self.broken.append(BrokenModel(path=path, error=broken_link_error(weights_file)))
            return
        if not is_inside(weights_file, self.boundary):
            self.refuse(weights_file)
            return
        self.models.append(ModelRef(model_id, path, weights_path, declared, adapter_base, self.boundary))

    def unread(self, path: Path) -> None:
        """A model in a format mothertree does not read: listed, so that it is not lost without a word."""
        kind = other_model_format(path.name)
        assert kind is not None
        self.broken.append(BrokenModel(path=path, error=unread_format_error(path, kind)))

    def refuse(self, path: Path) -> None:
        """A link that leads outside the input: listed, not followed."""
        try:
            check_inside(path, self.boundary)
        except OutsideInputError as exc:
            self.broken.append(BrokenModel(path=path, error=exc))

    def adapter(self, model_id: str, *, path: Path, folder: Path) -> None:
        """A PEFT adapter in ``folder`` (a cache snapshot's, when ``path`` is the cache entry)."""
        try:
            config = read_adapter_config(folder, self.boundary)
        except MotherTreeError as exc:
            self.broken.append(BrokenModel(path=path, error=exc))
            return
        present = [
            folder / name
            for name in ADAPTER_WEIGHTS
            if os.path.isfile(folder / name) or is_broken_link(folder / name)
        ]
        declared = (config.base_name, *read_declared_base_models(folder, self.boundary))
        self.add(
            model_id,
            path=path,
            weights_path=folder,
            # A missing weights file is open_checkpoint's to report, with what to do about it.
            weights_file=present[0] if present else config.path,
            declared=tuple(dict.fromkeys(name for name in declared if name)),
            adapter_base=config.base_name,
        )

    def folder(self, folder: Path, depth: int = 0) -> None:
        if not is_inside(folder, self.boundary):
            self.refuse(folder)
            return
        real = real_path(folder)
        if real in self._visited:  # a symlink loop, or two links to one folder
            return
        self._visited.add(real)
        if depth > MAX_DEPTH:
            too_deep = LimitExceededError(
                f"{shown(folder)} is nested more than {MAX_DEPTH} folders below {shown(self.root)}; "
                "it was not searched",
                hint="pass that folder itself if it holds models",
                path=folder,
            )
            self.broken.append(BrokenModel(path=folder, error=too_deep))
            return
        if is_cache_entry(folder):
            self.cache_entry(folder)
            return
        try:
            names = file_names(folder)
            subfolders = _subfolders(folder)
        except OSError as exc:
            if folder == self.root:
                raise os_error(folder, exc) from None
            self.broken.append(BrokenModel(path=folder, error=os_error(folder, exc)))
            return
        if is_adapter_folder(folder):
            self.adapter(_name(folder), path=folder, folder=folder)
            return
        named = named_weights_file(names)
        if named is not None:
            self.add(
                _name(folder),
                path=folder,
                weights_path=folder,
                weights_file=folder / named,
                declared=read_declared_base_models(folder, self.boundary),
            )
            return

        loose = loose_weight_files(names, folder)
        shards = [name for name in loose if is_shard_name(name)]
        singles = [name for name in loose if not is_shard_name(name)]
        before = self.found()
        for subfolder in subfolders:
            self.folder(subfolder, depth + 1)
        if len(singles) == 1 and not shards and self.found() == before:
            self.add(
                _name(folder),
                path=folder,
                weights_path=folder,
                weights_file=folder / singles[0],
                declared=read_declared_base_models(folder, self.boundary),
            )
            return
        if self.found() == before and not loose and folder.name.endswith(WEIGHT_SUFFIXES):
            not_a_file = NotARegularFileError(
                f"{shown(folder)} is a folder, not a weights file, and holds no model", path=folder
            )
            self.broken.append(BrokenModel(path=folder, error=not_a_file))
            return
        if shards:
            listed = ", ".join(f"`{name}`" for name in shards[:3]) + (", ..." if len(shards) > 3 else "")
            error = InvalidCheckpointError(
                f"{shown(folder)} holds shard files ({listed}) but no index naming their tensors",
                hint="download the `*.index.json` file that came with the shards too",
                path=folder,
            )
            self.broken.append(BrokenModel(path=folder, error=error))
        for name in singles:
            file = folder / name
            self.add(Path(name).stem, path=file, weights_path=file, weights_file=file)
        # Beside a readable model they are other serialisations of it (`tf_model.h5`); here they are not.
        for name in names:
            if other_model_format(name) is not None:
                self.unread(folder / name)

    def cache_entry(self, entry: Path) -> None:
        try:
            snapshot = resolve_snapshot(entry)
            names = file_names(snapshot)
        except (MotherTreeError, OSError) as exc:
            self.broken.append(BrokenModel(path=entry, error=exc))
            return
        if is_adapter_folder(snapshot):
            self.adapter(repo_id(entry), path=entry, folder=snapshot)
            return
        named = named_weights_file(names)
        loose = loose_weight_files(names, snapshot)
        other = [name for name in names if other_model_format(name) is not None]
        if named is None and not loose and other:
            for name in other:
                self.unread(snapshot / name)
            return
        if named is None and len(loose) != 1:
            why = "no weights file" if not loose else f"{len(loose)} weight files and no index"
            error = InvalidCheckpointError(
                f"{shown(snapshot)} holds {why}",
                hint=f"download the model's weights, e.g. `hf download {repo_id(entry)}`",
                path=snapshot,
            )
            self.broken.append(BrokenModel(path=entry, error=error))
            return
        self.add(
            repo_id(entry),
            path=entry,
            weights_path=snapshot,
            weights_file=snapshot / (named if named is not None else loose[0]),
            declared=read_declared_base_models(snapshot, self.boundary),
        )


def _subfolders(folder: Path) -> list[Path]:
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in _SKIPPED_FOLDERS or name.startswith(OTHER_ENTRY_PREFIXES):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:  # listed by `file_names`, and reported when read
                is_dir = False
            if is_dir:
                found.append(folder / name)
    return sorted(found)


def _name(path: Path) -> str:
    # `Path(".").name` is empty; the folder the user means has a name.
    return path.name or path.resolve().name


def _with_unique_ids(models: list[ModelRef], root: Path) -> list[ModelRef]:
    ids = _unique([model.id for model in models], [_relative(model.path, root) for model in models])
    renamed = [
        model if model.id == new_id else dataclasses.replace(model, id=new_id)
        for model, new_id in zip(models, ids, strict=True)
    ]
    return sorted(renamed, key=lambda model: model.id)


def with_unique_ids(models: Sequence[ModelRef]) -> list[ModelRef]:
    """Models found under several roots (``discover`` of each), with ids unique across all: a clashing id
    becomes the model's path relative to the folder the models of that id are all in (``a/model``,
    ``b/model``)."""
    counts = Counter(model.id for model in models)
    if all(count == 1 for count in counts.values()):
        return list(models)
    absolute = {i: Path(os.path.abspath(model.path)) for i, model in enumerate(models)}
    shared: dict[str, Path] = {}  # per clashing id, the folder its models are all in
    for model_id in (model_id for model_id, count in counts.items() if count > 1):
        paths = [str(absolute[i]) for i, model in enumerate(models) if model.id == model_id]
        shared[model_id] = Path(os.path.commonpath(paths))
    fallbacks = [
        _relative(absolute[i], shared[model.id]) if model.id in shared else model.id
        for i, model in enumerate(models)
    ]
    ids = _unique([model.id for model in models], fallbacks)
    return [
        model if model.id == new_id else dataclasses.replace(model, id=new_id)
        for model, new_id in zip(models, ids, strict=True)
    ]


def _unique(ids: list[str], fallbacks: list[str]) -> list[str]:
    """``ids`` with every clashing one replaced by its fallback (a relative path)."""
    ids = list(ids)
    # A relative path may itself equal another model's id (`org/name` of a cache entry), so repeat until
    # no two ids clash; every model changes at most once, and relative paths are unique.
    while True:
        counts = Counter(ids)
        clashing = [i for i, model_id in enumerate(ids) if counts[model_id] > 1]
        changed = False
        for i in clashing:
            if ids[i] != fallbacks[i]:
                ids[i] = fallbacks[i]
                changed = True
        if not changed:
            return ids


def _relative(path: Path, root: Path) -> str:
    try:
        relative = path.relative_to(root)
    except ValueError:
        return path.as_posix()
    return relative.as_posix() if relative.parts else _name(path)
