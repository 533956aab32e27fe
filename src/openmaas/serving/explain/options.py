"""The explain-only fields of a request (`target`, `steps`, `baseline`), checked on the event loop
before anything is queued; every bad value raises ValidationFailed naming its field. And the
server's limits on explanations (`ExplainLimits`, from its settings)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from openmaas.errors import ValidationFailed
from openmaas.tasks import Task

DEFAULT_STEPS = 50
MIN_STEPS = 2


@dataclass(frozen=True)
class ExplainLimits:
    """Explanations a deployment may queue, rows per request, and integrated-gradients steps."""

    max_queue: int = 4
    max_rows: int = 16
    max_steps: int = 256

    def check_rows(self, rows: list[Any]) -> list[Any]:
        """The rows of one request, refused (400 naming `inputs`) past `max_rows`."""
        if len(rows) > self.max_rows:
            raise ValidationFailed(
                f"inputs has {len(rows)} rows; explanations take at most {self.max_rows} per request.",
                param="inputs",
                code="too_many_inputs",
            )
        return rows


@dataclass(frozen=True)
class ExplainOptions:
    """What to explain: `target` (a class label; None: each row's predicted class), the number of
    integrated-gradients steps, and the baseline (None: the family's default, see `Explainer`)."""

    target: str | None = None
    steps: int = DEFAULT_STEPS
    baseline: Any = None


def parse_options(
    body: dict[str, Any],
    *,
    task: str,
    labels: Sequence[str],
    check_rows: Callable[[list[Any]], list[Any]],
    max_steps: int,
) -> ExplainOptions:
    return ExplainOptions(
        target=_target(body.get("target"), task, labels),
        steps=_steps(body.get("steps", DEFAULT_STEPS), max_steps),
        baseline=_baseline(body.get("baseline"), task, check_rows),
    )


def _target(value: Any, task: str, labels: Sequence[str]) -> str | None:
    if value is None:
        return None
    if task == Task.TABULAR_REGRESSION:
        raise ValidationFailed("target does not apply to regression models.", param="target")
    if type(value) is not str or value not in labels:
        shown = ", ".join(repr(label) for label in labels[:20])
        raise ValidationFailed(
            f"target must be one of the model's class labels: {shown}.", param="target", code="unknown_label"
        )
    return value


def _steps(value: Any, max_steps: int) -> int:
    if type(value) is not int or not MIN_STEPS <= value <= max_steps:
        raise ValidationFailed(f"steps must be an integer from {MIN_STEPS} to {max_steps}.", param="steps")
    return value


def _baseline(value: Any, task: str, check_rows: Callable[[list[Any]], list[Any]]) -> Any:
    """Tabular: a row of raw features; images: one pixel intensity in [0, 1] for every pixel."""
    if value is None:
        return None
    if task in (Task.TABULAR_CLASSIFICATION, Task.TABULAR_REGRESSION):
        try:
            return check_rows([value])[0]
        except ValidationFailed as exc:
            param = "baseline" + (exc.param or "inputs.0")[len("inputs.0") :]
            message = exc.message.replace("inputs.0", "baseline")
            raise ValidationFailed(message, param=param) from None
    if task == Task.IMAGE_CLASSIFICATION:
        if type(value) not in (int, float) or not 0 <= value <= 1:
            raise ValidationFailed(
                "baseline must be a pixel intensity from 0 (black) to 1 (white).", param="baseline"
            )
        return float(value)
    raise ValidationFailed(
        f"baseline cannot be set for {task} models (text explains against padding, audio against "
        "the training clips' average).",
        param="baseline",
    )
