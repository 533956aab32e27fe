"""The web console in chromium: the golden flows a tenant and an operator follow, and what it must
refuse (forged forms, lapsed sessions, other organisations' ids, keys without the scope). Each
page visited is screenshotted and checked with axe-core (no serious or critical violation)."""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import timedelta

from playwright.sync_api import Page, expect
from pydantic import BaseModel
from sqlalchemy import select, update

from openmaas.jobs import events, queue
from openmaas.jobs.tables import Job, JobStatus
from openmaas.tenancy.tables import ApiKey, ConsoleSession
from tests.e2e.console.conftest import AXE, SCREENSHOTS, Console

_AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                      nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
}"""


def review(page: Page, name: str) -> None:
    """The page's screenshot for the human review, and its accessibility check."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
    page.add_script_tag(path=AXE)
    violations = page.evaluate(_AXE_RUN)
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not serious, f"{name}: {serious}"


def sign_in(page: Page, console: Console, key: str, path: str = "/console/") -> None:
    page.goto(console.url + path)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def alert(page: Page) -> str:
    return page.get_by_role("alert").inner_text()


def test_tenant_signs_in_manages_keys_reads_usage_and_signs_out(page: Page, console: Console) -> None:
    page.goto(console.url + "/")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    review(page, "01-sign-in")
    page.get_by_label("API key").fill("om-" + "A" * 43)
    page.get_by_role("button", name="Sign in").click()
    assert "Invalid API key" in alert(page)

    page.get_by_label("API key").fill(console.acme.key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    # 4 days of seeded usage: 10 requests at 0.01 and 10 × 50..200 output tokens at 2.00 per 1K.
    expect(page.get_by_text("Requests this month")).to_be_visible()
    expect(page.get_by_role("cell", name="chat-small:1")).to_be_visible()
    assert page.context.cookies()[0]["httpOnly"] and page.context.cookies()[0]["sameSite"] == "Strict"
    assert all(console.acme.key not in c["value"] for c in page.context.cookies())
    review(page, "02-overview")

    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("ci-reader")
    page.get_by_label("usage:read").check()
    page.get_by_label("Expires").select_option("30d")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Your new key").input_value()
    assert secret.startswith("om-")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_text("Copied.")).to_be_visible()
    review(page, "03-keys-created")
    page.goto(console.url + "/console/keys")
    assert secret not in page.content()  # shown once
    row = page.get_by_role("row").filter(has_text="ci-reader")
    expect(row).to_contain_text("usage:read")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke ci-reader").click()
    expect(page.get_by_role("status")).to_contain_text("was revoked")
    expect(page.get_by_role("row").filter(has_text="ci-reader")).to_contain_text("revoked")
    review(page, "04-keys")

    page.get_by_role("link", name="Usage").click()
    expect(page.locator(".uplot canvas")).to_have_count(3)  # requests, tokens, cost: drawn by uPlot
    by_model = page.get_by_role("row").filter(has_text="chat-small:1")
    expect(by_model.first).to_contain_text("10")  # requests
    expect(page.get_by_role("row").filter(has_text=console.acme.key_id)).to_contain_text("test")  # its name
    review(page, "05-usage")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    seeded = [r for r in rows if r["model"] == "chat-small:1"]
    assert sum(int(r["quantity"]) for r in seeded if r["unit"] == "requests") == 10
    assert {r["api_key_id"] for r in seeded} == {console.acme.key_id}
    page.get_by_label("Model").fill("nothing-here")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("heading", name="No usage in this range")).to_be_visible()
    review(page, "06-usage-empty")

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto(console.url + "/console/usage")
    review(page, "07-usage-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("signed out")
    page.goto(console.url + "/console/keys")
    expect(page).to_have_url(re.compile(r"/console/sign-in\?next=/console/keys"))


def test_operator_creates_an_organisation(page: Page, console: Console) -> None:
    sign_in(page, console, console.admin_key)
    expect(page.get_by_role("heading", name="Organisations", level=1)).to_be_visible()
    nav = page.get_by_role("navigation", name="Console").get_by_role("link")
    expect(nav).to_have_text(["Organisations", "Pricebooks", "Platform usage", "Audit log"])
    page.get_by_label("Name").first.fill("initech")
    page.get_by_role("button", name="Create organisation").click()
    expect(page.get_by_role("status")).to_contain_text("initech")
    expect(page.get_by_role("cell", name="initech", exact=True)).to_be_visible()
    initech = page.get_by_role("row").filter(has_text="initech").locator("code").inner_text()
    review(page, "08-organisations")
    page.get_by_label("Name").first.fill("initech")
    page.get_by_role("button", name="Create organisation").click()
    assert "An organization named 'initech' already exists." in alert(page)
    assert "name" in alert(page)  # the field, named as the API names it
    review(page, "09-organisations-error")
    page.get_by_role("link", name="Audit log").click()  # the console's changes are audited as the API's
    page.get_by_label("Action").fill("console.organizations.create")
    page.get_by_role("button", name="Apply").click()
    created = page.get_by_role("row").filter(has_text="success 303")  # other tests create others
    expect(created.filter(has_text=initech)).to_have_count(1)
    expect(page.get_by_role("row").filter(has_text="failure 409")).to_have_count(1)
    review(page, "19-audit-log")


def test_forged_forms_are_refused(page: Page, console: Console) -> None:
    sign_in(page, console, console.acme.key, "/console/keys")
    forged = page.request.post(
        console.url + "/console/keys", form={"csrf_token": "forged", "name": "evil"}, max_redirects=0
    )
    assert forged.status == 403 and "security token" in forged.text()
    missing = page.request.post(console.url + "/console/keys", form={"name": "evil"}, max_redirects=0)
    assert missing.status == 403
    with console.platform.db.read_session() as session:
        assert session.scalar(select(ApiKey).where(ApiKey.name == "evil")) is None
    # The sign-in form too: without the token its cookie holds, no session is made.
    page.context.clear_cookies()
    signin = page.request.post(console.url + "/console/sign-in", form={"api_key": console.acme.key})
    assert signin.status == 400 and "om_console" not in {c["name"] for c in page.context.cookies()}


def test_a_lapsed_session_is_refused(page: Page, console: Console) -> None:
    sign_in(page, console, console.acme.key, "/console/keys")
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    past = console.platform.clock.now() - timedelta(seconds=1)
    with console.platform.db.session() as session:  # as if the idle time had passed
        session.execute(
            update(ConsoleSession)
            .where(ConsoleSession.key_id == console.acme.key_id)
            .values(idle_expires_at=past)
        )
    posted = page.request.post(
        console.url + "/console/keys", form={"csrf_token": csrf, "name": "late"}, max_redirects=0
    )
    assert posted.status == 303 and posted.headers["location"].startswith("/console/sign-in")
    page.goto(console.url + posted.headers["location"])
    expect(page.get_by_role("status")).to_contain_text("Your session has expired")
    with console.platform.db.read_session() as session:
        assert session.scalar(select(ApiKey).where(ApiKey.name == "late")) is None


def test_another_organisations_ids_are_not_found(page: Page, console: Console) -> None:
    sign_in(page, console, console.acme.key, "/console/keys")
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    page.request.post(
        console.url + f"/console/keys/{console.globex.key_id}/revoke", form={"csrf_token": csrf}
    )
    page.goto(console.url + f"/console/usage?api_key_id={console.globex.key_id}")
    expect(page.get_by_role("heading", name="No usage in this range")).to_be_visible()
    response = page.request.post(
        console.url + f"/console/keys/{console.globex.key_id}/revoke", form={"csrf_token": csrf}
    )
    assert response.status == 404
    page.set_content(response.text())  # the page as the browser would show it
    assert f"No API key '{console.globex.key_id}'." in alert(page)
    with console.platform.db.read_session() as session:
        assert session.get(ApiKey, console.globex.key_id).revoked_at is None


def test_an_inference_only_key_reaches_no_write_page(page: Page, console: Console) -> None:
    sign_in(page, console, console.inference.key)
    expect(page.get_by_role("heading", name="Nothing to show for this key")).to_be_visible()
    expect(page.get_by_role("navigation", name="Console").get_by_role("link")).to_have_count(0)
    review(page, "10-overview-inference-only")
    page.goto(console.url + "/console/keys")
    assert "This key lacks the 'api_keys:read' scope." in alert(page)
    review(page, "11-not-allowed")
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    created = page.request.post(console.url + "/console/keys", form={"csrf_token": csrf, "name": "escalate"})
    assert created.status == 403
    usage = page.request.get(console.url + "/console/usage.csv")
    assert usage.status == 403 and "usage:read" in usage.text()
    page.goto(console.url + "/console/no-such-page")
    assert "No console page /console/no-such-page." in alert(page)
    review(page, "17-not-found")


def test_the_playground_predicts_with_a_form_from_the_signature_and_is_metered(
    page: Page, console: Console
) -> None:
    sign_in(page, console, console.acme.key)
    page.get_by_role("link", name="Deployments").click()
    expect(page.get_by_role("cell", name="churn:1")).to_be_visible()
    review(page, "12-deployments")
    page.get_by_role("link", name="churn", exact=True).click()
    expect(page.get_by_role("heading", name="churn", level=1)).to_be_visible()
    expect(page.get_by_text("serving churn:1")).to_be_visible()  # the version answering now
    page.get_by_label("age").fill("not a number")
    page.get_by_role("button", name="Predict", exact=True).click()
    assert "age: expected a number." in alert(page)
    page.get_by_label("age").fill("75")
    page.get_by_label("plan").select_option("basic")
    page.get_by_role("button", name="Predict", exact=True).click()
    prediction = page.get_by_role("status").filter(has_text="Prediction")
    expect(prediction).to_contain_text("yes")  # old and on the basic plan: churns
    expect(prediction.get_by_role("meter")).to_have_count(2)  # a bar per class
    review(page, "13-playground")
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("row").filter(has_text="churn:1").first).to_contain_text("1")


