"""Recommendation: matrix factorisation on (user, item[, rating]) interactions, evaluated by
recall@k and NDCG@k on each user's held-out interactions against a most-popular baseline.

Items a user already interacted with in training are never recommended back to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from openmaas.datasets.loading import read_table, require_columns
from openmaas.datasets.params import to_dict
from openmaas.datasets.preprocessing import InteractionIndex, PreprocessingSpec, Split, split_interactions
from openmaas.errors import ValidationFailed
from openmaas.tasks import Task
from openmaas.training.classification import loop_settings
from openmaas.training.config import RecommendationConfig
from openmaas.training.context import TrainingContext
from openmaas.training.loop import LossFn, train_loop
from openmaas.training.metrics import ranking_metrics, regression_metrics
from openmaas.training.models import MatrixFactorization
from openmaas.training.models.factorization import bpr_loss
from openmaas.training.result import TrainedModel
from openmaas.training.seeding import seed_everything


def _seen_mask(users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int) -> torch.Tensor:
    mask = torch.zeros(num_users, num_items, dtype=torch.bool)
    mask[users, items] = True
    return mask


def _relevant(users: torch.Tensor, items: torch.Tensor, num_users: int) -> list[set[int]]:
    sets: list[set[int]] = [set() for _ in range(num_users)]
    for user, item in zip(users.tolist(), items.tolist(), strict=True):
        sets[user].add(item)
    return sets


def top_k(scores: torch.Tensor, exclude: torch.Tensor, k: int) -> list[list[int]]:
    """Best k items per row of `scores`, never one marked in `exclude`."""
    masked = scores.masked_fill(exclude, float("-inf"))
    return masked.topk(min(k, scores.shape[1]), dim=1).indices.tolist()


def evaluate_ranking(
    model: MatrixFactorization, exclude: torch.Tensor, relevant: list[set[int]], k: int
) -> dict[str, float]:
    with torch.no_grad():
        scores = model.score_all(torch.arange(exclude.shape[0]))
    return ranking_metrics(top_k(scores, exclude, k), relevant, k)


def popularity_baseline(
    train_items: torch.Tensor, exclude: torch.Tensor, relevant: list[set[int]], k: int
) -> dict[str, float]:
    popularity = torch.bincount(train_items, minlength=exclude.shape[1]).float()
    scores = popularity.expand(exclude.shape[0], -1)
    return ranking_metrics(top_k(scores, exclude, k), relevant, k)


def _load(path: Path, config: RecommendationConfig) -> pd.DataFrame:
    frame = read_table(path)
    require_columns(
        frame,
        user_column=config.user_column,
        item_column=config.item_column,
        rating_column=config.rating_column,
    )
    columns = [config.user_column, config.item_column] + (
        [config.rating_column] if config.rating_column else []
    )
    frame = frame[columns].dropna().reset_index(drop=True)
    if len(frame) < 10:
        raise ValidationFailed("the dataset needs at least 10 interactions", param="dataset")
    return frame


def _loss_fn(config: RecommendationConfig) -> LossFn:
    def implicit(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        assert isinstance(model, MatrixFactorization)
        return bpr_loss(model, batch[0], batch[1], config.negatives)

    def explicit(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return F.mse_loss(model(batch[0], batch[1]), batch[2])

    return explicit if config.feedback == "explicit" else implicit


@dataclass(frozen=True)
class Interactions:
    index: InteractionIndex
    users: torch.Tensor
    items: torch.Tensor
    ratings: torch.Tensor


@dataclass(frozen=True)
class RankingSplit:
    """Index arrays of each split, and what ranking on validation / test may not recommend."""

    split: Split
    train_seen: torch.Tensor
    val_relevant: list[set[int]]
    test_exclude: torch.Tensor
    test_relevant: list[set[int]]


def _encode(frame: pd.DataFrame, config: RecommendationConfig) -> Interactions:
    users, items = frame[config.user_column].tolist(), frame[config.item_column].tolist()
    index = InteractionIndex.fit(users, items)
    if config.rating_column is None:
        ratings = torch.ones(len(users))
    else:
        values = pd.to_numeric(frame[config.rating_column], errors="coerce")
        if values.isna().any():
            raise ValidationFailed(f"column {config.rating_column!r} must be numeric", param="rating_column")
        ratings = torch.tensor(values.to_numpy(np.float32))
    return Interactions(index, index.encode_users(users), index.encode_items(items), ratings)


def _ranking_split(data: Interactions, spec: PreprocessingSpec) -> RankingSplit:
    split = split_interactions(data.users.numpy(), spec.split)
    n_users, n_items = len(data.index.users), len(data.index.items)
    users, items = data.users, data.items
    train_seen = _seen_mask(users[split.train], items[split.train], n_users, n_items)
    val_seen = _seen_mask(users[split.validation], items[split.validation], n_users, n_items)
    return RankingSplit(
        split=split,
        train_seen=train_seen,
        val_relevant=_relevant(users[split.validation], items[split.validation], n_users),
        test_exclude=train_seen | val_seen,
        test_relevant=_relevant(users[split.test], items[split.test], n_users),
    )


def _test_metrics(
    model: MatrixFactorization, data: Interactions, parts: RankingSplit, config: RecommendationConfig
) -> dict[str, object]:
    metrics: dict[str, object] = dict(
        evaluate_ranking(model, parts.test_exclude, parts.test_relevant, config.k)
    )
    if config.feedback == "explicit":
        test = parts.split.test
        with torch.no_grad():
            predicted = model(data.users[test], data.items[test]).numpy()
        metrics.update(regression_metrics(data.ratings[test].numpy(), predicted))
    return metrics


def train_recommendation(
    path: Path, config: RecommendationConfig, spec: PreprocessingSpec, context: TrainingContext
) -> TrainedModel:
    data = _encode(_load(path, config), config)
    parts = _ranking_split(data, spec)
    train = parts.split.train
    args = {"num_users": len(data.index.users), "num_items": len(data.index.items), "factors": config.factors}
    seed_everything(config.seed)
    model = MatrixFactorization(**args)
    if config.feedback == "explicit":
        model.global_bias.data.fill_(float(data.ratings[train].mean()))

    def evaluate(trained: nn.Module) -> dict[str, float]:
        assert isinstance(trained, MatrixFactorization)
        return evaluate_ranking(trained, parts.train_seen, parts.val_relevant, config.k)

    tensors = (data.users[train], data.items[train], data.ratings[train])
    settings = loop_settings(config, f"recall_at_{config.k}")
    result = train_loop(model, tensors, _loss_fn(config), evaluate, settings, context)
    baseline = popularity_baseline(data.items[train], parts.test_exclude, parts.test_relevant, config.k)
    return TrainedModel(
        task=Task.RECOMMENDATION.value,
        architecture={"name": "matrix_factorization", "args": args},
        model=model,
        preprocessor=data.index,
        params=to_dict(config),
        preprocessing_spec=spec.to_dict(),
        input_signature={"kind": "user_ids"},
        output_signature={"kind": "top_k_items", "k": config.k},
        metrics=_test_metrics(model, data, parts, config),
        history=result.history,
        resumed_from_epoch=result.resumed_from_epoch,
        baseline_metrics={"most_popular": baseline},
    )
