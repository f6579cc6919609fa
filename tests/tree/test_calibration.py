"""Edge confidence from margins (pure functions on hand-made numbers)."""

import numpy as np
import pytest

from mothertree.tree.calibration import edge_confidence, weakest_margin


def test_the_weaker_margin_decides_and_roots_stay_nan():
    placement = np.array([0.9, 0.05, np.nan])
    direction = np.array([0.02, 0.9, np.nan])
    np.testing.assert_array_equal(weakest_margin(placement, direction)[:2], [0.02, 0.05])
    confidence = edge_confidence(placement, direction)
    assert confidence[0] < confidence[1] and np.isnan(confidence[2])


def test_confidence_rises_with_the_margin_from_a_tie_to_a_sure_edge():
    margins = np.linspace(0.0, 1.0, 101)
    confidence = edge_confidence(margins, np.ones_like(margins))
    assert (np.diff(confidence) > 0).all()
    # By hand, with the fitted 6.63 and 0.95: a tie, sigmoid(6.63 + 0.95 ln 0.001) = sigmoid(0.0676) = 0.5169;
    # a full margin, sigmoid(6.63 + 0.95 ln 1.001) = sigmoid(6.631) = 0.99868.
    assert confidence[0] == pytest.approx(0.51690, abs=1e-5)
    assert confidence[-1] == pytest.approx(0.99868, abs=1e-5)
    # Margins outside [0, 1] are clipped to it.
    np.testing.assert_allclose(edge_confidence([-0.1, 2.0], [1.0, 1.0]), [0.51690, 0.99868], atol=1e-5)


def test_the_logistic_form():
    # sigmoid(a + b log(m + floor)) with a = 0, b = 1: odds equal to the margin (plus the floor)
    confidence = edge_confidence(np.array([0.999]), np.array([1.0]), intercept=0.0, slope=1.0)
    np.testing.assert_allclose(confidence, [0.5])
