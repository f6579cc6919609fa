"""TreeRecovery on hand-made matrices (synthetic: this tests the mechanics, not the kurtosis cue itself)."""

import numpy as np
import pytest

from mothertree.errors import InvalidParameterError, NotFittedError, TooFewModelsError
from mothertree.tree.recover import TreeRecovery

#      r            distances are path lengths along this tree (an additive metric),
#     / \           kurtosis falls by one per generation
#    a   b
#   / \
#  a1  a2
IDS = ["a1", "r", "a", "b", "a2"]
EDGES = {("r", "a"): 1.0, ("r", "b"): 1.2, ("a", "a1"): 0.5, ("a", "a2"): 0.7}
DEPTH = {"r": 0, "a": 1, "b": 1, "a1": 2, "a2": 2}


def path_distances():
    import networkx as nx

    graph = nx.Graph()
    for (u, v), w in EDGES.items():
        graph.add_edge(u, v, weight=w)
    lengths = dict(nx.all_pairs_dijkstra_path_length(graph))
    return np.array([[lengths[u][v] for v in IDS] for u in IDS])


def test_recovers_tree_with_falling_kurtosis():
    kurtosis = [10.0 - DEPTH[i] for i in IDS]
    recovery = TreeRecovery(n_trees=None, direction="falls").fit_matrices(path_distances(), kurtosis, IDS)
    assert {(e.parent, e.child) for e in recovery.edges_} == set(EDGES)
    assert recovery.roots_ == ["r"]
    edge = next(e for e in recovery.edges_ if (e.parent, e.child) == ("r", "a"))
    assert edge.distance == 1.0
    # Worked by hand. Placement: the nearest model outside a's subtree is b, at 1.2 + 1.0, so the margin is
    # 1 - 1.0 / 2.2 = 0.5455 and sigmoid(6.63 + 0.95 ln(0.5455 + 0.001)) = 0.99766. Direction (the sign
    # fixed: kurtosis falls): every edge's evidence is t = tanh(1) = 0.7616 (a fall of 1 per generation, the
    # median step). Root r agrees with 4 edges, a and b with 3 against 1, a1 and a2 with 2 against 2, so
    # with BETA = 2 the roots weigh exp(8t) = 442.64, exp(4t) = 21.039 (twice) and 1 (twice). The edge
    # r -> a is reversed when the root is in a's subtree {a, a1, a2}: 1 - 23.039 / 486.72 = 0.95266.
    # Confidence: 0.99766 * 0.95266 = 0.95044.
    a = IDS.index("a")
    assert recovery.placement_margins_[a] == pytest.approx(1 - 1.0 / 2.2)
    assert recovery.direction_probabilities_[a] == pytest.approx(0.95266, abs=1e-5)
    assert edge.confidence == pytest.approx(0.95044, abs=1e-5)
    assert recovery.parents_[IDS.index("r")] == -1


def test_rising_kurtosis_needs_direction_rises():
    kurtosis = [DEPTH[i] for i in IDS]
    rises = TreeRecovery(n_trees=None, direction="rises").fit_matrices(path_distances(), kurtosis, IDS)
    assert {(e.parent, e.child) for e in rises.edges_} == set(EDGES)
    falls = TreeRecovery(n_trees=None, direction="falls").fit_matrices(path_distances(), kurtosis, IDS)
    assert {(e.parent, e.child) for e in falls.edges_} != set(EDGES)


def test_lam_zero_places_edges_by_distance_alone():
    kurtosis = np.zeros(len(IDS))
    recovery = TreeRecovery(n_trees=None, direction="falls", lam=0.0).fit_matrices(
        path_distances(), kurtosis, IDS
    )
    undirected = {frozenset((e.parent, e.child)) for e in recovery.edges_}
    assert undirected == {frozenset(e) for e in EDGES}


def test_two_trees_are_recovered_separately():
    d = path_distances()
    n = len(IDS)
    big = np.full((2 * n, 2 * n), 100.0)
    big[:n, :n] = d
    big[n:, n:] = d
    ids = IDS + [f"{i}'" for i in IDS]
    kurtosis = [10.0 - DEPTH[i] for i in IDS] * 2
    recovery = TreeRecovery(n_trees=2, direction="falls").fit_matrices(big, kurtosis, ids)
    expected = set(EDGES) | {(p + "'", c + "'") for p, c in EDGES}
    assert {(e.parent, e.child) for e in recovery.edges_} == expected
    assert sorted(recovery.roots_) == ["r", "r'"]
    assert len(set(recovery.labels_[:n])) == 1 and recovery.labels_[0] != recovery.labels_[n]


