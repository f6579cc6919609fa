"""Every error mothertree raises on purpose, each with a hint saying what to do.

The CLI prints ``error: <message>`` and, after a blank line, ``hint: <hint>``, then exits with 1. Set
``MOTHERTREE_DEBUG=1`` to see the traceback instead. Each class also derives from the builtin a caller
would naturally catch (``FileNotFoundError``, ``ValueError``).
"""

from __future__ import annotations

from pathlib import Path


class MotherTreeError(Exception):
    """Base class: a message naming what went wrong (and where), plus a hint."""

    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.path = Path(path) if path is not None else None

    def __str__(self) -> str:
        return self.message


class CheckpointNotFoundError(MotherTreeError, FileNotFoundError):
    """A path given by the user, or a file a checkpoint refers to, does not exist."""

    default_hint = "check the path; `mothertree recover` takes a folder of model folders or checkpoint files"


class NoModelsFoundError(MotherTreeError, ValueError):
    """A folder holds no checkpoint mothertree can read."""

    default_hint = (
        "a model is a folder with `*.safetensors` or `*.bin` files (sharded or not), a single "
        "`.safetensors`, `.bin`, `.pt` or `.pth` file, or a Hugging Face cache entry `models--org--name`"
    )


class InvalidCheckpointError(MotherTreeError, ValueError):
    """A checkpoint file is truncated, corrupt, or not what its name says."""

    default_hint = "the file may be truncated or corrupt: download or save it again"


class OutsideInputError(MotherTreeError, PermissionError):
    """A link, shard name or cache ref leads outside the input mothertree was given."""

    default_hint = (
        "mothertree opens only files inside the folders it is given: copy the files in, or pass "
        "`--follow-links` if you trust where the links lead"
    )


class NotARegularFileError(InvalidCheckpointError):
    """A path that should be a file is a FIFO, a socket, a device or a folder."""

    default_hint = "replace it with the real file, or remove it from the collection"


class LimitExceededError(InvalidCheckpointError):
    """A file's structure is larger than any real checkpoint's: too many tensors, too deep, too big."""

    default_hint = (
        "real checkpoints stay far below this limit: the file is malformed or crafted; save the model again"
    )


class UnreadableFileError(MotherTreeError, OSError):
    """The operating system refused to open or read a file (permissions, I/O error, link loop)."""

    default_hint = "check that the file is readable and not damaged"


class MissingShardError(InvalidCheckpointError):
    """A shard index names a file that is not there."""

    default_hint = "the download is incomplete: fetch the missing shard again (or remove the model)"


class UnsupportedFormatError(MotherTreeError, ValueError):
    """A checkpoint is in a format mothertree does not read (yet)."""


class MissingDependencyError(MotherTreeError):
    """An optional dependency is needed for this input."""


class NoComparableTensorsError(MotherTreeError, ValueError):
    """The selected models share no tensor of the same name and shape."""

    default_hint = "models of different architectures cannot be compared; check `--layers` or the folder"


class TooFewModelsError(MotherTreeError, ValueError):
    """Fewer than two readable models: there is no tree to recover."""

    default_hint = "give a folder holding at least two models of the same architecture"


class NonFiniteWeightsError(MotherTreeError, ValueError):
    """A model holds NaN or infinite weights; distances to it are meaningless."""

    default_hint = "the checkpoint is broken (a diverged run?): remove it or replace it with a good one"


class InvalidTruthError(MotherTreeError, ValueError):
    """A ground-truth or result file is not in the expected shape."""

    default_hint = 'a truth file is JSON like {"edges": [{"parent": "a", "child": "b"}]}'


class InvalidFeatureSetError(MotherTreeError, ValueError):
    """A saved FeatureSet file cannot be read."""

    default_hint = "write them again with `mothertree recover MODELS --save-features FILE.npz`"


class InvalidStoreError(MotherTreeError, ValueError):
    """A fingerprint store file is not one, is damaged, or was made by another version or parameters."""

    default_hint = (
        "give `--store` another file to start a new store, or delete this one and run `mothertree index` "
        "again (the weights are not in it: nothing is lost but the time to read them)"
    )


class InvalidParameterError(MotherTreeError, ValueError):
    """A parameter value is out of range or inconsistent with the data."""


class NotFittedError(MotherTreeError, AttributeError):
    """A result attribute (``edges_``, ...) was read before ``fit``."""

    default_hint = "call `fit(features)` (or `fit_matrices(...)`) first"


class UnsupportedQuantizationError(UnsupportedFormatError):
    """A checkpoint holds integer-quantised weights in a scheme mothertree cannot read back as floats."""

    default_hint = (
        "mothertree reads bitsandbytes LLM.int8 and 4-bit weights, ONNX int8 and GGUF files; for other "
        "schemes, dequantise the model (e.g. transformers' `model.dequantize()`) and save it in 16 or 32 "
        "bits, or leave it out of the collection"
    )


class GraphvizNotFoundError(MissingDependencyError):
    """Graphviz's `dot` program, which lays out the SVG and PNG figures, is not installed."""

    default_hint = (
        "install Graphviz (`apt-get install graphviz`, `brew install graphviz` or `conda install graphviz`); "
        "or write `--format dot` and lay it out elsewhere, or `--format html`, which needs no Graphviz"
    )


class GraphvizFailedError(MotherTreeError, RuntimeError):
    """Graphviz's `dot` was found but could not lay out the figure."""

    default_hint = (
        "check that `dot -V` runs; a Graphviz built without PNG support can still write `--format svg`"
    )
