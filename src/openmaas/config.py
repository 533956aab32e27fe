"""Settings: the one place that reads `OPENMAAS_*` environment variables.

Everything else takes a `Settings` (or plain values from it) as an argument.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Query parameters of a remote store's URL (`openmaas.storage.open_store`) naming its local side.
CACHE_PARAM, CACHE_MB_PARAM = "cache", "cache_mb"


def with_cache(url: str, folder: Path, max_mb: float) -> str:
    """A remote store's `url` naming a local read cache, unless it names one (a folder as it is)."""
    if "://" not in url.removeprefix("file://"):
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault(CACHE_PARAM, str(folder))
    query.setdefault(CACHE_MB_PARAM, f"{max_mb:g}")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _default_home() -> Path:
    return Path.home() / ".openmaas"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENMAAS_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None
    # The artifact store: a folder (default `home/artifacts`; a shared mount in cluster mode), or
    # `s3://bucket/prefix` for any S3-compatible store (the `cluster` extra; credentials and
    # endpoint from the usual AWS variables, or `?endpoint_url=…`), read through a local cache of
    # at most `storage_cache_mb` under `home/storage-cache`.
    storage_url: str | None = None
    storage_cache_mb: float = Field(default=10_240.0, gt=0)
    # Where job attempts run: `local` (a process each, on the worker's machine) or `ray` (an actor
    # each on the Ray cluster at `ray_address`: `auto`, `host:port` or `ray://host:10001`; unset:
    # `auto`, else a local one-node Ray). `ray` needs the `cluster` extra.
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    # What a job attempt's coordinating actor reserves on the cluster. Training with `workers: N`
    # reserves each worker's CPUs and GPUs besides; the coordinator then only waits on them.
    ray_job_cpus: float = Field(default=1.0, ge=0)

    host: str = "127.0.0.1"
    port: int = 8000

    # Sets the operator key instead of generating one on first start.
    admin_key: str | None = None
    # HMAC key for API-key hashes; read from `$home/secret.key` (created on first start) when unset.
    # In cluster mode every API server must share it.
    secret_key: str | None = None

    # Client side (CLI): where to reach a server, and with which key; a saved profile fills gaps.
    url: str | None = None
    api_key: str | None = None
    profile: str = "default"
    config_dir: Path = Field(default_factory=lambda: Path.home() / ".config" / "openmaas")

    max_body_bytes: int = 10 * 1024 * 1024
    # The request line and headers together, and the number of headers (431 past either).
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    max_header_count: int = Field(default=100, ge=10)
    auth_cache_ttl_s: float = 1.0
    auth_cache_size: int = 10_000
    idempotency_ttl_s: float = 24 * 3600.0
    # How long a Responses API answer stays stored for `previous_response_id` and GET (OpenAI: 30 days).
    responses_ttl_s: float = Field(default=30 * 24 * 3600.0, gt=0)
    default_page_limit: int = 20
    max_page_limit: int = 100
    # Web console sessions: signed out after this long unused, and this long after sign-in at most.
    console_session_idle_s: float = Field(default=30 * 60.0, gt=0)
    console_session_max_s: float = Field(default=12 * 3600.0, gt=0)
    access_log: bool = False
    # The server's log on stderr: one line per record, as `logfmt` (key=value) or `json`; one
    # line per HTTP request (`request_log`), and job, deployment and billing events, from `info`.
    log_format: Literal["logfmt", "json"] = "logfmt"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    request_log: bool = True
    # Once started, the server collects and freezes its heap so that full collections skip what
    # lives as long as it does (their pauses were the p99 of hot routes). The freeze is process-wide:
    # a process that runs several servers in turn (the tests) turns it off.
    freeze_heap: bool = True

    # Metering and billing (see metering/ and billing/).
    currency: str = "USD"
    metering_queue_size: int = 100_000
    metering_max_batch: int = 2_000
    metering_linger_s: float = 0.0
    metering_wait_timeout_s: float = 30.0
    billing_cache_ttl_s: float = 5.0
    # A server returns its lease on a wallet or cap (see metering/budgets.py) after this long idle.
    billing_lease_idle_s: float = Field(default=1.0, gt=0)
    # The billing scheduler (storage sample, month-end invoices): how often it runs (0: never) and
    # how long after a month ends its invoices wait for usage still in flight.
    billing_scheduler_interval_s: float = 300.0
    billing_finalize_grace_s: float = 300.0
    # Predictions: the default deadline of a request (`X-Request-Timeout` or `timeout` overrides it),
    # and the most rows one request may hold (the batcher runs them in slices of the deployment's
    # `max_batch_size`; the body limit applies as well).
    predict_timeout_s: float = 30.0
    predict_max_rows: int = Field(default=100_000, ge=1)
    # Serving: loaded deployments stay within this many MB (artifact bytes × replicas; unset: no
    # limit), unloading the least recently used idle ones; a request for an unloaded one waits up
    # to `cold_start_wait_s` for it to load; idle `min_replicas: 0` deployments are swept this often.
    serving_memory_budget_mb: float | None = Field(default=None, gt=0)
    cold_start_wait_s: float = Field(default=30.0, gt=0)
    serving_sweep_interval_s: float = Field(default=5.0, ge=0)
    # Each API server follows deployments made, changed or deleted through the others this often
    # (one narrow query per round; 0: never, a single server).
    deployment_sync_interval_s: float = Field(default=1.0, ge=0)
    # A version replaced by an update finishes its running requests (streams) for at most this
    # long before it is closed; the rest are cut off.
    serving_drain_timeout_s: float = Field(default=600.0, gt=0)
    # Explanations: each deployment's own small queue (full → 503), rows per request, the most
    # integrated-gradients steps a request may ask for, and the default deadline.
    explain_max_queue: int = 4
    explain_max_rows: int = 16
    explain_max_steps: int = 256
    explain_timeout_s: float = 60.0
    rate_limit_requests_per_minute: int | None = 3_000
    rate_limit_tokens_per_minute: int | None = 2_000_000
    marketplace_platform_share_bps: int = 2_000  # the platform keeps 20% of marketplace sales
    # `memory`: per process (embedded); `database`: shared by every API server (cluster mode).
    rate_limiter: str = Field(default="memory", pattern="^(memory|database)$")

    # Jobs: the worker's limits, its lease on a job, and the dataset upload limit.
    worker_concurrency: int = 2
    worker_org_concurrency: int = 2
    worker_in_process: bool = True  # `openmaas serve` also runs a worker (`--no-worker`: not)
    job_lease_s: float = 30.0
    job_heartbeat_s: float = 5.0
    job_poll_s: float = 1.0
    job_meter_interval_s: float = 60.0  # jobs' compute is billed per interval of this many seconds
    job_max_attempts: int = 3
    max_dataset_bytes: int = 1024**3
    # Hugging Face model folders uploaded for import (zip), and what they may expand to.
    max_import_bytes: int = 20 * 1024**3
    # Optimisation jobs: the largest drop of the test metric (absolute) a result may show.
    optimize_max_metric_drop: float = Field(default=0.01, ge=0.0, le=1.0)

    @field_validator("executor")
    @classmethod
    def _executor_installed(cls, executor: str) -> str:
        if executor == "ray" and importlib.util.find_spec("ray") is None:
            raise ValueError("the ray executor needs Ray: pip install 'openmaas[cluster]'")
        return executor

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'openmaas.db'}"

    @property
    def admin_key_path(self) -> Path:
        return self.home / "admin.key"

    @property
    def profiles_path(self) -> Path:
        return self.config_dir / "profiles.json"

    @property
    def secret_key_path(self) -> Path:
        return self.home / "secret.key"

    @property
    def resolved_storage_url(self) -> str:
        """The artifact store (see `openmaas.storage.open_store`): `OPENMAAS_STORAGE_URL`, else the
        folder `artifacts` under home. A remote store's URL names its local read cache too, so a job
        process opening it shares the worker's."""
        if not self.storage_url:
            return str(self.home / "artifacts")
        return with_cache(self.storage_url, self.home / "storage-cache", self.storage_cache_mb)
