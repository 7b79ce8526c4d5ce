"""Logits -> top-k labels and probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel


class Prediction(BaseModel):
    label: str
    index: int
    score: float


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Row-wise softmax in float64: subtracting the max keeps exp() from overflowing."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probs: npt.NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return probs


def top_k(logits: npt.NDArray[np.float32], k: int, labels: Sequence[str]) -> list[Prediction]:
    """Top ``k`` classes of one image's logits, best first; ties keep the lower index."""
    probs = softmax(logits[np.newaxis, :])[0]
    k = min(k, probs.shape[0])
    # Stable sort on -p gives deterministic order for equal scores (e.g. random weights).
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(label=labels[i], index=int(i), score=float(probs[i])) for i in order]
