"""Edge confidence from margins (pure functions on hand-made numbers)."""

import numpy as np

from mothertree.tree.calibration import edge_confidence, weakest_margin


def test_the_weaker_margin_decides_and_roots_stay_nan():
    placement = np.array([0.9, 0.05, np.nan])
    direction = np.array([0.02, 0.9, np.nan])
    np.testing.assert_array_equal(weakest_margin(placement, direction)[:2], [0.02, 0.05])
    confidence = edge_confidence(placement, direction)
    assert confidence[0] < confidence[1] and np.isnan(confidence[2])


def test_confidence_is_a_probability_rising_with_the_margin():
    margins = np.linspace(0.0, 1.0, 101)
    confidence = edge_confidence(margins, np.ones_like(margins))
    assert ((0.0 < confidence) & (confidence < 1.0)).all()
    assert (np.diff(confidence) > 0).all()


def test_the_logistic_form():
    # sigmoid(a + b log(m + floor)) with a = 0, b = 1: odds equal to the margin (plus the floor)
    confidence = edge_confidence(np.array([0.999]), np.array([1.0]), intercept=0.0, slope=1.0)
    np.testing.assert_allclose(confidence, [0.5])
