"""The explain route's documented request and response shapes (OpenAPI); the route itself parses
bodies by hand, like predict, so that every error names its field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from openmaas.schemas.serving import MAX_TIMEOUT_S


class ExplainRequest(BaseModel):
    inputs: list[Any] = Field(
        description="Rows as for predict: feature objects, texts, base64 images or WAVs"
    )
    target: str | None = Field(
        default=None, description="The class label to explain (default: each predicted one)"
    )
    steps: int = Field(default=50, ge=2, description="Integrated-gradients steps (more: slower, more exact)")
    baseline: Any = Field(
        default=None,
        description="Tabular: a row of raw features; images: a pixel intensity in [0, 1] (default 0, black)",
    )
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_S, description="Seconds before the request answers 504"
    )


class Explanation(BaseModel):
    prediction: dict[str, Any] = Field(description="What predict answers for this row")
    target: str | None = Field(description="The class label explained (null for regression)")
    attributions: dict[str, Any] = Field(
        description="Tabular: {feature: score}; text: {tokens, scores}; images: {pixels, heatmap_png}; "
        "audio: {frames, mel_bins, heatmap_png}"
    )
    convergence_delta: float = Field(
        description="Integrated gradients' completeness error: near 0 means the scores are trustworthy"
    )


class ExplanationsPublic(BaseModel):
    object: str = "explanations"
    deployment: str
    model: str
    version_id: str | None
    task: str
    method: str
    steps: int
    explanations: list[Explanation]
