"""Benchmark: minimum spanning arborescence on dense graphs, ours against networkx.

Two kinds of cost matrix:

* ``random``: independent uniform costs in [0, 1).
* ``tree-like``: what Model Tree recovery produces. A random rooted tree is drawn, nodes are placed by a
  random walk along it in R^d (child = parent + Gaussian noise), and the cost of ``i -> j`` is the
  Euclidean distance plus a small random asymmetric penalty.

networkx is only timed up to ``networkx_limit`` nodes: it takes seconds at n = 100 and minutes (and many
GB) at n = 500. Only its algorithm call is timed, not the graph construction. Whenever both run, their
total costs are checked to agree.

Run ``python benchmarks/bench_mdst.py`` for a markdown table, or call :func:`run`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from mothertree.tree.arborescence import arborescence_cost, minimum_spanning_arborescence

FloatArray = npt.NDArray[np.float64]

KINDS = ("random", "tree-like")


def random_costs(n: int, rng: np.random.Generator) -> FloatArray:
    costs: FloatArray = rng.random((n, n))
    return costs


def tree_like_costs(
    n: int, rng: np.random.Generator, *, dim: int = 32, noise: float = 1.0, penalty: float = 0.05
) -> FloatArray:
    """Distances between nodes placed by a random walk along a random recursive tree."""
    order = rng.permutation(n)  # node order[k] is the k-th to be attached, so labels say nothing
    positions = np.empty((n, dim))
    positions[order[0]] = rng.normal(size=dim)
    for k in range(1, n):
        parent = order[rng.integers(k)]
        positions[order[k]] = positions[parent] + noise * rng.normal(size=dim)
    squared = (positions**2).sum(axis=1)
    gram = positions @ positions.T
    distance = np.sqrt(np.maximum(squared[:, np.newaxis] + squared[np.newaxis, :] - 2.0 * gram, 0.0))
    costs: FloatArray = distance + penalty * rng.random((n, n))
    return costs


def _median_seconds(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _networkx_cost(costs: FloatArray, repeats: int) -> tuple[float, float]:
    import networkx as nx  # a dev dependency; imported only when it is timed

    n = costs.shape[0]
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_weighted_edges_from(
        (i, j, float(costs[i, j])) for i in range(n) for j in range(n) if i != j and np.isfinite(costs[i, j])
    )
    seconds, tree = _median_seconds(lambda: nx.minimum_spanning_arborescence(graph), repeats)
    total = float(sum(weight for _, _, weight in tree.edges(data="weight")))
    return seconds, total


def run(
    sizes: Sequence[int] = (100, 500, 1000, 2000), repeats: int = 3, networkx_limit: int = 100
) -> list[dict[str, Any]]:
    """Time both implementations; one row per (size, kind): n, kind, ours_s, networkx_s (None if skipped)."""
    rows: list[dict[str, Any]] = []
    for n in sizes:
        for kind in KINDS:
            rng = np.random.default_rng([n, KINDS.index(kind)])
            costs = random_costs(n, rng) if kind == "random" else tree_like_costs(n, rng)
            ours_s, parents = _median_seconds(partial(minimum_spanning_arborescence, costs), repeats)
            networkx_s = None
            if n <= networkx_limit:
                networkx_s, networkx_total = _networkx_cost(costs, repeats)
                ours_total = arborescence_cost(costs, parents)
                if not np.isclose(ours_total, networkx_total, rtol=1e-9, atol=1e-9):
                    raise RuntimeError(
                        f"{kind} n={n}: cost {ours_total!r} but networkx found {networkx_total!r}"
                    )
            rows.append({"n": n, "kind": kind, "ours_s": ours_s, "networkx_s": networkx_s})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| n | kind | ours (s) | networkx (s) |", "|---:|:---|---:|---:|"]
    for row in rows:
        networkx_s = "—" if row["networkx_s"] is None else f"{row['networkx_s']:.3f}"
        lines.append(f"| {row['n']} | {row['kind']} | {row['ours_s']:.3f} | {networkx_s} |")
    return "\n".join(lines)


def main() -> None:
    print(markdown_table(run()))


if __name__ == "__main__":
    main()
