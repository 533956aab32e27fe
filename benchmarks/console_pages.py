"""Server time of the console's pages with a large organisation: a million usage events (as the
ledger's hourly and daily sums: 30 days × 24 hours × 10 models × 10 keys, three units each) and many keys;
for the datasets and registry pages 5,000 dataset versions (a fifth failed with 200 located
problems each) and 2,000 models, one of them with 2,000 versions, 20 aliases and 50 optimised
children of its first version; for the files and fine-tuning pages 5,000 files and 1,000 of the
jobs fine-tuning ones, the last with 2,000 step events and 10 checkpoints; a deployment with an
hour of load samples for its page and its metrics.json.

Pages are fetched in-process (FastAPI's TestClient: the whole ASGI stack, no network), signed in
as the organisation's admin key, and timed over repeats; p50 and p95 per page are printed.

    .venv/bin/python -m benchmarks.console_pages [--repeats 40] [--database-url URL] [--only /console/usage]
"""

from __future__ import annotations

import argparse
import functools
import re
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

from fastapi.testclient import TestClient
from sqlalchemy import insert

from openmaas.api.app import create_app
from openmaas.billing import usage_report
from openmaas.bootstrap import build_platform, ensure_admin_key
from openmaas.config import Settings
from openmaas.db import migrate
from openmaas.jobs.tables import Job, JobEvent
from openmaas.metering import usage_totals
from openmaas.metering.tables import UsageDay, UsageHour
from openmaas.schemas.tenancy import ApiKeyCreate, OrganizationCreate
from openmaas.tenancy import service as tenancy

