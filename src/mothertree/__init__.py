"""mothertree: recover Model Trees (which model was fine-tuned from which) from weights alone.

An implementation of MoTHer (Horwitz, Shul & Hoshen, *Unsupervised Model Tree Heritage Recovery*,
ICLR 2025) that streams checkpoints tensor by tensor.

The names below are imported on first use, so that ``import mothertree`` (and ``mothertree --help``)
costs milliseconds rather than the import of numpy, scipy and the readers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .errors import MotherTreeError
    from .evaluation.metrics import Score, score_edges
    from .features.featureset import FeatureSet
    from .pipeline import read_features, recover, recover_trees
    from .result import RecoveryResult
    from .tree.recover import Edge, TreeRecovery

_WHERE = {
    "Edge": ".tree.recover",
    "FeatureSet": ".features.featureset",
    "MotherTreeError": ".errors",
    "RecoveryResult": ".result",
    "Score": ".evaluation.metrics",
    "TreeRecovery": ".tree.recover",
    "read_features": ".pipeline",
    "recover": ".pipeline",
    "recover_trees": ".pipeline",
    "score_edges": ".evaluation.metrics",
}

__all__ = [
    "Edge",
    "FeatureSet",
    "MotherTreeError",
    "RecoveryResult",
    "Score",
    "TreeRecovery",
    "__version__",
    "read_features",
    "recover",
    "recover_trees",
    "score_edges",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mothertree' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
