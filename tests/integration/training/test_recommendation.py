"""Recommendation: matrix factorisation beats the most-popular baseline on low-rank data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from openmaas.training.artifact import load_artifact, write_artifact
from openmaas.training.predictor import Recommendations
from openmaas.training.train import train
from tests.data.builders import interactions_csv


def test_implicit_mf_doubles_the_popularity_baseline_and_excludes_seen(tmp_path: Path) -> None:
    path = interactions_csv(tmp_path / "interactions.csv")
    trained = train("recommendation", path, {"epochs": 20, "k": 10})
    baseline = trained.baseline_metrics["most_popular"]  # type: ignore[index]
    assert trained.metrics["recall_at_10"] >= 2 * baseline["recall_at_10"]
    assert trained.metrics["ndcg_at_10"] > baseline["ndcg_at_10"]
    write_artifact(trained, tmp_path / "model")
    predictor = load_artifact(tmp_path / "model")
    recs = predictor.predict(["u0", "u1", "stranger"])
    assert all(isinstance(r, Recommendations) and len(r.items) == 10 for r in recs)
    seen = pd.read_csv(path).groupby("user")["item"].apply(set)
    assert not set(recs[0].items) & seen["u0"]  # type: ignore[union-attr]
    assert not set(recs[1].items) & seen["u1"]  # type: ignore[union-attr]
    assert len(predictor.predict(["u0"], k=3)[0].items) == 3  # type: ignore[union-attr]


def test_explicit_ratings_report_rating_error(tmp_path: Path) -> None:
    frame = pd.read_csv(interactions_csv(tmp_path / "i.csv", users=80, items=60, per_user=12))
    frame["rating"] = (frame["item"].str[1:].astype(int) % 5 + 1).astype(float)
    frame.to_csv(tmp_path / "ratings.csv", index=False)
    trained = train(
        "recommendation",
        tmp_path / "ratings.csv",
        {"epochs": 30, "feedback": "explicit", "rating_column": "rating", "factors": 8},
    )
    assert {"mse", "mae", "recall_at_10"} <= set(trained.metrics)
    assert trained.metrics["mse"] < 1.0  # variance of ratings 1..5 is 2