PAGES = (
    "/console/",
    "/console/usage",
    "/console/usage.csv",
    "/console/keys",
    "/console/jobs",
    "/console/deployments",
    "/console/invoices",
    "/console/invoices/{period}",
    "/console/marketplace",
)
# The operator's pages, signed in with the operator's key.
OPERATOR_PAGES = ("/console/organizations/{org_id}", "/console/pricebooks", "/console/platform")
JOBS = 10_000
DATASETS, MODELS, VERSIONS = 5_000, 2_000, 2_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--hourly-too",
        action="store_true",
        help="time the pages again with day reports summed from the hourly sums only (as before usage_days)",
    )
    parser.add_argument("--only", action="append", default=None, help="time only these pages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        url = args.database_url or f"sqlite:///{Path(home) / 'openmaas.db'}"
        settings = Settings(home=Path(home), database_url=url, secret_key=secrets.token_hex(32))
        platform = build_platform(settings)
        migrate.upgrade(platform.db)
        ensure_admin_key(platform)
        key, events, job_id, org_id = _seed(platform)
        data_pages = _seed_data(platform, key) + _seed_fine_tuning(platform, key)
        assert platform.new_admin_key is not None
        period = datetime.now(UTC).strftime("%Y-%m")
        print(f"seeded: {events:,} usage events as hourly sums, {JOBS:,} jobs; {url.split(':')[0]}")
        app = create_app(platform)
        _time_pages(app, args, key, platform.new_admin_key, period, org_id, job_id, data_pages)
        if args.hourly_too:
            print("-- day reports from the hourly sums only (daily=False):")
            hourly = functools.partial(usage_totals.usage_totals, daily=False)
            with mock.patch.object(usage_report, "usage_totals", hourly):
                _time_pages(app, args, key, platform.new_admin_key, period, org_id, job_id, data_pages)
        platform.close()


def _time_pages(
    app: object,
    args: argparse.Namespace,
    key: str,
    admin_key: str,
    period: str,
    org_id: str,
    job_id: str,
    data_pages: list[str],
) -> None:
    for signed_in_as, pages in ((key, PAGES), (admin_key, OPERATOR_PAGES)):
        with TestClient(app) as client:  # type: ignore[arg-type]
            form = client.get("/console/sign-in").text
            token = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert token is not None
            client.post("/console/sign-in", data={"csrf_token": token.group(1), "api_key": signed_in_as})
            extra = (f"/console/jobs/{job_id}", *data_pages) if pages is PAGES else ()
            for template in (*pages, *extra):
                if args.only and template not in args.only:
                    continue
                page = template.format(period=period, org_id=org_id)
                timings = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    response = client.get(page)
                    timings.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, (page, response.status_code)
                timings.sort()
                p95 = timings[int(len(timings) * 0.95) - 1]
                print(f"{template[:40]:40s} p50 {statistics.median(timings):7.1f} ms   p95 {p95:7.1f} ms")


def _seed(platform: object) -> tuple[str, int, str, str]:
    """The organisation, 200 keys, 10,000 jobs (the last with 200 metrics events) and its usage as
    hourly sums; returns a key, the event count, the job with events and the organisation."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with platform.db.session() as session:  # type: ignore[attr-defined]
        org = tenancy.create_organization(session, OrganizationCreate(name="big"), now)
        keys = [
            tenancy.create_api_key(
                session,
                platform.hasher,  # type: ignore[attr-defined]
                org_id=org.id,
                body=ApiKeyCreate(name=f"key-{i}", scopes=["admin"]),
                creator_key_id=None,
                creator_scopes=frozenset({"operator"}),
                now=now,
            )
            for i in range(200)
        ]
        org_id = org.id
    rows, events = [], 0
    for hour in range(30 * 24):
        start = now - timedelta(hours=hour)
        for model in range(10):
            for key in keys[:10]:
                n = 14  # events in this hour for this model and key: 7,200 × 10 × 10 × 14 ≈ 1M
                events += n
                for unit, quantity in (
                    ("requests", n),
                    ("input_tokens", 300 * n),
                    ("output_tokens", 120 * n),
                ):
                    rows.append(
                        {"org_id": org_id, "hour_start": start, "unit": unit,
                         "model": f"model-{model}:1", "api_key_id": key.id, "deployment": f"model-{model}",
                         "resource_class": "", "price_ref": "", "quantity": quantity,
                         "cost_micros": quantity * 10, "events": n}
                    )  # fmt: skip
    flags = {"attempts": 1, "max_attempts": 3, "cancel_requested": False, "pause_requested": False}
    jobs = [
        {"id": f"job_{i:026d}", "org_id": org_id, "kind": "training", "status": "succeeded", "params": {},
         "created_at": now, **flags}
        for i in range(JOBS)
    ]  # fmt: skip
    job_id = jobs[-1]["id"]
    metrics = [
        {"job_id": job_id, "created_at": now, "type": "metrics", "level": "info", "message": f"epoch {e}",
         "data": {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "total_epochs": 200}}
        for e in range(1, 201)
    ]  # fmt: skip
    days: dict[tuple[object, ...], dict[str, object]] = {}
    for row in rows:  # the org is in UTC: its days are UTC days
        day_start = row["hour_start"].replace(hour=0)  # type: ignore[union-attr]
        key = (day_start, row["unit"], row["model"], row["api_key_id"])
        day = days.get(key)
        if day is None:
            days[key] = {**row, "day_start": day_start, "day_end": day_start + timedelta(days=1)}
            del days[key]["hour_start"]
        else:
            for total in ("quantity", "cost_micros", "events"):
                day[total] += row[total]  # type: ignore[operator]
    with platform.db.session() as session:  # type: ignore[attr-defined]
        session.execute(insert(UsageHour.__table__), rows)
        session.execute(insert(UsageDay.__table__), list(days.values()))
        session.execute(insert(Job.__table__), jobs)
        session.execute(insert(JobEvent.__table__), metrics)
    return keys[0].key, events, str(job_id), org_id


def _seed_data(platform: object, key: str) -> list[str]:
    """Datasets and registry rows of the key's organisation; returns the pages to time."""
    from openmaas.datasets.tables import Dataset
    from openmaas.registry.tables import ModelAlias, ModelVersion, RegisteredModel

    now = datetime.now(UTC)
    org_id = platform.authenticator.authenticate(f"Bearer {key}").org_id  # type: ignore[attr-defined]
    issues = [{"code": "wrong_field_count", "message": "expected 3 fields, found 4", "severity": "error",
               "file": "data.csv", "line": n, "column": None} for n in range(200)]  # fmt: skip
    datasets = [
        {"id": f"ds_{i:026d}", "org_id": org_id, "name": f"set-{i % 500}", "version": i // 500 + 1,
         "filename": "data.csv", "format": "csv", "sha256": f"{i:064d}", "size_bytes": 1000, "path": "x",
         "status": "failed" if i % 5 == 0 else "ready", "rows": 100, "issues": issues if i % 5 == 0 else [],
         "schema": {"columns": [], "classes": {}}, "created_at": now}
        for i in range(DATASETS)
    ]  # fmt: skip
    models = [
        {"id": f"mdl_{i:026d}", "org_id": org_id, "name": f"model-{i}", "task": "tabular-classification",
         "tags": {}, "created_at": now}
        for i in range(MODELS)
    ]  # fmt: skip
    first = f"mv_{0:026d}"
    optimised = {"method": "onnx-int8", "parent": {"ref": "model-0:1", "metrics": {"accuracy": 0.9}},
                 "result": {"metrics": {"accuracy": 0.89}}}  # fmt: skip
    versions = [
        {"id": f"mv_{v:026d}", "model_id": models[0]["id"], "org_id": org_id, "version": v + 1,
         "task": "tabular-classification", "artifact_path": "x", "tags": {},
         "manifest": {"optimization": optimised} if 0 < v <= 50 else {},
         "metrics": {"accuracy": 0.9, "f1": 0.8, "loss": 0.3}, "dataset_id": datasets[1]["id"],
         "job_id": None, "parent_version_id": first if 0 < v <= 50 else None, "created_at": now}
        for v in range(VERSIONS)
    ] + [
        {"id": f"mv_{VERSIONS + i:026d}", "model_id": m["id"], "org_id": org_id, "version": 1,
         "task": "tabular-classification", "artifact_path": "x", "tags": {}, "manifest": {},
         "metrics": {"accuracy": 0.9}, "dataset_id": None, "job_id": None, "parent_version_id": None,
         "created_at": now}
        for i, m in enumerate(models[1:])
    ]  # fmt: skip
    aliases = [
        {"model_id": models[0]["id"], "alias": f"a{i}", "version_id": versions[i]["id"], "updated_at": now}
        for i in range(20)
    ]
    with platform.db.session() as session:  # type: ignore[attr-defined]
        session.execute(insert(Dataset.__table__), datasets)
        session.execute(insert(RegisteredModel.__table__), models)
        session.execute(insert(ModelVersion.__table__), versions)
        session.execute(insert(ModelAlias.__table__), aliases)
    return [
        "/console/datasets",
        f"/console/datasets/{datasets[0]['id']}",
        f"/console/datasets/{datasets[-1]['id']}",
        "/console/registry",
        "/console/registry/models/model-0",
        "/console/registry/versions/model-0:1",
        "/console/registry/versions/model-0:2",
    ]


def _seed_fine_tuning(platform: object, key: str) -> list[str]:
    """Files, fine-tuning jobs and a deployment with an hour of load samples; returns the pages to
    time (the new pages of this stop)."""
    from types import SimpleNamespace

    from openmaas.datasets.file_tables import StoredFile
    from openmaas.serving.batcher import BatchStats
    from openmaas.serving.directory import ServedModel
    from openmaas.serving.tables import Deployment
    from openmaas.training.finetune_jobs import FINE_TUNE_KIND

    now = datetime.now(UTC)
    org_id = platform.authenticator.authenticate(f"Bearer {key}").org_id  # type: ignore[attr-defined]
    files = [
        {"id": f"file-{i:026d}", "org_id": org_id, "purpose": "fine-tune" if i % 2 else "batch",
         "filename": f"data-{i}.jsonl", "bytes": 10_000, "path": "x", "examples": 100 if i % 2 else None,
         "created_at": now}
        for i in range(5_000)
    ]  # fmt: skip
    flags = {"attempts": 1, "max_attempts": 3, "cancel_requested": False, "pause_requested": False}
    jobs = [
        {"id": f"ftjob-{i:026d}", "org_id": org_id, "kind": FINE_TUNE_KIND, "status": "running",
         "created_at": now, **flags,
         "params": {"base": "llama", "base_version_id": "mv_x", "base_ref": "llama:1",
                    "training_file": files[1]["id"], "validation_file": None, "suffix": "s", "seed": 1,
                    "hyperparameters": {"n_epochs": 10, "batch_size": 4, "learning_rate_multiplier": 1.0},
                    "estimated_tokens": 1000, "fine_tuned_model": f"ft:llama:big:s:ftjob-{i:026d}",
                    "model": "llama-s"}}
        for i in range(1_000)
    ]  # fmt: skip
    job_id = jobs[-1]["id"]
    steps = [
        {"job_id": job_id, "created_at": now, "type": "metrics", "level": "info", "message": f"step {s}",
         "data": {"epoch": s // 200 + 1, "step": s, "total_steps": 2000, "train_loss": 2 / s}}
        for s in range(1, 2001)
    ] + [
        {"job_id": job_id, "created_at": now, "type": "checkpoint", "level": "info", "message": f"epoch {e}",
         "data": {"epoch": e, "step": 200 * e, "metrics": {"full_valid_loss": 1 / e}}}
        for e in range(1, 11)
    ]  # fmt: skip
    deployment = {"id": "dep_bench", "org_id": org_id, "name": "bench", "model_ref": "model-0:1",
                  "version_id": f"mv_{0:026d}", "task": "tabular-classification", "state": "stopped",
                  "replicas": 1, "config": {}, "error": None, "created_at": now,
                  "updated_at": now}  # fmt: skip
    with platform.db.session() as session:  # type: ignore[attr-defined]
        session.execute(insert(StoredFile.__table__), files)
        session.execute(insert(Job.__table__), jobs)
        session.execute(insert(JobEvent.__table__), steps)
        session.execute(insert(Deployment.__table__), [deployment])
    # A loaded stand-in (its batcher's queue and histograms only) and a full hour of its samples.
    batcher = SimpleNamespace(queued=3, stats=BatchStats())
    runtime = SimpleNamespace(batcher=batcher, in_flight=4, close=lambda: None)
    served = ServedModel("bench", org_id, org_id, 0, deployment_id="dep_bench", version_id="mv_x",
                         runtime=runtime)  # fmt: skip
    platform.served_models.register(served)  # type: ignore[attr-defined]
    for _ in range(360):
        runtime.batcher.stats.batch_seconds.observe(0.004)
        platform.deployment_metrics.sample()  # type: ignore[attr-defined]
    return [
        "/console/files",
        "/console/fine-tuning",
        f"/console/fine-tuning/{job_id}",
        "/console/deployments/bench",
        "/console/deployments/bench/metrics.json",
    ]


if __name__ == "__main__":
    main()
