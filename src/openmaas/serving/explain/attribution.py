"""Attribution tensors, turned back into what the user sent: one score per named tabular feature,
one per token, and for images and spectrograms a heatmap PNG with a small numeric summary.

Pure functions of tensors and fitted preprocessors: no model runs here.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from openmaas.datasets.preprocessing.tabular import TabularPreprocessor

TOP_PIXELS = 10


def feature_widths(preprocessor: TabularPreprocessor) -> list[tuple[str, int]]:
    """Each raw feature and how many encoded columns it fills, in column order (one-hot categories
    take one column per category, numbers and ordinal codes one)."""
    onehot = preprocessor.encode != "ordinal"
    return [
        (f.name, len(f.categories) if onehot and f.kind == "categorical" else 1)
        for f in preprocessor.features
    ]


def per_feature(attributions: torch.Tensor, widths: Sequence[tuple[str, int]]) -> list[dict[str, float]]:
    """(rows, encoded columns) → per row {raw feature: attribution}, summing a feature's columns.

    Summing keeps integrated gradients' completeness: a row's scores still add up to the change
    in the explained output between the baseline and the input."""
    total = sum(width for _, width in widths)
    if attributions.dim() != 2 or attributions.shape[1] != total:
        raise ValueError(f"expected (rows, {total}) attributions, got {tuple(attributions.shape)}")
    rows = attributions.detach().double().tolist()
    mapped = []
    for row in rows:
        scores: dict[str, float] = {}
        start = 0
        for name, width in widths:
            scores[name] = float(sum(row[start : start + width]))
            start += width
        mapped.append(scores)
    return mapped


def per_token(attributions: torch.Tensor, tokens: Sequence[Sequence[str]]) -> list[dict[str, list[Any]]]:
    """(rows, sequence, embedding dim) → per row the text's tokens and one score each (summed over
    the embedding); padding past each text's tokens is dropped."""
    if attributions.dim() != 3 or attributions.shape[0] != len(tokens):
        raise ValueError(f"expected (rows, sequence, dim) attributions, got {tuple(attributions.shape)}")
    summed = attributions.detach().double().sum(dim=2)
    return [
        {"tokens": list(row_tokens), "scores": summed[row, : len(row_tokens)].tolist()}
        for row, row_tokens in enumerate(tokens)
    ]


def heatmap(attribution: torch.Tensor) -> np.ndarray:
    """(channels, height, width) → (height, width) magnitudes in [0, 1] (absolute attribution
    summed over channels, divided by its maximum)."""
    magnitude = attribution.detach().double().abs().sum(dim=0).numpy()
    peak = float(magnitude.max()) if magnitude.size else 0.0
    return magnitude / peak if peak > 0 else np.zeros_like(magnitude)


def heatmap_png(values: np.ndarray) -> str:
    """A (height, width) array in [0, 1] as a base64 PNG of the same size, coloured black → red →
    yellow → white (a "hot" map: brighter is more important)."""
    scaled = np.clip(values, 0.0, 1.0) * 3.0
    rgb = np.stack([np.clip(scaled, 0, 1), np.clip(scaled - 1, 0, 1), np.clip(scaled - 2, 0, 1)], axis=-1)
    image = Image.fromarray((rgb * 255).round().astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def pixel_summary(attribution: torch.Tensor) -> dict[str, Any]:
    """Totals of a (channels, height, width) attribution and its strongest pixels (summed over
    channels), so a client can read the map without decoding the PNG."""
    channels = attribution.detach().double()
    per_pixel = channels.sum(dim=0)
    flat = per_pixel.flatten()
    order = flat.abs().argsort(descending=True)[:TOP_PIXELS].tolist()
    width = per_pixel.shape[1]
    return {
        "height": int(per_pixel.shape[0]),
        "width": int(width),
        "total": float(flat.sum()),
        "positive": float(flat.clamp_min(0).sum()),
        "negative": float(flat.clamp_max(0).sum()),
        "max_abs": float(flat.abs().max()) if flat.numel() else 0.0,
        "top_pixels": [{"y": i // width, "x": i % width, "score": float(flat[i])} for i in order],
    }


def image_explanation(attribution: torch.Tensor) -> dict[str, Any]:
    """One image's attributions: the per-pixel summary and the saliency heatmap PNG."""
    return {"pixels": pixel_summary(attribution), "heatmap_png": heatmap_png(heatmap(attribution))}


def spectrogram_explanation(attribution: torch.Tensor) -> dict[str, Any]:
    """One clip's attributions over its (1, mel bins, frames) log-mel map: per-frame and per-mel-bin
    totals and a heatmap PNG (time left to right, low frequencies at the bottom)."""
    grid = attribution.detach().double().sum(dim=0)  # (mels, frames)
    return {
        "frames": grid.sum(dim=0).tolist(),
        "mel_bins": grid.sum(dim=1).tolist(),
        "heatmap_png": heatmap_png(heatmap(attribution)[::-1].copy()),
    }
