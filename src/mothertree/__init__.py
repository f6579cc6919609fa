"""mothertree: recover Model Trees (which model was fine-tuned from which) from weights alone.

An implementation of MoTHer (Horwitz, Shul & Hoshen, *Unsupervised Model Tree Heritage Recovery*,
ICLR 2025) that streams checkpoints tensor by tensor.
"""

from ._version import __version__
from .errors import MotherTreeError
from .evaluation.metrics import Score, score_edges
from .features.featureset import FeatureSet
from .pipeline import read_features, recover, recover_trees
from .result import RecoveryResult
from .tree.recover import Edge, TreeRecovery

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
