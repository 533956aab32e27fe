"""A deployment's settings, typed: what the `deployments.config` column stores (batching, scaling,
the traffic split, the LLM engine settings) and what a runtime is built with.

Checked once where a deployment is created or updated (`serving.service`) and parsed once where a
stored row is read (`DeploymentConfig.from_stored`); no loose dict goes on to the loader, the
replicas or the runtimes. The stored JSON keeps its shape, so existing rows load: the engine
settings sit beside the batching ones at the top level, only the keys that were given are stored,
and `traffic` appears only for a split of several versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import NoneType
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, field_validator

DEFAULT_IDLE_TIMEOUT_S = 300.0


class EngineSettings(BaseModel):
    """The LLM engine's settings a deployment may give (`engine` of its create request); strict:
    `"false"` is not a bool, and a bool is not an int."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    kv_cache_memory_bytes: int | None = None
    num_blocks: int | None = None
    block_size: int | None = None
    dtype: str | None = None
    device: str | None = None
    enable_prefix_caching: bool | None = None
    max_waiting_requests: int | None = None
    num_threads: int | None = None
    cpu_kernels: bool | None = None
    cpu_onednn: bool | None = None
    max_loras: int | None = None  # fine-tuned adapters resident at once (engine/lora.py); 0: none
    max_lora_rank: int | None = None
    # Weight-only quantisation at load (engine/quant.py): "int8" or "int4", one scale per
    # `quantization_group_size` inputs (a multiple of 32; 0: one per output channel).
    quantization: str | None = None
    quantization_group_size: int | None = None
    # Speculative decoding by n-gram prompt lookup (engine/speculative.py): guesses per step, 0: off.
    speculative_tokens: int | None = None
    prompt_lookup_max: int | None = None
    prompt_lookup_min: int | None = None

    def options(self) -> dict[str, Any]:
        """The settings that were given, as the engine's keyword arguments."""
        return self.model_dump(exclude_none=True)


# Each engine setting's type, as a create request's error names it.
ENGINE_SETTINGS: dict[str, type] = {
    name: next(t for t in get_args(spec.annotation) if t is not NoneType)
    for name, spec in EngineSettings.model_fields.items()
}


# The range of each whole-number engine setting a create may give: past it the engine would try to
# allocate without bound, start a thread per request or fail at load. Checked where a deployment is
# created, not when a stored row is read, so rows stored before these bounds still load.
ENGINE_RANGES: dict[str, tuple[int, int]] = {
    "max_num_seqs": (1, 4096),
    "max_num_batched_tokens": (1, 1 << 20),
    "max_model_len": (1, 1 << 20),
    "kv_cache_memory_bytes": (1, 1 << 40),
    "num_blocks": (1, 1 << 24),
    "block_size": (1, 1024),
    "max_waiting_requests": (1, 1 << 20),
    "num_threads": (1, 256),
    "max_loras": (0, 64),
    "max_lora_rank": (1, 256),
    "quantization_group_size": (0, 1 << 16),
    "speculative_tokens": (0, 16),
    "prompt_lookup_max": (1, 16),
    "prompt_lookup_min": (1, 16),
}

# The engine settings that take one of a few words.
ENGINE_CHOICES: dict[str, tuple[str, ...]] = {"quantization": ("int8", "int4")}


def engine_setting_error(name: str, value: object) -> str | None:
    """Why `value` cannot be the engine setting `name`, or None if it can."""
    expected = ENGINE_SETTINGS[name]
    # bool is an int in Python: keep the two apart both ways.
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        return f"engine setting {name!r} must be {'true or false' if expected is bool else expected.__name__}"
    low, high = ENGINE_RANGES.get(name, (None, None))
    if isinstance(value, int) and low is not None and high is not None and not low <= value <= high:
        return f"engine setting {name!r} must be from {low} to {high}"
    choices = ENGINE_CHOICES.get(name)
    if choices is not None and value not in choices:
        return f"engine setting {name!r} must be one of {', '.join(map(repr, choices))}"
    if name == "quantization_group_size" and isinstance(value, int) and value % 32:
        return f"engine setting {name!r} must be a multiple of 32 (0: one scale per output channel)"
    return None


