"""Files and fine-tuning in chromium: a refused fine-tune file shows each problem with its line, a
good one is listed; a job is created from the form (a bad hyperparameter refused in the API's
words), its loss curve grows by step as events come, its checkpoints are listed, it pauses,
resumes and cancels, and its `fine_tuned_model` can be copied. Without JavaScript, the file and
dataset uploads still post as plain forms and redirect. The package's server and browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from openmaas.jobs import events
from tests.e2e.console.conftest import Console
from tests.e2e.console.test_console import review, sign_in

GOOD = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
    {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]},
]


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_files_upload_with_located_errors_and_a_fine_tuning_jobs_curve_grows(
    page: Page, console: Console, chat_model: str, tmp_path: Path
) -> None:
    good = _jsonl(tmp_path / "train.jsonl", [json.dumps(line) for line in GOOD * 5])  # 10: the least
    bad = _jsonl(tmp_path / "bad.jsonl", [json.dumps(GOOD[0]), '{"messages": "not a list"}', "{oops"])
    sign_in(page, console, console.acme.key)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Files").click()
    expect(page.get_by_role("heading", name="Files", level=1)).to_be_visible()
    page.get_by_label("Purpose", exact=True).select_option("fine-tune")
    page.get_by_label("File", exact=True).set_input_files(bad)
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("alert")).to_contain_text("The fine-tune file has 2 problem(s)")
    issues = page.locator("[data-issues] tbody tr")
    expect(issues).to_have_count(2)
    expect(issues.first.locator("td").first).to_have_text("2")  # each problem with its line
    expect(issues.last.locator("td").first).to_have_text("3")
    review(page, "33-files-refused")
    page.get_by_label("File", exact=True).set_input_files(good)
    page.get_by_role("button", name="Upload").click()
    expect(page).to_have_url(re.compile(r"/console/files\?uploaded=file-"))
    file_id = page.url.rsplit("=", 1)[1]
    expect(page.get_by_role("row").filter(has_text="train.jsonl")).to_contain_text("fine-tune")
    review(page, "34-files")

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Fine-tuning").click()
    page.get_by_label("Base model").fill(chat_model)
    page.get_by_label("Training file").select_option(file_id)
    page.get_by_label("Suffix").fill("greeter")
    page.get_by_label("Epochs").fill("0")
    page.get_by_role("button", name="Start fine-tuning").click()
    assert "n_epochs" in page.get_by_role("alert").inner_text()  # the API's words, the field named
    expect(page.get_by_label("Suffix")).to_have_value("greeter")  # the form keeps what was typed
    review(page, "35-fine-tuning-refused")
    page.get_by_label("Epochs").fill("2")
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page.get_by_role("heading", name=re.compile("Fine-tuning job ftjob-"), level=1)).to_be_visible()
    job_id = page.url.rsplit("/", 1)[1]
    name = page.get_by_role("textbox", name=re.compile("Fine-tuned model")).input_value()
    assert name.startswith(f"ft:{chat_model}:acme:greeter:") and name.endswith(job_id)

    platform = console.platform

    def report(data: dict[str, float], kind: str = "metrics") -> None:
        with platform.db.session() as session:
            events.append(session, job_id, kind, kind, platform.clock.now(), data)

    curve = page.locator("[data-live-chart]")
    expect(curve).to_have_attribute("data-points", "0")
    report({"epoch": 1, "step": 1, "total_steps": 4, "train_loss": 2.5})
    expect(curve).to_have_attribute("data-points", "1")  # drawn without reloading the page
    report({"epoch": 1, "step": 2, "total_steps": 4, "train_loss": 2.1})
    report({"epoch": 1, "step": 2, "seconds": 1.0, "full_valid_loss": 2.3})  # merged into step 2
    report({"epoch": 1, "step": 2, "metrics": {"full_valid_loss": 2.3}}, "checkpoint")
    expect(curve).to_have_attribute("data-points", "2")
    expect(curve.locator("canvas")).to_have_count(1)
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("[data-job-status]")).to_have_text("paused")
    expect(page.get_by_role("row").filter(has_text=":ckpt-step-2")).to_contain_text("full_valid_loss 2.3")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_text("Copied.")).to_be_visible()
    review(page, "36-fine-tuning-job")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("[data-job-status]")).to_have_text("queued")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("[data-job-status]")).to_have_text("cancelled")
    page.get_by_role("link", name="Fine-tuning", exact=True).first.click()
    expect(page.get_by_role("row").filter(has_text=job_id)).to_contain_text("cancelled")
    review(page, "37-fine-tuning")

    page.context.clear_cookies()
    sign_in(page, console, console.globex.key, f"/console/fine-tuning/{job_id}")
    expect(page.get_by_role("alert")).to_contain_text(f"No job '{job_id}'.")  # another org: 404


def test_without_javascript_uploads_post_as_plain_forms(
    browser: Browser, console: Console, tmp_path: Path
) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        sign_in(page, console, console.acme.key, "/console/files")
        page.get_by_label("Purpose", exact=True).select_option("batch")
        page.get_by_label("File", exact=True).set_input_files(_jsonl(tmp_path / "batch.jsonl", ["{}"]))
        page.get_by_role("button", name="Upload").click()
        expect(page).to_have_url(re.compile(r"/console/files\?uploaded=file-"))
        expect(page.get_by_role("row").filter(has_text="batch.jsonl")).to_contain_text("batch")
        page.get_by_label("Purpose", exact=True).select_option("fine-tune")
        page.get_by_label("File", exact=True).set_input_files(_jsonl(tmp_path / "no.jsonl", ["{oops"]))
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("[data-issues] tbody tr")).to_have_count(1)  # the page, with the problem

        page.goto(console.url + "/console/datasets")
        csv = tmp_path / "plain.csv"
        csv.write_text("x,label\n1,a\n2,b\n3,a\n")
        page.get_by_label("File", exact=True).set_input_files(csv)
        page.get_by_label("Name", exact=True).fill("plain-form")
        page.get_by_role("button", name="Upload").click()
        expect(page).to_have_url(re.compile(r"/console/datasets/ds_"))
        expect(page.get_by_role("heading", level=1)).to_contain_text("plain-form")
    finally:
        context.close()
