"""Tests for the dense Chu–Liu–Edmonds minimum spanning arborescence."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mothertree.errors import InvalidParameterError
from mothertree.tree.arborescence import arborescence_cost, minimum_spanning_arborescence

INF = np.inf
FloatArray = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------------------------------------
# Helpers


def roots_of(parents: npt.NDArray[np.int64]) -> list[int]:
    return [int(j) for j in np.flatnonzero(parents == -1)]


def assert_valid_branching(costs: FloatArray, parents: npt.NDArray[np.int64]) -> None:
    """Parents in range, only finite edges used, no cycle: every node walks up to a root in < n steps."""
    n = costs.shape[0]
    assert parents.shape == (n,)
    assert parents.dtype == np.int64
    children = np.flatnonzero(parents != -1)
    assert np.all((parents >= -1) & (parents < n) & (parents != np.arange(n)))
    assert np.all(np.isfinite(costs[parents[children], children])), "an edge that does not exist is used"
    # Walk every node up at once; a node on a cycle never reaches -1.
    node = np.arange(n)
    for _ in range(n):
        node = np.where(node == -1, -1, parents[node])
    assert np.all(node == -1), f"nodes on a cycle: {np.flatnonzero(node != -1).tolist()}"


def brute_force(costs: FloatArray, root: int | None = None) -> tuple[int, float]:
    """(number of roots, cost) of the best branching, lexicographically, by trying every parent vector."""
    n = costs.shape[0]
    best: tuple[int, float] = (n + 1, INF)
    choices = [
        [-1] if j == root else [-1, *(i for i in range(n) if i != j and np.isfinite(costs[i, j]))]
        for j in range(n)
    ]
    if root is not None:
        choices = [c if j == root else [p for p in c if p != -1] for j, c in enumerate(choices)]
    for parents in itertools.product(*choices):
        ok = True
        for j in range(n):
            node, steps = j, 0
            while parents[node] != -1 and steps <= n:
                node, steps = parents[node], steps + 1
            if steps > n:
                ok = False
                break
        if ok:
            candidate = (parents.count(-1), sum(costs[p, j] for j, p in enumerate(parents) if p != -1))
            best = min(best, candidate)
    return best


def networkx_arborescence(costs: FloatArray, root: int | None = None) -> nx.DiGraph:
    n = costs.shape[0]
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_weighted_edges_from(
        (i, j, float(costs[i, j]))
        for i in range(n)
        for j in range(n)
        if i != j and j != root and np.isfinite(costs[i, j])
    )
    return nx.minimum_spanning_arborescence(graph)


def total_weight(tree: nx.DiGraph) -> float:
    return float(sum(w for _, _, w in tree.edges(data="weight")))


def edge_set(parents: npt.NDArray[np.int64]) -> set[tuple[int, int]]:
    return {(int(p), j) for j, p in enumerate(parents) if p != -1}


# ---------------------------------------------------------------------------------------------------------
# Worked examples, solved by hand


def test_greedy_choice_makes_a_cycle_that_is_contracted() -> None:
    # Node 0 has no in-edges, so it must be the root.
    #   cheapest in-edges: 1 <- 2 (2), 2 <- 1 (1), 3 <- 2 (3): 1 and 2 form a cycle.
    #   Contract C = {1, 2}; an edge into a member is charged its cost minus that member's cycle edge:
    #     0 -> 1: 5 - 2 = 3,   0 -> 2: 6 - 1 = 5,   3 -> 1: 9 - 2 = 7    => C takes 0 -> 1.
    #   Expanding C: 1 keeps 0 -> 1 and drops 2 -> 1; 2 keeps 1 -> 2; 3 keeps 2 -> 3.
    #   Cost 5 + 1 + 3 = 9 (the alternative 0 -> 2, 2 -> 1, 2 -> 3 costs 6 + 2 + 3 = 11).
    costs = np.array(
        [
            [INF, 5, 6, INF],
            [INF, INF, 1, 4],
            [INF, 2, INF, 3],
            [INF, 9, INF, INF],
        ]
    )
    parents = minimum_spanning_arborescence(costs)
    np.testing.assert_array_equal(parents, [-1, 0, 1, 2])
    assert arborescence_cost(costs, parents) == 9
    np.testing.assert_array_equal(minimum_spanning_arborescence(costs, root=0), parents)


def test_nested_cycle() -> None:
    # Root 0 (no in-edges). Cheapest in-edges: 1 <- 2 (1), 2 <- 1 (1), 3 <- 2 (1).
    #   Level 1: contract C = {1, 2}. Reduced edges into C:
    #     0 -> 1: 10 - 1 = 9,  0 -> 2: 11 - 1 = 10,  3 -> 1: 3 - 1 = 2   => C takes 3 -> 1 (reduced 2).
    #   3's cheapest in-edge: C -> 3 (= 2 -> 3, cost 1) beats 0 -> 3 (9)  => cycle {C, 3}, nested.
    #   Level 2: contract D = {C, 3}. Reduced edges into D:
    #     0 -> C (enters at 1): 9 - 2 = 7,   0 -> 3: 9 - 1 = 8          => D takes 0 -> 1.
    #   Expand D: C is entered by 0 -> 1, so 3 keeps 2 -> 3; expand C: 1 <- 0, 2 keeps 1 -> 2.
    #   Cost 10 + 1 + 1 = 12. The cheapest edge out of the root, 0 -> 3 (9), is not used:
    #   0 -> 3, 3 -> 1, 1 -> 2 costs 9 + 3 + 1 = 13.
    costs = np.array(
        [
            [INF, 10, 11, 9],
            [INF, INF, 1, 5],
            [INF, 1, INF, 1],
            [INF, 3, INF, INF],
        ]
    )
    parents = minimum_spanning_arborescence(costs)
    np.testing.assert_array_equal(parents, [-1, 0, 1, 2])
    assert arborescence_cost(costs, parents) == 12
    assert brute_force(costs) == (1, 12)


# A complete 3-node graph: costs[i, j] for i -> j.
#   0 -> 1: 1, 0 -> 2: 5, 1 -> 0: 2, 1 -> 2: 1, 2 -> 0: 4, 2 -> 1: 4
# All 9 spanning arborescences, by root:
#   root 0: {0->1, 0->2} 6, {0->1, 1->2} 2, {0->2, 2->1} 9
#   root 1: {1->0, 1->2} 3, {1->0, 0->2} 7, {1->2, 2->0} 5
#   root 2: {2->0, 2->1} 8, {2->0, 0->1} 5, {2->1, 1->0} 6
TRIANGLE = np.array([[INF, 1, 5], [2, INF, 1], [4, 4, INF]])


def test_free_root_picks_the_best_root() -> None:
    parents = minimum_spanning_arborescence(TRIANGLE)
    np.testing.assert_array_equal(parents, [-1, 0, 1])
    assert arborescence_cost(TRIANGLE, parents) == 2


@pytest.mark.parametrize(
    ("root", "expected", "cost"), [(0, [-1, 0, 1], 2), (1, [1, -1, 1], 3), (2, [2, 0, -1], 5)]
)
def test_forced_root(root: int, expected: list[int], cost: float) -> None:
    # Root 2: cheapest in-edges 0 <- 1 (2) and 1 <- 0 (1) form a cycle; into it from 2:
    # 2 -> 0: 4 - 2 = 2, 2 -> 1: 4 - 1 = 3, so 2 -> 0 and 0 -> 1 (cost 5).
    parents = minimum_spanning_arborescence(TRIANGLE, root=root)
    np.testing.assert_array_equal(parents, expected)
    assert arborescence_cost(TRIANGLE, parents) == cost


def test_negative_costs() -> None:
    # 0 -> 1: -5, 0 -> 2: -1, 1 -> 0: -4, 1 -> 2: 2, 2 -> 0: 0, 2 -> 1: -3.
    #   root 0: {0->1, 0->2} -6, {0->1, 1->2} -3, {0->2, 2->1} -4
    #   root 1: {1->0, 1->2} -2, {1->0, 0->2} -5, {1->2, 2->0}  2
    #   root 2: {2->0, 2->1} -3, {2->0, 0->1} -5, {2->1, 1->0} -7   <- best
    costs = np.array([[0.0, -5, -1], [-4, 0, 2], [0, -3, 0]])
    parents = minimum_spanning_arborescence(costs)
    np.testing.assert_array_equal(parents, [1, 2, -1])
    assert arborescence_cost(costs, parents) == -7
    assert brute_force(costs) == (1, -7)


def test_ties_go_to_the_lowest_index() -> None:
    # 2 can hang off 0 or 1 at the same cost; the lower index wins.
    costs = np.array([[INF, 1, 1], [INF, INF, 1], [INF, INF, INF]])
    np.testing.assert_array_equal(minimum_spanning_arborescence(costs), [-1, 0, 0])


def test_trivial_sizes() -> None:
    np.testing.assert_array_equal(minimum_spanning_arborescence(np.zeros((1, 1))), [-1])
    np.testing.assert_array_equal(minimum_spanning_arborescence(np.zeros((1, 1)), root=0), [-1])
    empty = minimum_spanning_arborescence(np.zeros((0, 0)))
    assert empty.shape == (0,) and empty.dtype == np.int64
    np.testing.assert_array_equal(minimum_spanning_arborescence(np.array([[0.0, 1], [2, 0]])), [-1, 0])


def test_diagonal_is_ignored_and_input_is_untouched() -> None:
    costs = np.array([[np.nan, 1.0, 5.0], [2.0, -100.0, 1.0], [4.0, 4.0, -INF]])
    before = costs.copy()
    np.testing.assert_array_equal(minimum_spanning_arborescence(costs), [-1, 0, 1])
    np.testing.assert_array_equal(costs, before)


def test_accepts_integer_arrays_and_lists() -> None:
    as_list = [[0, 1, 5], [2, 0, 1], [4, 4, 0]]
    np.testing.assert_array_equal(minimum_spanning_arborescence(np.array(as_list)), [-1, 0, 1])
    numpy_root = np.int64(2)  # anything operator.index accepts
    parents = minimum_spanning_arborescence(as_list, root=numpy_root)  # type: ignore[arg-type]
    np.testing.assert_array_equal(parents, [2, 0, -1])


def test_deep_nesting_does_not_recurse() -> None:
    # Points on a line with growing gaps: each node's nearest neighbour is its left one, so the first
    # cycle {0, 1} swallows 2, then 3, ... : n - 1 nested contractions. Any arborescence along the
    # line costs the sum of the gaps, and nothing can be cheaper (it is the undirected MST).
    n = 1500  # deeper than the default recursion limit
    x = np.cumsum(1.0 + np.arange(n) / n)
    costs = np.abs(x[:, None] - x[None, :])
    parents = minimum_spanning_arborescence(costs)
    assert len(roots_of(parents)) == 1
    assert_valid_branching(costs, parents)
    assert arborescence_cost(costs, parents) == pytest.approx(x[-1] - x[0])


# ---------------------------------------------------------------------------------------------------------
# Against networkx


def random_graph(seed: int, *, integer: bool) -> FloatArray:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 26))  # networkx needs ~50 ms at n = 30; keep the suite fast
    if integer:  # few distinct values: many ties
        return rng.integers(-5, 10, size=(n, n)).astype(np.float64)
    return rng.normal(size=(n, n))


@pytest.mark.parametrize("integer", [True, False], ids=["int", "float"])
@pytest.mark.parametrize("forced", [False, True], ids=["free-root", "forced-root"])
def test_matches_networkx(integer: bool, forced: bool) -> None:
    for seed in range(50):  # 4 x 50 = 200 random dense graphs
        costs = random_graph(seed, integer=integer)
        n = costs.shape[0]
        root = seed % n if forced else None
        parents = minimum_spanning_arborescence(costs, root=root)
        assert_valid_branching(costs, parents)
        assert roots_of(parents) == [root] if forced else len(roots_of(parents)) == 1
        tree = networkx_arborescence(costs, root)
        assert arborescence_cost(costs, parents) == pytest.approx(total_weight(tree), abs=1e-9)
        if not integer:  # distinct costs: the optimum is unique
            assert edge_set(parents) == set(tree.edges())


def test_forest_matches_networkx_with_an_explicit_super_root() -> None:
    # Sparse graphs: when no spanning arborescence exists we return a forest with the fewest roots.
    # networkx checks it with a real super-root whose edges cost more than all finite |costs| together.
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(2, 16))
        costs = rng.integers(-5, 20, size=(n, n)).astype(np.float64)
        costs[rng.random((n, n)) < rng.uniform(0.3, 0.95)] = INF
        parents = minimum_spanning_arborescence(costs)
        assert_valid_branching(costs, parents)
        off_diagonal = ~np.eye(n, dtype=bool)
        big = float(np.abs(costs[off_diagonal & np.isfinite(costs)]).sum()) + 1.0
        extended = np.full((n + 1, n + 1), INF)
        extended[:n, :n] = costs
        extended[n, :n] = big
        expected = total_weight(networkx_arborescence(extended, root=n))
        assert arborescence_cost(costs, parents) + big * len(roots_of(parents)) == expected


# ---------------------------------------------------------------------------------------------------------
# Invariances


def test_adding_a_constant_to_every_cost_changes_nothing() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        costs = rng.integers(0, 1000, size=(n, n)).astype(np.float64)
        expected = minimum_spanning_arborescence(costs)
        np.testing.assert_array_equal(minimum_spanning_arborescence(costs + 37.0), expected)
        np.testing.assert_array_equal(minimum_spanning_arborescence(costs - 2000.0), expected)


def test_adding_a_constant_to_the_in_edges_of_one_node_changes_nothing() -> None:
    # Every arborescence with that root uses exactly one in-edge of each other node. (Without a forced
    # root this does not hold: the shifted node becomes a more or less attractive root.)
    rng = np.random.default_rng(4)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        costs = rng.integers(0, 1000, size=(n, n)).astype(np.float64)
        root = int(rng.integers(n))
        expected = minimum_spanning_arborescence(costs, root=root)
        shifted = costs.copy()
        for j in rng.choice(n, size=min(n, 3), replace=False):
            shifted[:, j] += float(rng.integers(-500, 500))
        np.testing.assert_array_equal(minimum_spanning_arborescence(shifted, root=root), expected)


def test_deterministic() -> None:
    costs = np.ones((12, 12))  # all ties
    first = minimum_spanning_arborescence(costs)
    np.testing.assert_array_equal(minimum_spanning_arborescence(costs.copy()), first)
    assert len(roots_of(first)) == 1


# ---------------------------------------------------------------------------------------------------------
# Property tests


@st.composite
def cost_matrices(draw: st.DrawFn, max_n: int, allow_inf: bool) -> FloatArray:
    n = draw(st.integers(1, max_n))
    values = st.integers(-3, 6).map(float)
    if allow_inf:
        values = st.one_of(values, st.just(INF))
    entries = draw(st.lists(values, min_size=n * n, max_size=n * n))
    return np.array(entries, dtype=np.float64).reshape(n, n)


@settings(max_examples=100, deadline=None)
@given(cost_matrices(max_n=8, allow_inf=False))
def test_finite_costs_give_one_valid_arborescence(costs: FloatArray) -> None:
    parents = minimum_spanning_arborescence(costs)
    assert_valid_branching(costs, parents)
    assert len(roots_of(parents)) == 1


@settings(max_examples=100, deadline=None)
@given(cost_matrices(max_n=4, allow_inf=True))
def test_optimal_against_brute_force(costs: FloatArray) -> None:
    parents = minimum_spanning_arborescence(costs)
    assert_valid_branching(costs, parents)
    assert (len(roots_of(parents)), arborescence_cost(costs, parents)) == brute_force(costs)
    root = 0
    if brute_force(costs, root)[0] == 1:  # everything reachable from node 0
        forced = minimum_spanning_arborescence(costs, root=root)
        assert roots_of(forced) == [root]
        assert_valid_branching(costs, forced)
        assert arborescence_cost(costs, forced) == brute_force(costs, root)[1]


# ---------------------------------------------------------------------------------------------------------
# inf handling


def test_two_unconnected_blocks_give_two_trees() -> None:
    # Block A = {0, 1, 2} is TRIANGLE (optimum 0 -> 1 -> 2, cost 2); block B = {3, 4}: 3 -> 4 costs 7,
    # 4 -> 3 costs 3 (optimum 4 -> 3). No edge between the blocks.
    costs = np.full((5, 5), INF)
    costs[:3, :3] = TRIANGLE
    costs[3, 4], costs[4, 3] = 7, 3
    parents = minimum_spanning_arborescence(costs)
    np.testing.assert_array_equal(parents, [-1, 0, 1, 4, -1])
    assert arborescence_cost(costs, parents) == 5


def test_one_way_edges_between_blocks_keep_one_root() -> None:
    # Block B can be reached from block A (2 -> 3 costs 50), so one tree is still possible and preferred.
    costs = np.full((5, 5), INF)
    costs[:3, :3] = TRIANGLE
    costs[3, 4], costs[4, 3], costs[2, 3] = 7, 3, 50
    parents = minimum_spanning_arborescence(costs)
    np.testing.assert_array_equal(parents, [-1, 0, 1, 2, 3])
    assert arborescence_cost(costs, parents) == 2 + 50 + 7


def test_isolated_nodes_are_their_own_roots() -> None:
    np.testing.assert_array_equal(minimum_spanning_arborescence(np.full((3, 3), INF)), [-1, -1, -1])


# ---------------------------------------------------------------------------------------------------------
# Errors


def test_non_square_costs() -> None:
    with pytest.raises(InvalidParameterError) as info:
        minimum_spanning_arborescence(np.zeros((2, 3)))
    assert str(info.value) == "costs must be a square (n, n) matrix, got shape (2, 3)"
    with pytest.raises(
        InvalidParameterError, match=r"^costs must be a square \(n, n\) matrix, got shape \(3,\)$"
    ):
        minimum_spanning_arborescence(np.zeros(3))


def test_nan_costs() -> None:
    costs = np.zeros((3, 3))
    costs[0, 1] = costs[2, 0] = np.nan
    with pytest.raises(InvalidParameterError) as info:
        minimum_spanning_arborescence(costs)
    assert str(info.value) == "costs contain NaN off the diagonal (2 entries)"
    assert info.value.hint == "use np.inf for a missing edge"


def test_negative_infinite_costs() -> None:
    costs = np.zeros((2, 2))
    costs[0, 1] = -INF
    with pytest.raises(InvalidParameterError, match=r"^costs contain -inf off the diagonal$"):
        minimum_spanning_arborescence(costs)


@pytest.mark.parametrize("root", [3, -1, 10])
def test_root_out_of_range(root: int) -> None:
    with pytest.raises(InvalidParameterError) as info:
        minimum_spanning_arborescence(np.zeros((3, 3)), root=root)
    assert str(info.value) == f"root {root} is out of range for 3 nodes"


def test_unreachable_from_forced_root() -> None:
    costs = np.full((4, 4), INF)
    costs[0, 1] = 1.0  # 0 reaches 1; nothing reaches 2 or 3 from 0 (3 -> 2 exists but 3 is cut off)
    costs[3, 2] = 1.0
    with pytest.raises(InvalidParameterError) as info:
        minimum_spanning_arborescence(costs, root=0)
    assert str(info.value) == "2 of 4 nodes cannot be reached from root 0 through finite costs"
    assert info.value.hint is not None
    assert "drop `root`" in info.value.hint and "finite costs" in info.value.hint
    # Without a root the same matrix is a forest: 0 -> 1 and 3 -> 2.
    np.testing.assert_array_equal(minimum_spanning_arborescence(costs), [-1, 0, 3, -1])


def test_arborescence_cost_checks_shapes() -> None:
    with pytest.raises(InvalidParameterError, match=r"^parents of shape \(2,\) do not match costs of shape"):
        arborescence_cost(np.zeros((3, 3)), np.array([-1, 0]))
    with pytest.raises(InvalidParameterError, match=r"^parents must lie in \[-1, 2\]$"):
        arborescence_cost(np.zeros((3, 3)), np.array([-1, 0, 3]))
    assert arborescence_cost(np.zeros((0, 0)), np.zeros(0, dtype=np.int64)) == 0.0
