"""The console's datasets and registry pages in chromium: an upload with its progress, a bad
file's problems located by line and column, a valid file's preview rows, delete; the registry's
models, versions side by side, aliases set and moved, and lineage from dataset to optimised
version with the optimisation's measured figures. Each page is screenshotted and axe-checked."""

from __future__ import annotations

import html
import re
from typing import Any

from playwright.sync_api import Locator, Page, expect
from pydantic import BaseModel
from sqlalchemy import update

from openmaas.bootstrap import Platform, job_handlers
from openmaas.datasets.tables import Dataset
from openmaas.ids import new_id
from openmaas.jobs import queue
from openmaas.jobs.runner import execute
from openmaas.jobs.tables import Job, JobStatus
from openmaas.registry import service as registry
from tests.e2e.console.conftest import Console
from tests.e2e.console.test_console import review, sign_in

BAD_CSV = b"age,plan,label\n30,basic,yes\n41,pro,no\n52,basic,yes,extra\n33,pro,no\n"
# Over the gateway's 64 KiB body limit, which the upload (streamed to its own limit) is exempt from.
GOOD_CSV = b"age,plan,label\n30,basic,yes\n41,pro,no\n52,basic,yes\n33,pro,no\n" + b"28,pro,no\n" * 8000
# Each progress event's percentage, kept across the page's navigation to the new version.
_WATCH_PROGRESS = """() => {
  const bar = document.querySelector("progress");
  new MutationObserver(() => {
    const seen = JSON.parse(sessionStorage.getItem("percents") || "[]");
    seen.push(Number(bar.getAttribute("data-percent")));
    sessionStorage.setItem("percents", JSON.stringify(seen));
  }).observe(bar, {attributes: true, attributeFilter: ["data-percent"]});
}"""


def nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Console").get_by_role("link", name=name)


def validate(platform: Platform, job_id: str) -> None:
    """Run a queued validation job here, as a worker's job process would run it."""
    with platform.db.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", attempts=1, lease_owner="e2e", lease_expires_at=platform.clock.now())
        )
        job = session.get(Job, job_id)
        assert job is not None
        claim = queue.Claim(job_id=job_id, org_id=job.org_id, kind=job.kind, attempt=1, owner="e2e")
    execute(
        job_handlers(),
        db=platform.db,
        store=platform.store,
        clock=platform.clock,
        claim=claim,
        stop_requested=lambda: False,
    )


def upload(page: Page, console: Console, content: bytes, filename: str, name: str) -> Dataset:
    page.get_by_label("File").set_input_files({"name": filename, "mimeType": "text/csv", "buffer": content})
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Label column").fill("label")
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"/console/datasets/ds_"))
    dataset_id = page.url.rsplit("/", 1)[1]
    with console.platform.db.read_session() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        session.expunge(dataset)
    return dataset


