"""Metrics match hand-computed values."""

from __future__ import annotations

import math

import numpy as np

from openmaas.training.metrics import classification_metrics, ranking_metrics, regression_metrics


def test_classification_metrics() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    metrics = classification_metrics(np.array([0, 1, 1, 1]), probs)
    assert metrics["accuracy"] == 0.75
    assert metrics["confusion_matrix"] == [[1, 0], [1, 2]]
    assert metrics["roc_auc"] == 1.0
    assert math.isclose(metrics["recall"], (1.0 + 2 / 3) / 2)  # type: ignore[arg-type]


def test_regression_metrics() -> None:
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert math.isclose(metrics["mse"], 1 / 3) and math.isclose(metrics["mae"], 1 / 3)  # type: ignore[arg-type]
    assert math.isclose(metrics["r2"], 0.5)  # type: ignore[arg-type]


def test_ranking_metrics() -> None:
    metrics = ranking_metrics([[5, 1, 2], [7, 8, 9], [1]], [{1, 3}, {9}, set()], k=2)
    # user 0: hit at rank 2 of 2 relevant; user 1: no hit in the top 2; user 2 has no relevant items
    assert math.isclose(metrics["recall_at_2"], (0.5 + 0.0) / 2)
    ideal = 1 + 1 / math.log2(3)
    assert math.isclose(metrics["ndcg_at_2"], ((1 / math.log2(3)) / ideal + 0.0) / 2)
