"""Minimum spanning arborescence (directed minimum spanning tree) over a dense cost matrix.

The algorithm is Chu–Liu–Edmonds: every node takes its cheapest in-edge; if those edges close a cycle, the
cycle is contracted into one node whose in-edges are charged only what they add over the cycle edge they
would replace; the search repeats on the smaller graph, and the contractions are finally undone in reverse.

The contractions follow Tarjan's O(n²) scheme for dense graphs: instead of contracting every cycle of a
whole level at once (which needs O(n) levels, so O(n³) work, on a chain of nested cycles), a path is grown
backwards along cheapest in-edges until it reaches a node already hanging off the root, or closes a cycle
that is contracted at once. A contraction of k nodes costs O(n·k) vectorised numpy work, and each node
(original or contracted, at most 2n - 1 of them) is absorbed into a cycle at most once, so the whole run
is O(n²) work in O(n) numpy calls, with no recursion.

``root=None`` asks for the best root as well. Conceptually a virtual super-root is added whose edge to
every node costs a constant BIG larger than the sum of all finite |costs|, so an optimum uses as few
virtual edges as possible and, given that, is cheapest. The constant is never materialised: BIG plus a
real part is stored as the real part alone, because in floating point ``BIG + x`` would round away the
small differences that decide which node becomes the root. A node then takes its virtual edge only when
it has no finite in-edge at all, which is exactly when BIG would lose every comparison but that one.

References
----------
* Y. J. Chu and T. H. Liu, "On the shortest arborescence of a directed graph", *Scientia Sinica* 14
  (1965), 1396–1400.
* J. Edmonds, "Optimum branchings", *J. Res. Nat. Bur. Standards* 71B (1967), 233–240.
* R. E. Tarjan, "Finding optimum branchings", *Networks* 7 (1977), 25–35, with the correction by
  P. M. Camerini, L. Fratta and F. Maffioli, *Networks* 9 (1979), 309–312.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mothertree.errors import InvalidParameterError

__all__ = ["arborescence_cost", "minimum_spanning_arborescence"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# A slot of the working matrix is, in turn: not yet on any path; on the path being grown; part of the
# finished branching (its cheapest in-edge leads, through finished nodes, to a root); or absorbed into a
# contracted cycle whose representative now occupies another slot.
_UNVISITED, _ON_PATH, _DONE, _ABSORBED = 0, 1, 2, 3
_VIRTUAL_ROOT = -1


def minimum_spanning_arborescence(costs: npt.ArrayLike, *, root: int | None = None) -> IntArray:
    """Return the parents of a minimum-cost spanning arborescence.

    Parameters
    ----------
    costs:
        Float array of shape (n, n); ``costs[i, j]`` is the cost of the edge ``i -> j`` (``i`` is the
        parent of ``j``). ``np.inf`` means there is no such edge. The diagonal is ignored. Costs may be
        negative.
    root:
        Force this node to be the root (its in-edges are ignored). Every other node must then be reachable
        from it through finite edges.

    Returns
    -------
    An int64 array ``parents`` of shape (n,): ``parents[j]`` is the parent of ``j``, ``-1`` for a root.

    With ``root=None`` the root is chosen too: the result is the cheapest spanning arborescence over all
    roots, and has exactly one ``-1`` whenever any spanning arborescence exists (e.g. when all costs are
    finite). When ``inf`` entries make a single arborescence impossible, the result is instead a minimum
    spanning *branching forest* with as few roots as possible: each part that no other part can reach
    gets its own root, and among forests with that many roots the cheapest is returned.

    The result is deterministic; among equally cheap in-edges the one from the lowest-indexed (contracted)
    node wins.

    Raises
    ------
    InvalidParameterError
        ``costs`` is not a square matrix, holds NaN or ``-inf`` off the diagonal, ``root`` is out of range,
        or ``root`` is given and some node cannot be reached from it.
    """
    incost = _working_matrix(costs)
    n = incost.shape[0]
    if root is not None:
        root = _checked_root(root, n)
        _require_reachable(incost, root)
    if n <= 1:
        return np.full(n, -1, dtype=np.int64)
    state = _Contraction.start(incost, root)
    for start in range(n):
        if state.status[start] == _UNVISITED:
            _grow_path(state, start)
    return _expand(state)


def arborescence_cost(costs: npt.ArrayLike, parents: npt.ArrayLike) -> float:
    """Sum of ``costs[parents[j], j]`` over every non-root ``j`` (``inf`` if any used edge is missing)."""
    matrix = np.asarray(costs, dtype=np.float64)
    parent = np.asarray(parents, dtype=np.int64)
    n = parent.shape[0] if parent.ndim == 1 else -1
    if matrix.shape != (n, n):
        raise InvalidParameterError(
            f"parents of shape {parent.shape} do not match costs of shape {matrix.shape}",
            hint="give one parent per row of the (n, n) cost matrix",
        )
    if n and (parent.min() < -1 or parent.max() >= n):
        raise InvalidParameterError(
            f"parents must lie in [-1, {n - 1}]", hint="use -1 for a root and a node index otherwise"
        )
    children = np.flatnonzero(parent >= 0)
    return float(matrix[parent[children], children].sum())


# ---------------------------------------------------------------------------------------------------------
# Input checks


def _working_matrix(costs: npt.ArrayLike) -> FloatArray:
    """A fresh transposed copy (row v = in-edges of v), so the hot argmin reads contiguous memory."""
    matrix = np.asarray(costs, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise InvalidParameterError(
            f"costs must be a square (n, n) matrix, got shape {matrix.shape}",
            hint="costs[i, j] is the cost of the edge i -> j for n nodes",
        )
    incost: FloatArray = matrix.T.copy()  # C order; also never writes to the caller's array
    np.fill_diagonal(incost, np.inf)
    nan_count = int(np.isnan(incost).sum())
    if nan_count:
        raise InvalidParameterError(
            f"costs contain NaN off the diagonal ({nan_count} entries)",
            hint="use np.inf for a missing edge",
        )
    if np.isneginf(incost).any():
        raise InvalidParameterError(
            "costs contain -inf off the diagonal",
            hint="costs must be finite, or np.inf for a missing edge",
        )
    return incost


def _checked_root(root: int, n: int) -> int:
    index = operator.index(root)
    if not 0 <= index < n:
        raise InvalidParameterError(
            f"root {index} is out of range for {n} nodes",
            hint="give a node index in [0, n), or root=None to choose the best root",
        )
    return index


def _require_reachable(incost: FloatArray, root: int) -> None:
    """Breadth-first search over finite edges; a forced root must reach everyone."""
    n = incost.shape[0]
    seen = np.zeros(n, dtype=bool)
    seen[root] = True
    frontier = np.array([root])
    while frontier.size:
        # Column u of the in-cost matrix holds u's out-edges; one gather per BFS layer keeps it O(n²).
        reached = np.isfinite(incost[:, frontier]).any(axis=1) & ~seen
        seen |= reached
        frontier = np.flatnonzero(reached)
    unreachable = n - int(seen.sum())
    if unreachable:
        raise InvalidParameterError(
            f"{unreachable} of {n} nodes cannot be reached from root {root} through finite costs",
            hint="drop `root` to get a forest with as few roots as possible, "
            "or give finite costs for edges into those nodes",
        )


# ---------------------------------------------------------------------------------------------------------
# Chu–Liu–Edmonds, Tarjan's dense variant


@dataclass
class _Contraction:
    """Working state. A *slot* is a row/column of the shrinking graph; a *forest node* is an original node
    (ids 0..n-1) or a contracted cycle (ids n..2n-2), linked to the cycle that absorbed it."""

    n: int
    root: int | None
    incost: FloatArray  # incost[v, u]: current (reduced) cost of the edge from slot u into slot v
    edge: IntArray  # edge[v, u]: the original edge behind incost[v, u], encoded src * n + dst
    virtual_cost: FloatArray  # real part of the reduced virtual-root edge into slot v (BIG implied)
    virtual_dst: IntArray  # original node that virtual edge enters
    chosen_cost: FloatArray  # cost of the cheapest in-edge slot v took
    status: npt.NDArray[np.int8]
    position: IntArray  # index of a slot on the current path
    slot_node: IntArray  # forest node now occupying each slot
    forest_parent: IntArray
    entry_src: IntArray  # per forest node: original edge it took (src -1 = virtual root)
    entry_dst: IntArray
    next_node: int

    @classmethod
    def start(cls, incost: FloatArray, root: int | None) -> _Contraction:
        n = incost.shape[0]
        nodes = np.arange(n, dtype=np.int64)
        status = np.full(n, _UNVISITED, dtype=np.int8)
        if root is not None:
            incost[root] = np.inf
            status[root] = _DONE
        return cls(
            n=n,
            root=root,
            incost=incost,
            edge=nodes[np.newaxis, :] * n + nodes[:, np.newaxis],
            virtual_cost=np.zeros(n),
            virtual_dst=nodes.copy(),
            chosen_cost=np.zeros(n),
            status=status,
            position=np.zeros(n, dtype=np.int64),
            slot_node=nodes.copy(),
            forest_parent=np.full(2 * n, -1, dtype=np.int64),
            entry_src=np.full(2 * n, -1, dtype=np.int64),
            entry_dst=np.full(2 * n, -1, dtype=np.int64),
            next_node=n,
        )


def _grow_path(state: _Contraction, start: int) -> None:
    """Follow cheapest in-edges backwards from ``start`` until they reach the finished part (or the
    virtual root), contracting every cycle they close on the way (this is the cycle-finding step)."""
    path = [start]
    state.status[start] = _ON_PATH
    state.position[start] = 0
    while True:
        v = path[-1]
        u = _take_cheapest_in_edge(state, v)
        if u == _VIRTUAL_ROOT or state.status[u] == _DONE:
            # Everything on the path now hangs off a root, and no later contraction can involve these
            # nodes, because a cycle only ever closes on the path being grown.
            state.status[path] = _DONE
            return
        if state.status[u] == _UNVISITED:
            state.position[u] = len(path)
            state.status[u] = _ON_PATH
            path.append(u)
            continue
        first = int(state.position[u])
        cycle = np.sort(np.asarray(path[first:], dtype=np.int64))
        representative = _contract_cycle(state, cycle)
        del path[first:]
        state.position[representative] = first
        path.append(representative)


def _take_cheapest_in_edge(state: _Contraction, v: int) -> int:
    """Step 1: slot ``v`` takes its cheapest in-edge; returns the source slot (lowest index on ties)."""
    row = state.incost[v]
    u = int(np.argmin(row))
    node = int(state.slot_node[v])
    if row[u] == np.inf:
        if state.root is not None:  # _require_reachable rules this out; guard against silent nonsense
            raise RuntimeError(f"slot {v} has no in-edge although every node is reachable from the root")
        # No finite edge enters this (contracted) node, so only BIG can pay for it: it becomes a root.
        state.entry_src[node] = -1
        state.entry_dst[node] = state.virtual_dst[v]
        return _VIRTUAL_ROOT
    state.chosen_cost[v] = row[u]
    state.entry_src[node], state.entry_dst[node] = divmod(int(state.edge[v, u]), state.n)
    return u


def _contract_cycle(state: _Contraction, cycle: IntArray) -> int:
    """Step 2: merge the cycle's slots into its lowest slot and return that slot.

    Entering the cycle at member k drops k's own cycle edge, so an edge into k is charged only what it
    adds over that edge (Edmonds' reduced cost). Edges leaving the cycle keep their cost.
    """
    incost, edge = state.incost, state.edge
    representative = int(cycle[0])
    everyone = np.arange(state.n)

    entering = incost[cycle] - state.chosen_cost[cycle, np.newaxis]
    entering[:, cycle] = np.inf  # edges inside the cycle vanish with it
    entry_member = np.argmin(entering, axis=0)  # cycle is sorted: ties go to the lowest member
    new_in = entering[entry_member, everyone]
    new_in_edge = edge[cycle[entry_member], everyone]

    leaving = incost[:, cycle]
    exit_member = np.argmin(leaving, axis=1)
    new_out = leaving[everyone, exit_member]
    new_out[cycle] = np.inf
    new_out_edge = edge[everyone, cycle[exit_member]]

    incost[cycle] = np.inf
    incost[:, cycle] = np.inf
    incost[representative] = new_in
    incost[:, representative] = new_out
    edge[representative] = new_in_edge
    edge[:, representative] = new_out_edge

    # The virtual root's edges are reduced like any other edge into the cycle (its BIG part is common).
    virtual = state.virtual_cost[cycle] - state.chosen_cost[cycle]
    best = int(np.argmin(virtual))
    state.virtual_cost[representative] = virtual[best]
    state.virtual_dst[representative] = state.virtual_dst[cycle[best]]

    node = state.next_node
    state.next_node += 1
    state.forest_parent[state.slot_node[cycle]] = node
    state.slot_node[representative] = node
    state.status[cycle] = _ABSORBED
    state.status[representative] = _ON_PATH
    return representative


def _expand(state: _Contraction) -> IntArray:
    """Step 3: undo the contractions. The edge a contracted cycle took enters one original node; every
    cycle on the way from that node up to the contracted one is broken there, and each of their other
    members keeps the in-edge it took inside its cycle, to be expanded the same way."""
    forest_parent = state.forest_parent[: state.next_node].tolist()
    entry_src = state.entry_src.tolist()
    entry_dst = state.entry_dst.tolist()
    children: list[list[int]] = [[] for _ in range(state.next_node)]
    for node, parent in enumerate(forest_parent):
        if parent >= 0:
            children[parent].append(node)

    parents = np.full(state.n, -1, dtype=np.int64)
    pending = [
        int(state.slot_node[slot])
        for slot in np.flatnonzero(state.status == _DONE).tolist()
        if slot != state.root
    ]
    while pending:
        top = pending.pop()
        dst = entry_dst[top]
        parents[dst] = entry_src[top]
        inner = dst
        while inner != top:
            cycle = forest_parent[inner]
            pending.extend(member for member in children[cycle] if member != inner)
            inner = cycle
    return parents
