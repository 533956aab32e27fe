"""The console's business pages in chromium: a prediction on the month's invoice, the marketplace
(publish, subscribe, earnings), and the operator's pricebooks, an organisation's wallet and billing
settings, and the platform's usage and revenue. Each page visited is screenshotted and checked
with axe-core, as in test_console.py (the same package-scoped server and browser)."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from openmaas import Client
from openmaas.billing import credits
from openmaas.pricing.periods import period_of
from tests.e2e.console.conftest import SCREENSHOTS, Console
from tests.e2e.console.test_console import alert, review, sign_in


def _period(console: Console) -> str:
    return period_of(console.platform.clock.now(), "UTC")


def test_a_playground_request_appears_on_the_usage_chart_and_in_the_months_invoice_lines(
    page: Page, console: Console
) -> None:
    sign_in(page, console, console.acme.key, "/console/deployments/churn")
    page.get_by_label("age").fill("30")
    page.get_by_label("plan").select_option("pro")
    page.get_by_role("button", name="Predict", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Prediction")).to_be_visible()
    page.get_by_role("link", name="Usage").click()
    expect(page.locator(".uplot canvas")).to_have_count(3)
    expect(page.get_by_role("row").filter(has_text="churn:1").first).to_be_visible()

    page.get_by_role("link", name="Invoices").click()
    period = _period(console)
    month = page.get_by_role("row").filter(has_text=period)
    expect(month).to_contain_text("draft")
    review(page, "20-invoices")
    month.get_by_role("link", name=period).click()
    expect(page.get_by_role("heading", name=f"Invoice {period}", level=1)).to_be_visible()
    line = page.get_by_role("row").filter(has_text="churn:1").filter(has_text="requests")
    expect(line).to_have_count(1)  # the playground's requests, priced at 0.01 each
    expect(line.locator("td.num").last).not_to_have_text("0.00")
    expect(page.get_by_role("row", name=re.compile("^Amount due"))).to_be_visible()
    review(page, "21-invoice")
    page.emulate_media(media="print")  # the printed invoice: no navigation, no buttons
    expect(page.get_by_role("navigation", name="Console")).to_be_hidden()
    expect(page.get_by_role("button", name="Print")).to_be_hidden()
    page.screenshot(path=SCREENSHOTS / "22-invoice-print.png", full_page=True)
    page.emulate_media(media="screen")

    bad = page.request.get(console.url + "/console/invoices/2026-13")
    assert bad.status == 422 and "period" in bad.text()
    operator_page = f"/console/organizations/{console.globex.org_id}/invoices/{period}"
    theirs = page.request.get(console.url + operator_page)
    assert theirs.status == 403  # the operator's page: a tenant's key lacks the scope
    for path in ("/console/pricebooks", "/console/platform", f"/console/organizations/{console.acme.org_id}"):
        assert page.request.get(console.url + path).status == 403, path


def test_a_tenant_publishes_a_model_another_subscribes_and_the_seller_sees_its_earnings(
    page: Page, console: Console
) -> None:
    sign_in(page, console, console.acme.key, "/console/marketplace")
    expect(page.get_by_text("Nothing is for sale yet.")).to_be_visible()
    page.get_by_label("Version").fill("churn:9")
    page.get_by_label("Requests per request").fill("0.05")
    page.get_by_role("button", name="Publish").click()
    assert "churn" in alert(page)  # the registry's 404, in the page
    expect(page.get_by_label("Requests per request")).to_have_value("0.05")  # kept to retry
    page.get_by_label("Version").fill("churn:1")
    page.get_by_label("Description").fill("Churn risk for subscription businesses")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("status")).to_contain_text("was published")
    listing = page.get_by_role("row").filter(has_text="Churn risk").first
    expect(listing).to_contain_text("requests: 0.05")
    listing_id = re.search(r"lst_\w+", listing.inner_text())
    assert listing_id is not None
    with console.platform.db.session() as session:  # as if a buyer's month had been finalised
        credits.post_transaction(
            session, console.acme.org_id, kind="marketplace_revenue", amount_micros=42_000_000,
            now=console.platform.clock.now(), reference="inv_buyer", note="churn sold in the last month",
        )  # fmt: skip
    page.reload()
    expect(page.get_by_role("row").filter(has_text="churn sold in the last month")).to_contain_text("42.00")
    review(page, "23-marketplace-seller")

    page.context.clear_cookies()
    sign_in(page, console, console.globex.key, "/console/marketplace")
    offer = page.get_by_role("row").filter(has_text=listing_id.group(0))
    offer.get_by_label("Deployment name").fill("bought-churn")
    review(page, "24-marketplace-buyer")
    offer.get_by_role("button", name="Subscribe and deploy").click()
    expect(page.get_by_role("heading", name="bought-churn", level=1)).to_be_visible()
    with Client(console.url, console.globex.key) as client:
        client.deployments.wait_ready("bought-churn", timeout=60)
    page.goto(console.url + "/console/marketplace")  # the same name again: the API's conflict
    offer = page.get_by_role("row").filter(has_text=listing_id.group(0))
    offer.get_by_label("Deployment name").fill("bought-churn")
    offer.get_by_role("button", name="Subscribe and deploy").click()
    assert "A deployment named 'bought-churn' already exists." in alert(page)
    expect(page.get_by_text("No earnings yet.")).to_be_visible()  # globex sells nothing


def test_an_operator_creates_an_organisation_sets_its_price_grants_credits_and_reads_revenue(
    page: Page, console: Console
) -> None:
    sign_in(page, console, console.admin_key)
    page.get_by_label("Name").first.fill("umbrella")
    page.get_by_label("Plan", exact=True).fill("gold")
    page.get_by_role("button", name="Create organisation").click()
    expect(page.get_by_role("status")).to_contain_text("umbrella")

    page.get_by_role("link", name="Pricebooks").click()
    page.get_by_label("Plan", exact=True).fill("gold")
    page.get_by_label("Requests per request").fill("zero")
    page.get_by_role("button", name="Save prices").click()
    assert "components.0.price" in alert(page)  # the field at fault, as the API names it
    forged = page.request.post(
        console.url + "/console/pricebooks", form={"csrf_token": "forged", "plan": "gold"}, max_redirects=0
    )
    assert forged.status == 403 and "security token" in forged.text()
    page.get_by_label("Requests per request").fill("0.02")
    page.get_by_role("textbox", name="Output tokens per 1K tokens", exact=True).fill("1.50")
    page.get_by_role("button", name="Save prices").click()
    expect(page.get_by_role("status")).to_contain_text("was created")
    gold = page.get_by_role("row").filter(has_text="gold")
    expect(gold).to_contain_text("requests: 0.02")
    expect(gold).to_contain_text("output tokens: 1.50")
    review(page, "25-pricebooks")

    page.get_by_role("link", name="Organisations").click()
    page.get_by_role("link", name="umbrella").click()
    expect(page.get_by_role("heading", name="umbrella", level=1)).to_be_visible()
    expect(page.get_by_text("No credits granted yet.")).to_be_visible()
    page.get_by_label("Amount").fill("-3")
    page.get_by_role("button", name="Grant credits").click()
    assert "amount" in alert(page)
    page.get_by_label("Amount").fill("25")
    page.get_by_label("Note").fill("welcome credit")
    page.get_by_role("button", name="Grant credits").click()
    expect(page.get_by_role("status")).to_contain_text("Credits were granted")
    expect(page.get_by_role("row").filter(has_text="welcome credit")).to_contain_text("25.00")
    page.get_by_label("Prepaid").check()
    page.get_by_label("Monthly cap").fill("100")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_contain_text("Billing settings were saved")
    expect(page.get_by_text("monthly cap 100.00")).to_be_visible()
    expect(page.get_by_label("Prepaid")).to_be_checked()
    review(page, "26-organisation")
    page.get_by_label("Monthly cap").fill("")  # empty: no cap
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("no monthly cap")).to_be_visible()

    page.get_by_role("link", name="Platform usage").click()
    acme = page.get_by_role("row").filter(has_text="acme")
    expect(acme).to_contain_text("default")
    review(page, "27-platform-usage")
    page.get_by_role("link", name="acme").click()
    page.get_by_role("link", name=f"invoice for {_period(console)}").click()
    expect(page.get_by_role("heading", name=f"Invoice {_period(console)}", level=1)).to_be_visible()
    expect(page.locator(".invoice-head")).to_contain_text("acme")
    missing = page.request.get(console.url + "/console/organizations/org_nope")
    assert missing.status == 404 and "org_nope" in missing.text()


def test_an_inference_only_key_reaches_no_business_page(page: Page, console: Console) -> None:
    sign_in(page, console, console.inference.key)
    csrf = page.locator("input[name=csrf_token]").first.input_value()
    for path, scope in (("/console/invoices", "billing:read"), ("/console/marketplace", "models:read")):
        refused = page.request.get(console.url + path)
        assert refused.status == 403 and scope in refused.text(), path
    posts = {
        "/console/marketplace/listings": ("models:write", {"model": "churn:1", "price_requests": "1"}),
        "/console/marketplace/listings/lst_x/subscribe": ("deployments:write", {"name": "x"}),
        "/console/marketplace/listings/lst_x/withdraw": ("models:write", {}),
    }
    for path, (scope, form) in posts.items():
        refused = page.request.post(console.url + path, form={"csrf_token": csrf, **form})
        assert refused.status == 403 and scope in refused.text(), path
