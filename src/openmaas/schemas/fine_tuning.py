"""OpenAI's fine-tuning jobs (`/v1/fine_tuning/jobs`), as the `openai` SDK sends and reads them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from openmaas.schemas.names import NAME_PATTERN

Auto = Literal["auto"]
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Hyperparameters(BaseModel):
    """OpenAI's supervised hyperparameters, and LoRA's own (rank, alpha, target modules)."""

    model_config = ConfigDict(extra="forbid")

    # Bounded by `_within_bounds`, so that an error names the field itself (bounds on a union's
    # member put the member's name in the error's location).
    n_epochs: int | Auto = "auto"
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = "auto"
    lora_rank: int = Field(default=8, ge=1, le=256)
    lora_alpha: float = Field(default=16.0, gt=0, le=1024)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    lora_target_modules: list[Literal[TARGET_MODULES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(TARGET_MODULES), min_length=1
    )

    @field_validator("n_epochs", "batch_size", "learning_rate_multiplier")
    @classmethod
    def _within_bounds(cls, value: float | str, info: ValidationInfo) -> float | str:
        low, high = _BOUNDS[str(info.field_name)]
        if value != "auto" and not low <= float(value) <= high:
            raise ValueError(f"must be 'auto' or between {low:g} and {high:g}")
        return value


_BOUNDS = {"n_epochs": (1, 50), "batch_size": (1, 256), "learning_rate_multiplier": (1e-6, 100)}


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["supervised"] = "supervised"
    supervised: Supervised = Field(default_factory=Supervised)


class FineTuningJobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200, description="The base: name, name:3 or name@alias")
    training_file: str = Field(min_length=1, max_length=100)
    validation_file: str | None = Field(default=None, max_length=100)
    suffix: str | None = Field(default=None, min_length=1, max_length=64, pattern=NAME_PATTERN)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None  # the older top-level form
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None

    def resolved_hyperparameters(self) -> Hyperparameters:
        if self.method is not None:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()


class FineTuningError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJobPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None = None
    model: str
    fine_tuned_model: str | None = None
    organization_id: str
    status: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    result_files: list[str] = Field(default_factory=list)
    trained_tokens: int | None = None
    # Our addition, measured when the job is created (before any training), so its cost is known in
    # advance: the training file's tokens through the base model's chat template, one epoch. Only the
    # answers' tokens are trained and billed (`trained_tokens`), so n_epochs times this bounds the bill.
    estimated_tokens: int | None = None
    error: FineTuningError | None = None
    seed: int
    estimated_finish: int | None = None
    integrations: list[Any] | None = None
    user_provided_suffix: str | None = None
    metadata: dict[str, str] | None = None


class FineTuningEventPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None = None


class FineTuningCheckpointPublic(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, float]
    step_number: int
