import json

import pytest

from mothertree.errors import InvalidTruthError
from mothertree.evaluation.metrics import chance_of_at_least, clustering_accuracy, score_edges, true_trees
from mothertree.evaluation.truth import edges_from_model_cards, load_edges

TRUTH = {("r", "a"), ("r", "b"), ("a", "a1"), ("s", "c")}


def test_perfect_recovery():
    score = score_edges(set(TRUTH), TRUTH)
    assert (score.directed, score.undirected) == (1.0, 1.0)


def test_flipped_edge_counts_only_undirected():
    predicted = {("a", "r"), ("r", "b"), ("a", "a1"), ("c", "s")}
    score = score_edges(predicted, TRUTH)
    assert score.n_directed_correct == 2
    assert score.n_undirected_correct == 4
    assert score.directed == 0.5


def test_per_tree_scores():
    predicted = {("r", "a"), ("b", "r"), ("a", "a1"), ("c", "s")}
    per_tree = {t.root: t for t in score_edges(predicted, TRUTH).per_tree}
    assert per_tree["r"].directed == pytest.approx(2 / 3)
    assert per_tree["r"].undirected == 1.0
    assert per_tree["s"].directed == 0.0


def test_true_trees_finds_roots():
    assert [(root, len(edges)) for root, edges in true_trees(TRUTH)] == [("r", 3), ("s", 1)]


def test_load_edges_reads_truth_and_result_files(tmp_path):
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"edges": [{"parent": "r", "child": "a", "distance": 1.0}], "roots": ["r"]}))
    assert load_edges(path) == {("r", "a")}


def test_bad_truth_files(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{")
    with pytest.raises(InvalidTruthError, match="is not valid JSON"):
        load_edges(path)
    path.write_text(json.dumps({"edges": [{"parent": "r"}]}))
    with pytest.raises(InvalidTruthError, match="edge 0 needs `parent` and `child`"):
        load_edges(path)
    path.write_text(json.dumps([]))
    with pytest.raises(InvalidTruthError, match="has no `edges` list"):
        load_edges(path)


def test_edges_from_model_cards_match_by_id_or_last_path_part():
    declared = {"a": ("org/r",), "b": ("r",), "c": ("elsewhere/unknown",), "m": ("a", "b")}
    assert edges_from_model_cards(declared, ["r", "a", "b", "c", "m"]) == {
        ("r", "a"),
        ("r", "b"),
        ("a", "m"),
        ("b", "m"),
    }


# Clustering accuracy: worked examples with the answer counted by hand.
TWO_TREES = {("a", "b"), ("a", "c"), ("x", "y"), ("x", "z")}


def test_clustering_accuracy_ignores_label_numbering() -> None:
    assigned = {"a": 7, "b": 7, "c": 7, "x": 2, "y": 2, "z": 2}
    assert clustering_accuracy(assigned, TWO_TREES) == 1.0


def test_clustering_accuracy_of_a_merge_and_a_split() -> None:
    merged = {m: 0 for m in "abcxyz"}
    assert clustering_accuracy(merged, TWO_TREES) == pytest.approx(3 / 6)
    split = {"a": 0, "b": 0, "c": 1, "x": 2, "y": 2, "z": 2}
    assert clustering_accuracy(split, TWO_TREES) == pytest.approx(5 / 6)
    assert clustering_accuracy({"a": 0, "q": 1}, TWO_TREES) == 1.0  # "q" is in no true edge


def test_chance_of_at_least_so_many_wrong_edges_is_the_poisson_binomial_tail() -> None:
    # Two edges at 0.9 and 0.5: none wrong 0.45, one 0.5 (0.9 * 0.5 + 0.1 * 0.5), both 0.05.
    assert chance_of_at_least([0.9, 0.5], 0) == 1.0
    assert chance_of_at_least([0.9, 0.5], 1) == pytest.approx(0.55)
    assert chance_of_at_least([0.9, 0.5], 2) == pytest.approx(0.05)
    assert chance_of_at_least([0.9, 0.5], 3) == 0.0
    # 26 edges whose confidences predict 0.6 wrong: two wrong (a ratio of 3.3) is about one time in eight.
    confidences = [0.99] * 20 + [0.95] * 4 + [0.9] * 2
    assert sum(1 - c for c in confidences) == pytest.approx(0.6)
    assert 0.1 < chance_of_at_least(confidences, 2) < 0.15
    assert chance_of_at_least([1.0] * 10, 1) == 0.0