def test_validation():
    with pytest.raises(TooFewModelsError, match="found 1 model; need at least 2"):
        TreeRecovery(n_trees=None, direction="falls").fit_matrices(np.zeros((1, 1)), [0.0], ["a"])
    with pytest.raises(InvalidParameterError, match="unknown direction `up`"):
        TreeRecovery(n_trees=None, direction="up").fit_matrices(np.ones((2, 2)), [0.0, 1.0], ["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="NaN or infinite"):
        TreeRecovery(n_trees=None, direction="falls").fit_matrices(
            np.full((2, 2), np.nan), [0.0, 1.0], ["a", "b"]
        )

    with pytest.raises(
        InvalidParameterError, match="`n_trees='auto'` needs the models' `relative_distances`"
    ):
        TreeRecovery(direction="falls").fit_matrices(np.ones((2, 2)), [0.0, 1.0], ["a", "b"])


def test_norm_direction_orients_by_growing_norm():
    log_norms = [1.0 + 0.1 * DEPTH[i] for i in IDS]
    kurtosis = np.zeros(len(IDS))
    recovery = TreeRecovery(n_trees=None, direction="norm").fit_matrices(
        path_distances(), kurtosis, IDS, log_norms=log_norms
    )
    assert {(e.parent, e.child) for e in recovery.edges_} == set(EDGES)


def test_auto_splits_unrelated_models_into_trees():
    d = path_distances()
    n = len(IDS)
    big = np.full((2 * n, 2 * n), 100.0)
    big[:n, :n] = d
    big[n:, n:] = d
    relative = np.where(big >= 100.0, 1.41, big / 100.0)  # fine-tunes a few percent apart, others sqrt(2)
    ids = IDS + [f"{i}'" for i in IDS]
    kurtosis = [10.0 - DEPTH[i] for i in IDS] * 2
    recovery = TreeRecovery(n_trees="auto", direction="falls").fit_matrices(
        big, kurtosis, ids, relative_distances=relative
    )
    assert sorted(recovery.roots_) == ["r", "r'"]
    assert len(recovery.edges_) == 2 * len(EDGES)


def test_a_model_with_no_relative_is_a_root_of_its_own():
    d = path_distances()
    n = len(IDS)
    relative = d / 100.0
    relative[IDS.index("b"), :] = relative[:, IDS.index("b")] = 1.4
    relative[IDS.index("b"), IDS.index("b")] = 0.0
    kurtosis = [10.0 - DEPTH[i] for i in IDS]
    recovery = TreeRecovery(n_trees="auto", direction="falls").fit_matrices(
        d, kurtosis, IDS, relative_distances=relative
    )
    assert "b" in recovery.roots_ and len(recovery.roots_) == 2
    assert all(e.child != "b" for e in recovery.edges_)
    assert len(recovery.edges_) == n - 2


def test_confidence_is_low_for_a_near_tie_and_high_for_a_clear_parent():
    # a and b are almost equally close to c (far=1.001): c's placement is close to a coin flip; with far=2,
    # a is clearly c's parent. The norm grows a -> b and a -> c by 3 units: with the sign fixed, two edges
    # weigh root a against b or c as exp(2 * 2 tanh 1) = 21.04 to 1 each, a direction probability of
    # 1 - 1 / 23.04 = 0.9566 (two edges cannot say more).
    def confidences(far: float) -> dict[tuple[str, str], float]:
        d = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, far], [1.0, far, 0.0]])
        recovery = TreeRecovery(n_trees=None, direction="norm").fit_matrices(
            d, np.zeros(3), ["a", "b", "c"], log_norms=[0.0, 3.0, 3.0]
        )
        return {(e.parent, e.child): e.confidence for e in recovery.edges_}

    tie, clear = confidences(1.001), confidences(2.0)
    assert set(tie) == set(clear) == {("a", "b"), ("a", "c")}
    assert max(tie.values()) < 0.75
    # Placement margin 1 - 1/2: sigmoid(6.63 + 0.95 ln 0.501) = 0.99746.
    assert min(clear.values()) == pytest.approx(0.9566 * 0.99746, abs=1e-4)


@pytest.mark.parametrize("direction", ["norm", "falls"])
def test_known_parents_are_kept_against_the_evidence(direction):
    # a1's statistics say it is a's parent (its norm is the smallest, its kurtosis the largest); we know
    # for certain that a1 is a's child (say, an adapter read on a).
    depth = {**DEPTH, "a1": -1}
    log_norms = [1.0 + 0.1 * depth[i] for i in IDS]
    kurtosis = [10.0 - depth[i] for i in IDS]
    free = TreeRecovery(n_trees=None, direction=direction).fit_matrices(
        path_distances(), kurtosis, IDS, log_norms=log_norms
    )
    assert ("a", "a1") not in {(e.parent, e.child) for e in free.edges_}
    recovery = TreeRecovery(n_trees=None, direction=direction).fit_matrices(
        path_distances(), kurtosis, IDS, log_norms=log_norms, known_parents={"a1": "a"}
    )
    edges = {(e.parent, e.child): e for e in recovery.edges_}
    assert set(edges) == set(EDGES)
    assert edges[("a", "a1")].confidence == 1.0
    assert [edge for edge, e in edges.items() if e.known] == [("a", "a1")]


def test_parameters_are_kept_as_given_and_read_back():
    recovery = TreeRecovery(n_trees=3, direction="falls", lam=0.5)
    assert recovery.get_params() == {
        "n_trees": 3,
        "lam": 0.5,
        "direction": "falls",
        "unrelated_above": 0.5,
        "distance": "auto",
    }
    assert repr(recovery) == "TreeRecovery(n_trees=3, lam=0.5, direction='falls')"
    assert recovery.set_params(lam=0.0) is recovery and recovery.lam == 0.0
    with pytest.raises(InvalidParameterError, match="no parameter 'alpha'"):
        recovery.set_params(alpha=1.0)


def test_results_before_fit_say_so():
    recovery = TreeRecovery()
    with pytest.raises(NotFittedError, match="`edges_` is set by `fit`"):
        _ = recovery.edges_
    assert not hasattr(recovery, "roots_")
    with pytest.raises(AttributeError, match="no attribute 'other'"):
        _ = recovery.other  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"unrelated_above": 0.0}, "`unrelated_above` must be a relative distance > 0"),
        ({"unrelated_above": "far"}, "`unrelated_above` must be a relative distance > 0"),
        ({"lam": -1.0}, "`lam` must be a number >= 0"),
        ({"distance": "cosine"}, "unknown distance `cosine`"),
        ({"n_trees": 2.5}, "`n_trees` must be an integer"),
    ],
)
def test_bad_parameters_are_refused_before_any_work(params, message):
    with pytest.raises(InvalidParameterError, match=message):
        TreeRecovery(**params).fit_matrices(
            path_distances(), np.zeros(len(IDS)), IDS, log_norms=np.zeros(len(IDS))
        )
