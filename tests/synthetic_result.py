"""A synthetic recovery result of any size, for the report's scale test and benchmark (only its size and
shape matter: no weights are behind it)."""

from __future__ import annotations

import numpy as np

from mothertree.result import Edge, RecoveredModel, RecoveredTree, RecoveryResult


def synthetic_result(n: int, seed: int = 0) -> RecoveryResult:
    """Synthetic: ``n`` models in three trees, each model's parent a random earlier model of its tree."""
    rng = np.random.default_rng(seed)
    ids = [f"org-{k % 7}/model-{k:04d}-finetune" for k in range(n)]
    tree_of = [k % 3 for k in range(n)]
    edges = []
    for k in range(3, n):
        earlier = list(range(k - 3, -1, -3))[:40]  # models of its own tree (the same k % 3), recent ones
        parent = earlier[int(rng.integers(len(earlier)))]
        edges.append(
            Edge(
                ids[parent],
                ids[k],
                float(rng.uniform(1e-4, 1e-2)),
                float(rng.uniform(0.3, 1)),
                direction_probability=float(rng.uniform(0.5, 1)),
            )
        )
    return RecoveryResult(
        models=[RecoveredModel(i, f"/models/{i}", t) for i, t in zip(ids, tree_of, strict=True)],
        edges=edges,
        trees=[
            RecoveredTree(ids[t], [i for i, u in zip(ids, tree_of, strict=True) if u == t], "norm grows")
            for t in range(3)
        ],
        params={"direction": "auto"},
    )