def test_a_bad_upload_shows_located_problems_a_good_one_previews_and_delete_removes_it(
    page: Page, console: Console
) -> None:
    platform = console.platform
    sign_in(page, console, console.acme.key)
    nav(page, "Datasets").click()
    expect(page.get_by_text("No datasets yet.")).to_be_visible()
    review(page, "40-datasets-empty")

    page.evaluate(_WATCH_PROGRESS)
    bad = upload(page, console, BAD_CSV, "customers.csv", "customers")
    assert page.evaluate("JSON.parse(sessionStorage.getItem('percents') || '[]')")[-1] == 100
    expect(page.get_by_text("validating", exact=True)).to_be_visible()
    assert bad.validation_job_id is not None
    validate(platform, bad.validation_job_id)  # the page reloads itself when validation ends
    expect(page.get_by_role("heading", name="1 problem to fix")).to_be_visible()
    problem = page.get_by_role("row").filter(has_text="expected 3 fields, found 4")
    expect(problem).to_contain_text("line 4")  # the extra field is on the file's 4th line
    expect(problem).to_contain_text("wrong_field_count")
    review(page, "41-dataset-invalid")
    page.get_by_role("link", name=bad.validation_job_id).click()  # its job links back to it
    page.get_by_role("link", name=bad.id).click()
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.reload()  # wide tables are made keyboard-scrollable as the page loads
    review(page, "48-dataset-invalid-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    nav(page, "Datasets").click()
    misnamed = {"name": "x.parquet", "mimeType": "text/csv", "buffer": GOOD_CSV}
    page.get_by_label("File").set_input_files(misnamed)
    page.get_by_label("Name", exact=True).fill("customers")
    page.get_by_role("button", name="Upload").click()  # refused before it is stored, in the API's words
    expect(page.get_by_role("alert")).to_contain_text("named as parquet but its content is csv")
    expect(page.get_by_role("alert")).to_contain_text("field: file")
    good = upload(page, console, GOOD_CSV, "customers.csv", "customers")
    assert good.version == 2 and good.validation_job_id is not None
    validate(platform, good.validation_job_id)
    expect(page.get_by_text("Valid: ready to train on as customers:2.")).to_be_visible()
    expect(page.get_by_role("heading", name="First 20 rows")).to_be_visible()
    expect(page.get_by_role("row", name="52 basic yes")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="age").filter(has_text="integer")).to_be_visible()
    review(page, "42-dataset-preview")

    page.goto(console.url + f"/console/datasets/{bad.id}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete this version").click()
    expect(page.get_by_role("status")).to_contain_text("customers:1 was deleted")
    expect(page.get_by_role("link", name="customers:2")).to_be_visible()
    expect(page.get_by_role("link", name="customers:1")).to_have_count(0)
    assert not platform.store.path(platform.store.dataset_dir(bad.org_id, bad.id)).exists()
    review(page, "43-datasets")

    with platform.db.session() as session:  # another organisation's dataset is not found
        theirs = Dataset(**{**_columns(good), "id": new_id("ds_"), "org_id": console.globex.org_id})
        session.add(theirs)
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    for response in (
        page.request.get(console.url + f"/console/datasets/{theirs.id}"),
        page.request.post(console.url + f"/console/datasets/{theirs.id}/delete", form={"csrf_token": csrf}),
    ):
        assert response.status == 404 and f"No dataset '{theirs.id}'." in html.unescape(response.text())


class _Params(BaseModel):
    dataset: str = "customers"