def engine_settings_conflict(given: Mapping[str, Any]) -> tuple[str, str] | None:
    """(setting, why) where settings valid one by one do not fit together, else None."""
    low = given.get("prompt_lookup_min", 2)  # the engine's defaults (EngineConfig)
    high = given.get("prompt_lookup_max", 4)
    if low > high:
        name = "prompt_lookup_min" if "prompt_lookup_min" in given else "prompt_lookup_max"
        return name, f"engine setting 'prompt_lookup_min' ({low}) exceeds 'prompt_lookup_max' ({high})"
    return None


class TrafficRoute(BaseModel):
    """One version of a split, as stored: `name:N`, its id, and its percent of the requests."""

    model_config = ConfigDict(frozen=True)

    version: str = ""  # empty for a deployment's one version, which the loader names by id
    version_id: str
    weight: int


class DeploymentConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    min_replicas: int = 1  # 0: unloaded while idle, loaded again by its next request
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    traffic: tuple[TrafficRoute, ...] = ()  # a split of several versions; empty: the row's version
    engine: EngineSettings = EngineSettings()
    # Where the replicas run: `local` (threads of this API server) or `ray` (one Ray actor per
    # replica, anywhere on the cluster, reserving `cpus` and `gpus` each).
    placement: Literal["local", "ray"] = "local"
    cpus: float = 1.0
    gpus: float = 0.0

    @field_validator("idle_timeout_s", mode="before")
    @classmethod
    def _default_when_null(cls, value: Any) -> Any:
        return DEFAULT_IDLE_TIMEOUT_S if value is None else value

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> DeploymentConfig:
        """A row's `config` column, parsed."""
        engine = {key: value for key, value in stored.items() if key in ENGINE_SETTINGS}
        rest = {key: value for key, value in stored.items() if key not in ENGINE_SETTINGS}
        return cls.model_validate({**rest, "engine": engine})

    def to_stored(self) -> dict[str, Any]:
        """What the `config` column holds: the keys that were given, engine settings beside them."""
        stored = self.model_dump(mode="json", exclude_unset=True, exclude={"engine", "traffic"})
        stored.update(self.engine.model_dump(exclude_unset=True))
        if len(self.traffic) > 1:
            stored["traffic"] = [route.model_dump() for route in self.traffic]
        return stored

    def updated(
        self, changes: Mapping[str, Any], traffic: tuple[TrafficRoute, ...] | None = None
    ) -> DeploymentConfig:
        """These settings with `changes` (batching and scaling fields) and, unless None, the split
        `traffic` (one route: no split)."""
        merged = {**self.to_stored(), **changes}
        if traffic is not None:
            merged.pop("traffic", None)
            if len(traffic) > 1:
                merged["traffic"] = [route.model_dump() for route in traffic]
        return DeploymentConfig.from_stored(merged)

    def routes(self, version_id: str) -> tuple[TrafficRoute, ...]:
        """The versions that answer: the split, or the deployment's one version (`version_id`)."""
        return self.traffic or (TrafficRoute(version_id=version_id, weight=100),)

    def for_runtime(self, model_version: str, replicas: int) -> RuntimeConfig:
        return RuntimeConfig(
            model_version=model_version,
            replicas=replicas,
            max_batch_size=self.max_batch_size,
            max_wait_ms=self.max_wait_ms,
            max_queue=self.max_queue,
            engine=self.engine,
        )


@dataclass(frozen=True)
class RuntimeConfig:
    """What one runtime is built with. The engine settings are an LLM deployment's; they stay with
    a deployment updated to another kind of model, whose runtimes read `num_threads` (and an
    embedding model `max_waiting_requests`) from them."""

    model_version: str = ""  # `name:version`, what a prediction reports as its answering model
    replicas: int = 1
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    engine: EngineSettings = field(default_factory=EngineSettings)