class _Params(BaseModel):
    epochs: int = 3


def test_a_running_jobs_curve_grows_as_its_events_come(page: Page, console: Console) -> None:
    platform = console.platform

    def metrics(epoch: int) -> None:
        data = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch, "total_epochs": 3}
        with platform.db.session() as session:
            events.append(session, job_id, "metrics", f"epoch {epoch}/3", platform.clock.now(), data)

    with platform.db.session() as session:
        job_id = queue.enqueue(
            session, org_id=console.acme.org_id, kind="training", params=_Params(), now=platform.clock.now(),
            max_attempts=1, status=JobStatus.RUNNING,
        ).id  # fmt: skip
    metrics(1)
    sign_in(page, console, console.acme.key)
    page.get_by_role("link", name="Jobs").click()
    review(page, "14-jobs")
    page.get_by_role("link", name=job_id).click()
    curve = page.locator("[data-live-chart]")
    expect(curve).to_have_attribute("data-points", "1")
    metrics(2)
    expect(curve).to_have_attribute("data-points", "2")  # drawn without reloading the page
    expect(curve.locator("canvas")).to_have_count(1)
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("cell", name="Pause requested.")).to_be_visible()  # the job's own event
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("cell", name="Cancellation requested.")).to_be_visible()
    review(page, "15-job-running")

    metrics(3)
    result = {"metrics": {"accuracy": 0.875, "f1": 0.86, "confusion_matrix": [[3, 1], [0, 4]]}}
    with platform.db.session() as session:  # as its worker ends it
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.result, job.finished_at = "succeeded", result, platform.clock.now()
        events.append(
            session, job_id, "status", "Job succeeded.", platform.clock.now(), {"status": "succeeded"}
        )
    expect(page.get_by_role("heading", name="Final metrics")).to_be_visible()  # the page reloads itself
    expect(page.get_by_role("row", name="accuracy 0.875")).to_be_visible()
    expect(curve).to_have_attribute("data-points", "3")
    review(page, "16-job-finished")
    with platform.db.session() as session:  # another organisation's job is not found, as in the API
        now = platform.clock.now()
        theirs = queue.enqueue(
            session, org_id=console.globex.org_id, kind="training", params=_Params(), now=now, max_attempts=1
        ).id
    for path in (f"/console/jobs/{theirs}", f"/console/jobs/{theirs}/events.json"):
        gone = page.request.get(console.url + path)
        assert gone.status == 404 and f"No job '{theirs}'." in html.unescape(gone.text())


def test_the_chat_playground_streams_an_llms_answer(page: Page, console: Console, chat_model: str) -> None:
    sign_in(page, console, console.acme.key, f"/console/deployments/{chat_model}")
    page.get_by_label("Message").fill("Tell me about foxes")
    page.get_by_label("Longest answer (tokens)").fill("12")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("ol.chat li.assistant")
    expect(answer).to_have_attribute("data-done", "true")
    chunks = int(answer.get_attribute("data-chunks") or 0)
    assert chunks > 1, "the answer came in one piece: not streamed"  # a chunk per token
    assert answer.inner_text().removeprefix("Model").strip()
    review(page, "18-chat")
    page.get_by_label("Longest answer (tokens)").fill("4000")  # past the model's 2048 positions
    page.get_by_label("Message").fill("And wolves?")
    page.get_by_role("button", name="Send").click()  # refused, in the API's words
    expect(page.get_by_role("alert")).to_contain_text("maximum context length is 2048 tokens")
    expect(page.locator("ol.chat li")).to_have_count(2)  # the refused turn is not kept...
    expect(page.get_by_label("Message")).to_have_value("And wolves?")  # ...but its text, to retry
