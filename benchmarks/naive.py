"""The naive baseline: load every model whole, then compare pairs (how the paper's code works).

Run as ``python benchmarks/naive.py DIR``; prints the recovered edges as JSON. Same distances, same
kurtosis and same tree step as mothertree, so the benchmark compares only how the weights are read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import scipy.stats

from mothertree.features.select import select_tensors
from mothertree.io import discover
from mothertree.io.types import TensorInfo
from mothertree.tree.recover import TreeRecovery


def load_whole(weights_path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a model in memory, as float32 (what ``from_pretrained`` costs, without torch)."""
    import ml_dtypes  # noqa: F401 - registers bfloat16 with numpy
    from safetensors.numpy import load_file

    files = [weights_path] if weights_path.is_file() else sorted(weights_path.glob("*.safetensors"))
    state: dict[str, np.ndarray] = {}
    for file in files:
        state.update({k: v.astype(np.float32) for k, v in load_file(file).items()})
    if not files:
        import torch

        pickles = [weights_path] if weights_path.is_file() else sorted(weights_path.glob("*.bin"))
        for file in pickles:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
            state.update({k: v.float().numpy() for k, v in loaded.items()})
    return state


def main(root: str) -> None:
    refs, _ = discover(Path(root))
    models = [load_whole(ref.weights_path) for ref in refs]
    infos = [
        {k: TensorInfo(k, tuple(v.shape), "F32") for k, v in m.items() if v.dtype == np.float32}
        for m in models
    ]
    names = [t.name for t in select_tensors(infos)]
    n = len(models)
    distances = np.zeros((n, n))
    relative = np.zeros((n, n))
    mean_squares = [[float(np.mean(m[k].astype(np.float64) ** 2)) for k in names] for m in models]
    for i in range(n):
        for j in range(i + 1, n):
            rms = [np.sqrt(np.mean((models[i][k].astype(np.float64) - models[j][k]) ** 2)) for k in names]
            scale = np.sqrt((np.array(mean_squares[i]) + np.array(mean_squares[j])) / 2)
            distances[i, j] = distances[j, i] = float(np.mean(rms))
            relative[i, j] = relative[j, i] = float(np.mean(np.array(rms) / scale))
    kurtosis = np.array([sum(scipy.stats.kurtosis(m[k].ravel()) for k in names) for m in models])
    sizes = np.array([models[0][k].size for k in names])
    log_norms = np.log([float(np.dot(ms, sizes)) for ms in mean_squares])
    recovery = TreeRecovery().fit_matrices(
        distances, kurtosis, [ref.id for ref in refs], log_norms=log_norms, relative_distances=relative
    )
    edges = [{"parent": e.parent, "child": e.child, "distance": e.distance} for e in recovery.edges_]
    print(json.dumps({"edges": edges}))


if __name__ == "__main__":
    main(sys.argv[1])
