"""The composition root: builds the object graph (settings, database, clock, key hasher,
authenticator) once per process. No module keeps globals; tests build a fresh `Platform` each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openmaas.billing.marketplace import listings_holding
from openmaas.billing.price_source import DatabasePriceSource
from openmaas.billing.scheduler import BillingScheduler
from openmaas.clock import Clock, SystemClock
from openmaas.config import Settings
from openmaas.datasets import jobs as dataset_jobs
from openmaas.datasets.files import FileUploads
from openmaas.datasets.uploads import DatasetUploads
from openmaas.db.database import Database
from openmaas.jobs.handlers import JobHandler
from openmaas.metering.sources import JobComputeMeter
from openmaas.metering.wiring import Metering, build_metering
from openmaas.optimize import jobs as optimize_jobs
from openmaas.registry.imports import ModelImports
from openmaas.registry.in_use import VersionHolder
from openmaas.serving.adapters import Adapters
from openmaas.serving.batches.runner import BatchRunner
from openmaas.serving.directory import ServedModels
from openmaas.serving.explain.options import ExplainLimits
from openmaas.serving.holders import deployments_holding
from openmaas.serving.inference import Inference
from openmaas.serving.metrics_series import DeploymentMetrics
from openmaas.serving.replicas import ReplicaManager
from openmaas.serving.response_store import ResponseStore
from openmaas.serving.responses import Responses
from openmaas.serving.sync import DeploymentSync
from openmaas.storage import ArtifactStore, open_store
from openmaas.tenancy import service as tenancy
from openmaas.tenancy.auth import Authenticator
from openmaas.tenancy.keys import KeyHasher, is_well_formed, load_or_create_secret
from openmaas.training import finetune_jobs
from openmaas.training import jobs as training_jobs


@dataclass
class Platform:
    settings: Settings
    db: Database
    clock: Clock
    hasher: KeyHasher
    authenticator: Authenticator
    store: ArtifactStore
    served_models: ServedModels = field(default_factory=ServedModels)
    # Filled by `ensure_admin_key` when it generated a key on this start (printed once).
    new_admin_key: str | None = field(default=None)
    # Who may hold a model version the registry is asked to delete (`registry.in_use`), in the
    # order its 409 names them: live marketplace listings, then deployments and traffic splits.
    version_holders: tuple[VersionHolder, ...] = field(
        default=(listings_holding, deployments_holding), init=False
    )
    # Metering and billing; `meter.record(UsageEvent(...))` is the hook for everything billable.
    metering: Metering = field(init=False)
    # What the job worker bills each running attempt's compute through, per interval.
    job_compute: JobComputeMeter = field(init=False)
    # Model replicas of this process: deployments load here and publish into `served_models`.
    replicas: ReplicaManager = field(init=False)
    # Follows deployments made, changed or deleted through other API servers (cluster mode).
    deployment_sync: DeploymentSync = field(init=False)
    # The last hour of each loaded deployment's queue depth and latency (the console's charts);
    # `start()`ed by the API server's lifespan.
    deployment_metrics: DeploymentMetrics = field(init=False)
    # The inference use-cases (predict, explain, embed, complete) every inference route calls.
    inference: Inference = field(init=False)
    # OpenAI's batches, run in this process beside the deployments (`start()`ed by the lifespan).
    batches: BatchRunner = field(init=False)
    # Fine-tuned adapters (`ft:` models) answered by their base's deployment.
    adapters: Adapters = field(init=False)
    # The Responses API: mapped onto `inference`'s chat completions, answers stored for follow-ups.
    responses: Responses = field(init=False)
    # Dataset uploads and model imports: streamed request bodies into the store and the registry.
    dataset_uploads: DatasetUploads = field(init=False)
    # OpenAI's /v1/files: multipart uploads, a fine-tune file's chat format checked line by line.
    file_uploads: FileUploads = field(init=False)
    model_imports: ModelImports = field(init=False)
    # Month-end invoices and the daily storage sample; `start()`ed by the API server's lifespan
    # and by `openmaas worker`.
    billing_scheduler: BillingScheduler = field(init=False)

    def __post_init__(self) -> None:
        prices = DatabasePriceSource(self.db, self.clock, ttl=self.settings.billing_cache_ttl_s)
        self.metering = build_metering(self.settings, self.db, self.clock, prices)
        self.meter = self.metering.meter
        self.gate = self.metering.gate
        self.job_compute = JobComputeMeter(
            self.gate,
            self.meter,
            self.clock,
            billed_kinds=frozenset(
                {training_jobs.TRAIN_KIND, finetune_jobs.FINE_TUNE_KIND, optimize_jobs.OPTIMIZE_KIND}
            ),
        )
        budget_mb = self.settings.serving_memory_budget_mb
        self.replicas = ReplicaManager(
            self.db,
            self.store,
            self.served_models,
            self.clock,
            memory_budget_bytes=None if budget_mb is None else int(budget_mb * 1024 * 1024),
            cold_start_wait_s=self.settings.cold_start_wait_s,
            sweep_interval_s=self.settings.serving_sweep_interval_s,
            drain_timeout_s=self.settings.serving_drain_timeout_s,
            ray_address=self.settings.ray_address,
        )
        self.deployment_sync = DeploymentSync(
            self.db, self.replicas, self.served_models, interval_s=self.settings.deployment_sync_interval_s
        )
        self.deployment_metrics = DeploymentMetrics(self.served_models, self.clock)
        settings = self.settings
        self.adapters = Adapters(
            self.db, self.store, self.served_models, self.clock, scaled_to_zero=self.replicas
        )
        self.inference = Inference(
            self.replicas,
            self.gate,
            self.clock,
            predict_timeout_s=settings.predict_timeout_s,
            predict_max_rows=settings.predict_max_rows,
            explain_timeout_s=settings.explain_timeout_s,
            explain_limits=ExplainLimits(
                settings.explain_max_queue, settings.explain_max_rows, settings.explain_max_steps
            ),
            adapters=self.adapters,
        )
        self.batches = BatchRunner(self.db, self.store, self.replicas, self.inference, self.clock)
        self.responses = Responses(
            self.inference, ResponseStore(self.db, self.clock, ttl_s=settings.responses_ttl_s)
        )
        self.dataset_uploads = DatasetUploads(
            self.store,
            self.db,
            self.clock,
            max_bytes=settings.max_dataset_bytes,
            job_max_attempts=settings.job_max_attempts,
        )
        self.file_uploads = FileUploads(self.store, self.db, self.clock, max_bytes=settings.max_dataset_bytes)
        self.model_imports = ModelImports(
            self.store, self.db, self.clock, max_bytes=settings.max_import_bytes
        )
        self.billing_scheduler = BillingScheduler(
            self.db,
            self.meter,
            self.store,
            self.clock,
            currency=self.settings.currency,
            interval_s=self.settings.billing_scheduler_interval_s,
            finalize_grace_s=self.settings.billing_finalize_grace_s,
        )

    def close(self) -> None:
        self.billing_scheduler.close()
        self.deployment_sync.close()
        self.deployment_metrics.close()
        self.replicas.close()
        self.adapters.close()
        self.gate.close()
        self.meter.close()
        self.metering.budgets.close()
        self.db.dispose()


def build_platform(settings: Settings | None = None, *, clock: Clock | None = None) -> Platform:
    settings = settings or Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    clock = clock or SystemClock()
    secret = (
        bytes.fromhex(settings.secret_key)
        if settings.secret_key
        else load_or_create_secret(settings.secret_key_path)
    )
    hasher = KeyHasher(secret)
    db = Database(settings.resolved_database_url)
    authenticator = Authenticator(
        db, hasher, clock, ttl=settings.auth_cache_ttl_s, max_entries=settings.auth_cache_size
    )
    store = open_store(settings.resolved_storage_url)
    return Platform(
        settings=settings, db=db, clock=clock, hasher=hasher, authenticator=authenticator, store=store
    )


def job_handlers() -> dict[str, JobHandler[Any]]:
    """Every kind of job the workers run, by kind (`openmaas.job_process` hands them to the job
    system); a dataset's validation releases the training jobs that waited for it."""
    handlers = (
        dataset_jobs.validation_handler(release_waiting=training_jobs.release_waiting_jobs),
        training_jobs.TRAIN,
        finetune_jobs.FINE_TUNE,
        optimize_jobs.OPTIMIZE,
    )
    return {handler.kind: handler for handler in handlers}


def ensure_admin_key(platform: Platform) -> str | None:
    """Register `OPENMAAS_ADMIN_KEY`, or create the operator key on first start.

    A generated key is written to `$OPENMAAS_HOME/admin.key` (mode 0600) and returned so the caller
    can print it once.
    """
    configured = platform.settings.admin_key
    if configured is not None and not is_well_formed(configured):
        raise ValueError("OPENMAAS_ADMIN_KEY must look like 'om-' followed by 43 URL-safe characters")
    with platform.db.session() as session:
        created = tenancy.ensure_operator_key(session, platform.hasher, configured, platform.clock.now())
    if created is not None:
        _write_private(platform.settings.admin_key_path, created + "\n")
    platform.new_admin_key = created
    return created


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
