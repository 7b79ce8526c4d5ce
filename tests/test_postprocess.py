"""Logits to top-k (service/postprocess.py)."""

from __future__ import annotations

import numpy as np
import pytest

from service.postprocess import softmax, top_k

LABELS = ("a", "b", "c", "d")


def test_top_k_is_best_first_with_probabilities() -> None:
    logits = np.array([1.0, 3.0, 2.0, 0.0], dtype=np.float32)
    predictions = top_k(logits, 3, LABELS)
    assert [p.label for p in predictions] == ["b", "c", "a"]
    assert [p.index for p in predictions] == [1, 2, 0]
    assert predictions[0].score == pytest.approx(softmax(logits[None])[0, 1])


def test_k_larger_than_classes_returns_every_class() -> None:
    assert len(top_k(np.zeros(4, dtype=np.float32), 10, LABELS)) == 4


def test_ties_keep_the_lower_index_first() -> None:
    assert [p.index for p in top_k(np.zeros(4, dtype=np.float32), 4, LABELS)] == [0, 1, 2, 3]


def test_softmax_does_not_overflow_and_sums_to_one() -> None:
    probs = softmax(np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32))
    assert np.isfinite(probs).all()
    assert probs.sum() == pytest.approx(1.0)
    assert probs[0, 0] == pytest.approx(1.0)
