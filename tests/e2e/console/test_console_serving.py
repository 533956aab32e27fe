"""A deployment's page in chromium: its queue-depth and latency charts from the server's
in-memory series, an explanation drawn as attribution bars, and the LLM playground's structured
output and tool calls. The package's server and browser (conftest); each page screenshotted and
axe-checked as in test_console.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

from playwright.sync_api import Page, expect

from openmaas import Client
from tests.e2e.console.conftest import Console
from tests.e2e.console.test_console import review, sign_in
from tests.integration.serving.predict_support import artifact, digit_png, register
from tests.support.served import Served


def test_a_deployments_load_is_charted_and_a_prediction_explained_as_bars(
    page: Page, console: Console
) -> None:
    sign_in(page, console, console.acme.key, "/console/deployments/churn")
    page.get_by_label("age").fill("75")
    page.get_by_label("plan").select_option("basic")
    page.get_by_role("button", name="Predict and explain").click()
    expect(page.get_by_role("status").filter(has_text="Prediction")).to_contain_text("yes")
    bars = page.locator("ul.attributions li")
    expect(bars).to_have_count(page.locator("[id^=in_]").count())  # one bar per feature of the form
    expect(page.get_by_role("heading", name="Why: yes")).to_be_visible()
    scores = [float(s) for s in bars.locator("[data-score]").all_inner_texts()]
    assert abs(scores[0]) >= abs(scores[1])  # strongest first
    assert page.locator("pre").filter(has_text="attributions").count() == 0  # drawn, not raw JSON
    review(page, "30-playground-explanation")

    console.platform.deployment_metrics.sample()  # as its thread does every 10 s
    console.platform.deployment_metrics.sample()
    data = page.request.get(console.url + "/console/deployments/churn/metrics.json").json()
    assert len(data["x"]) >= 2 and data["latency"]["unit"] == "ms"
    assert data["depth"]["series"][0]["label"] == "queued"
    page.goto(console.url + "/console/deployments/churn")
    for chart in ("depth", "latency"):
        box = page.locator(f'[data-load-chart="{chart}"]')
        expect(box.locator("canvas")).to_have_count(1)
        assert int(box.get_attribute("data-points") or 0) >= 2
    expect(page.locator(".u-legend").first).to_contain_text("queued")
    review(page, "31-deployment-load")

    theirs = page.request.get(console.url + "/console/deployments/secret/metrics.json")
    assert theirs.status == 404  # nor another organisation's names


def test_the_chat_playground_sends_a_schema_and_a_tool_and_shows_the_tool_call(
    page: Page, console: Console, chat_model: str
) -> None:
    sign_in(page, console, console.acme.key, f"/console/deployments/{chat_model}")
    unit = {
        "type": "object",
        "properties": {"unit": {"enum": ["celsius", "kelvin"]}},
        "required": ["unit"],
        "additionalProperties": False,
    }
    page.get_by_text("Structured output and tools").click()
    page.get_by_label("Answer as JSON matching this schema").fill("{not json")
    page.get_by_label("Message").fill("Which unit?")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("response_format: not valid JSON")
    expect(page.locator("ol.chat li")).to_have_count(0)  # nothing was sent
    page.get_by_label("Answer as JSON matching this schema").fill(json.dumps(unit))
    page.get_by_label("Longest answer (tokens)").fill("64")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("ol.chat li.assistant").last
    expect(answer).to_have_attribute("data-done", "true")
    assert json.loads(answer.locator("[data-text]").inner_text())["unit"] in ("celsius", "kelvin")

    page.get_by_label("Answer as JSON matching this schema").fill("")
    city = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 8}},
        "required": ["city"],
        "additionalProperties": False,
    }
    tool = {"name": "get_weather", "parameters": city}  # a bare function: the page wraps it
    page.get_by_label("A tool the model may call").fill(json.dumps(tool))
    page.get_by_label("Tool choice").select_option("required")
    page.get_by_label("Message").fill("Weather in Paris?")
    page.get_by_label("Longest answer (tokens)").fill("120")
    page.get_by_role("button", name="Send").click()
    call = page.locator("ol.chat li.assistant").last
    expect(call).to_have_attribute("data-done", "true")
    first = call.locator("[data-tool-call]").first
    expect(first).to_contain_text("Calls get_weather with")
    assert list(json.loads(first.locator("code").inner_text())) == ["city"]
    review(page, "32-chat-structured-output-and-tools")


def test_an_image_models_explanation_is_its_saliency_map_over_the_image(
    page: Page, console: Console, tmp_path: Path
) -> None:
    served = Served(console.url, console.platform, console.admin_key)
    ref = register(served, console.acme, artifact("image-classification"), "digits")  # 8×8 grey digits
    with Client(console.url, console.acme.key) as client:
        client.deployments.create(ref, name="digits")
        client.deployments.wait_ready("digits", timeout=60)
    seven = tmp_path / "seven.png"
    seven.write_bytes(digit_png(7))
    sign_in(page, console, console.acme.key, "/console/deployments/digits")
    page.get_by_label("Image (PNG or JPEG)").set_input_files(seven)
    page.get_by_role("button", name="Predict and explain").click()
    expect(page.get_by_role("status").filter(has_text="Prediction")).to_be_visible()
    expect(page.locator("[data-saliency]")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    expect(page.get_by_alt_text("The input image")).to_be_visible()
    drawn = "() => [...document.querySelectorAll('.saliency img')].map(i => i.complete && i.naturalWidth > 0)"
    assert page.evaluate(drawn) == [True, True]  # both decoded: the image, and its map over it
    review(page, "33-playground-saliency")