def test_the_registry_shows_versions_side_by_side_moves_aliases_and_draws_lineage(
    page: Page, console: Console
) -> None:
    trained, optimised = _seed_lineage(console)
    sign_in(page, console, console.acme.key)
    nav(page, "Registry").click()
    expect(page.get_by_role("link", name="fraud", exact=True)).to_be_visible()
    review(page, "44-registry")

    page.get_by_role("link", name="fraud", exact=True).click()
    expect(page.get_by_role("row", name=re.compile(r"fraud:1 .*0\.91 .*0\.88"))).to_be_visible()
    expect(page.get_by_role("row", name=re.compile(r"fraud:2 .*0\.9 .*0\.87"))).to_be_visible()
    page.get_by_label("Alias", exact=True).fill("production")
    page.get_by_label("Version", exact=True).fill("2")
    page.get_by_role("button", name="Set alias").click()
    expect(page.get_by_role("status")).to_contain_text("production now points to version 2")
    page.get_by_label("Alias", exact=True).fill("production")  # moved back
    page.get_by_label("Version", exact=True).fill("1")
    page.get_by_role("button", name="Set alias").click()
    expect(page.get_by_role("row", name=re.compile(r"fraud:1 production"))).to_be_visible()
    page.get_by_label("Alias", exact=True).fill("9-bad")
    page.get_by_role("button", name="Set alias").click()
    expect(page.get_by_role("alert")).to_contain_text("alias must start with a letter")
    # In the model's page, by the aliases' form, which keeps what was typed (not an error page).
    expect(page.get_by_role("heading", name="Aliases")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Field: alias")
    expect(page.get_by_label("Alias", exact=True)).to_have_value("9-bad")
    review(page, "45-model-versions")

    page.get_by_role("link", name="fraud:1").first.click()
    lineage = page.get_by_role("list").filter(has_text="Dataset")
    expect(lineage.get_by_role("link", name="customers-lineage:1")).to_be_visible()
    expect(lineage.get_by_role("link", name=trained.job_id or "")).to_be_visible()
    expect(lineage.get_by_role("link", name="fraud:2")).to_be_visible()
    figures = page.get_by_role("table", name=re.compile("Optimised as fraud:2"))
    expect(figures.get_by_role("row", name="latency p50 batch 1 (ms) 2 0.5")).to_be_visible()
    review(page, "46-version-lineage")

    lineage.get_by_role("link", name="fraud:2").click()
    expect(page.get_by_role("heading", name="Optimisation result: dynamic-int8")).to_be_visible()
    expect(page.get_by_text("accuracy changed by -0.01")).to_be_visible()
    review(page, "47-version-optimised")

    page.goto(console.url + f"/console/jobs/{trained.job_id}")  # a training job links its version
    page.get_by_role("link", name="fraud:1").click()
    expect(page.get_by_role("heading", name="Version fraud:1")).to_be_visible()
    page.goto(console.url + "/console/deployments/churn")  # so does a deployment
    page.get_by_role("link", name="churn:1").first.click()
    expect(page.get_by_role("heading", name="Version churn:1")).to_be_visible()

    gone = page.request.get(console.url + "/console/registry/models/secret-model")
    assert gone.status == 404 and "No model 'secret-model'." in html.unescape(gone.text())
    assert optimised.ref == "fraud:2"


def _seed_lineage(console: Console) -> tuple[Any, Any]:
    """fraud:1 trained by a job on customers-lineage:1, and fraud:2 optimised from it — as the
    training and optimize jobs leave them (their artifacts are not needed by these pages)."""
    platform, org_id, now = console.platform, console.acme.org_id, console.platform.clock.now()
    figures = {
        "method": "dynamic-int8",
        "max_metric_drop": 0.02,
        "parent": {
            "ref": "fraud:1",
            "metrics": {"accuracy": 0.91},
            "latency_ms": {"p50_batch_1": 2.0, "p50_batch_32": 9.0},
            "size": {"bytes": 40_000, "compressed_bytes": 36_000},
        },
        "result": {
            "metrics": {"accuracy": 0.90},
            "latency_ms": {"p50_batch_1": 0.5, "p50_batch_32": 3.0},
            "size": {"bytes": 12_000, "compressed_bytes": 10_000},
        },
        "metric_change": {"metric": "accuracy", "parent": 0.91, "result": 0.90, "change": -0.01,
                          "drop": 0.01, "accepted": True, "forced": False},
        "notes": [],
    }  # fmt: skip
    with platform.db.session() as session:
        dataset = Dataset(
            id=new_id("ds_"), org_id=org_id, name="customers-lineage", version=1, filename="c.csv",
            format="csv", sha256="0" * 64, size_bytes=10, path="nowhere", status="ready", created_at=now,
        )  # fmt: skip
        session.add(dataset)
        jobs = [
            queue.enqueue(session, org_id=org_id, kind=kind, params=_Params(), now=now, max_attempts=1,
                          status=JobStatus.SUCCEEDED)
            for kind in ("training", "optimize")
        ]  # fmt: skip
        manifest = {"task": "tabular-classification", "metrics": {"accuracy": 0.91, "f1": 0.88}}
        versions = []
        for number, (job, extra) in enumerate(
            [(jobs[0], {}), (jobs[1], {"metrics": {"accuracy": 0.90, "f1": 0.87}, "optimization": figures})]
        ):
            vid = new_id("mv_")
            model, version = registry.register_version(
                session, version_id=vid, org_id=org_id, model_name="fraud", artifact_path=f"models/{vid}",
                manifest={**manifest, **extra}, now=now,
                lineage={"dataset_id": dataset.id, "job_id": job.id,
                         "parent_version_id": versions[0].id if number else None},
            )  # fmt: skip
            job.result = {"ref": f"fraud:{version.version}"}
            versions.append(registry.version_public(session, model, version))
    return versions[0].lineage, versions[1]


def _columns(row: Dataset) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in Dataset.__mapper__.column_attrs}
