"""Request and response shapes for deployments."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openmaas.schemas.free_form import FreeForm
from openmaas.schemas.json_types import JSON_INTEGER, Integer, Number
from openmaas.schemas.names import NAME_PATTERN, ModelRefText

_NAME_RE = re.compile(NAME_PATTERN)

DeploymentState = Literal["pending", "loading", "ready", "failed", "stopped"]

MAX_TRAFFIC_SPLITS = 4
MAX_IDLE_TIMEOUT_S = 7 * 24 * 3600.0
MAX_TIMEOUT_S = 3600.0  # the longest a predict or explain request may wait (`timeout`)


class TrafficSplit(BaseModel):
    """One version's share of a deployment's requests, in percent."""

    model_config = ConfigDict(extra="forbid")

    version: ModelRefText = Field(
        max_length=200, description="A version of the caller's model: `churn:4` or `churn@production`"
    )
    weight: Integer = Field(ge=1, le=100, description="Percent of requests; the weights sum to 100")


class TrafficPublic(BaseModel):
    version: str = Field(description="`name:version`")
    version_id: str
    weight: int


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: ModelRefText = Field(
        max_length=200, description="The model to serve: `name`, `name:3` or `name@alias`"
    )
    name: str | None = Field(
        default=None,
        description="Deployment name (the `model` of API calls)",
        json_schema_extra={"pattern": NAME_PATTERN},
    )
    replicas: Integer = Field(default=1, ge=1, le=64)
    max_batch_size: Integer = Field(default=32, ge=1, le=4096)
    max_wait_ms: Number = Field(default=5.0, ge=0, le=10_000)
    max_queue: Integer = Field(default=1024, ge=1, le=1_000_000, description="Requests that may wait")
    engine: FreeForm = Field(default_factory=dict, description="Engine settings for LLMs")
    min_replicas: Integer = Field(
        default=1, ge=0, le=1, description="0: unload when idle and load again on the next request"
    )
    idle_timeout_s: Number | None = Field(
        default=None,
        gt=0,
        le=MAX_IDLE_TIMEOUT_S,
        description="Seconds without requests before a `min_replicas: 0` deployment unloads (300 if unset)",
    )
    placement: Literal["local", "ray"] = Field(
        default="local",
        description="`local`: replicas in this API server's process; `ray`: one Ray actor per replica on the "
        "cluster (`OPENMAAS_RAY_ADDRESS`), reached through actor handles",
    )
    cpus: Number | None = Field(default=None, gt=0, le=1024, description="CPUs per Ray replica (1 if unset)")
    gpus: Number | None = Field(default=None, ge=0, le=64, description="GPUs per Ray replica (0 if unset)")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME_RE.fullmatch(value):
            raise ValueError("must start with a letter or digit and use only letters, digits, '.', '_', '-'")
        return value


class DeploymentUpdate(BaseModel):
    """Serve another version (swapped in without failing a request) or change batching settings."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: ModelRefText | None = Field(
        default=None, max_length=200, description="The version to serve now, e.g. `churn:4`"
    )
    replicas: Annotated[int, Field(ge=1, le=64), JSON_INTEGER] | None = None
    max_batch_size: Annotated[int, Field(ge=1, le=4096), JSON_INTEGER] | None = None
    max_wait_ms: Number | None = Field(default=None, ge=0, le=10_000)
    max_queue: Annotated[int, Field(ge=1, le=1_000_000), JSON_INTEGER] | None = None
    traffic: list[TrafficSplit] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TRAFFIC_SPLITS,
        description="Serve several versions at once (a canary): weights in percent summing to 100; "
        "one entry of weight 100 promotes or rolls back to that version",
    )
    min_replicas: Annotated[int, Field(ge=0, le=1), JSON_INTEGER] | None = None
    idle_timeout_s: Number | None = Field(default=None, gt=0, le=MAX_IDLE_TIMEOUT_S)
    strategy: Literal["rolling", "recreate"] | None = Field(
        default=None,
        description="`rolling` (the default): start the new version beside the old, switch new requests "
        "to it once ready and let running ones finish on the old; answered 409 when both do not fit the "
        "serving memory budget. `recreate`: stop the old first (requests answer 503 with Retry-After "
        "until the new one is ready)",
    )


class DeploymentPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    object: Literal["deployment"] = "deployment"
    id: str
    name: str
    model: str
    version_id: str
    task: str
    state: DeploymentState
    replicas: int
    config: dict[str, Any]
    traffic: list[TrafficPublic] = Field(
        default_factory=list, description="The versions sharing the requests (empty: `model` takes all)"
    )
    scaled_to_zero: bool = Field(
        default=False, description="Ready but unloaded (idle or evicted): its next request loads it"
    )
    serving: str | None = Field(
        default=None, description="The version answering requests now, `name:version` (none while none is)"
    )
    starting: str | None = Field(
        default=None,
        description="The version loading (during an update, beside `serving`), `name:version`",
    )
    error: str | None
    created_at: datetime
    updated_at: datetime


class DeploymentEventPublic(BaseModel):
    object: Literal["deployment.event"] = "deployment.event"
    id: str
    created_at: datetime
    kind: str
    message: str


class PredictRequest(BaseModel):
    """`POST /v1/deployments/{name}/predict`: inputs in the model's signature (documents the body;
    the route parses it with orjson and checks it against the served model's signature)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(
        description="Rows of named features (tabular), base64 images, texts, base64 WAV files, "
        "or user ids (recommendation)",
        min_length=1,
    )
    top_k: int | None = Field(default=None, ge=1, description="Items (recommenders) or classes to return")
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_S, description="Seconds before the request answers 504"
    )


class PredictionsPublic(BaseModel):
    object: Literal["predictions"] = "predictions"
    deployment: str
    model: str = Field(description="The model version that answered, `name:version`")
    version_id: str
    task: str
    predictions: list[dict[str, Any]]
