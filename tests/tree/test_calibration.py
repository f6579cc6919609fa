"""Edge confidence from the placement margin and the direction probability (pure functions, hand-made
numbers)."""

import numpy as np
import pytest

from mothertree.tree.calibration import edge_confidence, placement_probability


def test_a_coin_flip_direction_halves_a_sure_placement_and_roots_stay_nan():
    placement = np.array([0.9, 0.9, np.nan])
    direction = np.array([1.0, 0.5, np.nan])
    confidence = edge_confidence(placement, direction)
    assert confidence[1] == pytest.approx(confidence[0] / 2)
    assert np.isnan(confidence[2])


def test_placement_probability_rises_from_a_tie_to_a_sure_edge():
    margins = np.linspace(0.0, 1.0, 101)
    probability = placement_probability(margins)
    assert (np.diff(probability) > 0).all()
    # By hand, with the fitted 6.63 and 0.95: a tie, sigmoid(6.63 + 0.95 ln 0.001) = sigmoid(0.0676) = 0.5169;
    # a full margin, sigmoid(6.63 + 0.95 ln 1.001) = sigmoid(6.631) = 0.99868.
    assert probability[0] == pytest.approx(0.51690, abs=1e-5)
    assert probability[-1] == pytest.approx(0.99868, abs=1e-5)
    # Margins and probabilities outside [0, 1] are clipped to it.
    np.testing.assert_allclose(edge_confidence([-0.1, 2.0], [1.0, 1.5]), [0.51690, 0.99868], atol=1e-5)


def test_the_logistic_form():
    # sigmoid(a + b log(m + floor)) with a = 0, b = 1: odds equal to the margin (plus the floor)
    confidence = edge_confidence(np.array([0.999]), np.array([1.0]), intercept=0.0, slope=1.0)
    np.testing.assert_allclose(confidence, [0.5])
