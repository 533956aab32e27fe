"""Evaluation metrics per task family: classification (accuracy, macro precision/recall/F1,
ROC AUC, confusion matrix), regression (MSE, MAE, R²) and top-k ranking (recall@k, NDCG@k).

scikit-learn is imported on first use: it takes seconds (scipy.stats), and every `openmaas serve`
and `openmaas worker` imports this module without computing a metric (the job forkserver imports
it once, see training/jobs.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def _sklearn_metrics() -> Any:
    from sklearn import metrics

    return metrics


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, object]:
    """`probabilities` is (n, classes); class ids are its column indices."""
    skm = _sklearn_metrics()
    classes = probabilities.shape[1]
    y_pred = probabilities.argmax(axis=1)
    labels = list(range(classes))
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": roc_auc(y_true, probabilities),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Binary AUC, or one-vs-rest macro AUC over the classes present; None when undefined."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    skm = _sklearn_metrics()
    if probabilities.shape[1] == 2:
        return float(skm.roc_auc_score(y_true, probabilities[:, 1]))
    scores = [skm.roc_auc_score(y_true == cls, probabilities[:, cls]) for cls in present]
    return float(np.mean(scores))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, object]:
    skm = _sklearn_metrics()
    return {
        "mse": float(skm.mean_squared_error(y_true, y_pred)),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)),
    }


def ranking_metrics(
    recommended: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int
) -> dict[str, float]:
    """Mean recall@k and NDCG@k over users with at least one relevant item."""
    recalls: list[float] = []
    ndcgs: list[float] = []
    for items, wanted in zip(recommended, relevant, strict=True):
        if not wanted:
            continue
        top = list(items)[:k]
        hits = [1.0 if item in wanted else 0.0 for item in top]
        recalls.append(sum(hits) / min(len(wanted), k))
        dcg = sum(hit / math.log2(rank + 2) for rank, hit in enumerate(hits))
        ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(wanted), k)))
        ndcgs.append(dcg / ideal)
    if not recalls:
        return {f"recall_at_{k}": 0.0, f"ndcg_at_{k}": 0.0}
    return {f"recall_at_{k}": float(np.mean(recalls)), f"ndcg_at_{k}": float(np.mean(ndcgs))}
