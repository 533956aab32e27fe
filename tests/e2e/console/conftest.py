"""The console in a real browser: Debian's chromium driven by Playwright (one browser for the
session, a fresh context per test) against one real server for the package, seeded with two
organisations, their keys, a few days of priced usage and a deployed tabular classifier.

Tests skip, saying why, where no chromium is installed (and fail under CI, which installs it). Every page a
test visits is screenshotted into `artifacts/console/` (git-ignored) and checked with axe-core.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from playwright.sync_api import Browser, BrowserType, Playwright, sync_playwright

from openmaas import Client
from openmaas.api.app import create_app
from openmaas.bootstrap import Platform
from openmaas.engine.testing import build_tiny_model
from openmaas.metering.events import UsageEvent
from tests.data.chat_templates import QWEN25, use_template
from tests.integration.serving.predict_support import artifact, register
from tests.support.platforms import make_platform
from tests.support.served import Served, Tenant
from tests.support.server import running_server

SCREENSHOTS = Path(__file__).resolve().parents[3] / "artifacts" / "console"
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """Debian's chromium (its real binary, not the shell wrapper), or `OPENMAAS_TEST_CHROMIUM`."""
    if os.environ.get("OPENMAAS_TEST_CHROMIUM"):
        return os.environ["OPENMAAS_TEST_CHROMIUM"]
    for candidate in _CANDIDATES:
        found = candidate if os.access(candidate, os.X_OK) else shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    path = chromium_path()
    if path is None:
        reason = "no chromium found: `apt-get install chromium` (or set OPENMAAS_TEST_CHROMIUM)"
        if os.environ.get("CI"):  # `.ci/run` installs it: a CI run without it must not pass quietly
            pytest.fail(reason)
        pytest.skip(reason)
    return {**browser_type_launch_args, "executable_path": path}


@pytest.fixture(scope="package")
def browser_context_args() -> dict[str, Any]:
    # axe-core is injected as an inline script, which the console's CSP forbids (as it should).
    return {"bypass_csp": True, "viewport": {"width": 1280, "height": 900}}


# Playwright's sync API keeps an event loop running in this thread while it is started, and
# pytest-playwright starts it for the whole session: every later test calling asyncio.run() would
# fail. Started and stopped within this package instead.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as started:
        yield started


@pytest.fixture(scope="package")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    return cast(BrowserType, getattr(playwright, browser_name))


@pytest.fixture(scope="package")
def launch_browser(
    browser_type_launch_args: dict[str, Any], browser_type: BrowserType
) -> Callable[..., Browser]:
    return lambda **options: browser_type.launch(**{**browser_type_launch_args, **options})


@pytest.fixture(scope="package")
def browser(launch_browser: Callable[[], Browser]) -> Iterator[Browser]:
    launched = launch_browser()
    yield launched
    launched.close()


@dataclass
class Console:
    url: str
    platform: Platform
    admin_key: str
    acme: Tenant
    globex: Tenant
    inference: Tenant  # acme's inference-only key


@pytest.fixture(scope="package")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    home = tmp_path_factory.mktemp("console")
    platform = make_platform(home / "home", f"sqlite:///{home / 'openmaas.db'}")
    assert platform.new_admin_key is not None
    with running_server(create_app(platform)) as url:
        served = Served(url, platform, platform.new_admin_key)
        acme, globex = served.tenant("acme"), served.tenant("globex")
        with served.admin() as admin:
            prices = [
                {"unit": "requests", "price": "0.01"},
                {"unit": "input_tokens", "price": "0.50"},
                {"unit": "output_tokens", "price": "2.00"},
            ]
            book = {"components": prices}  # from now on: the earlier days' usage stays unpriced
            assert admin.post("/v1/admin/pricebooks", json=book).status_code == 201
            inference = admin.post(
                f"/v1/admin/organizations/{acme.org_id}/api_keys",
                json={"name": "app", "scopes": ["inference"]},
            ).json()
        now = platform.clock.now()
        for day in range(4):
            for n in range(day + 1):
                quantities = {"requests": 1, "input_tokens": 100 * (n + 1), "output_tokens": 50 * (day + 1)}
                at = now - timedelta(days=day, minutes=n)
                platform.meter.record_and_wait(
                    UsageEvent(
                        f"req-{day}-{n}",
                        acme.org_id,
                        quantities,
                        at,
                        api_key_id=acme.key_id,
                        model="chat-small:1",
                        deployment="chat-small",
                    )
                )
        platform.meter.record_and_wait(
            UsageEvent(
                "req-g", globex.org_id, {"requests": 1}, now, api_key_id=globex.key_id, model="secret:1"
            )
        )
        # A tiny trained tabular classifier, deployed for the playground (a second or two).
        ref = register(served, acme, artifact("tabular-classification"), "churn")
        with Client(url, acme.key) as client:
            client.deployments.create(ref, name="churn")
            client.deployments.wait_ready("churn", timeout=60)
        only = Tenant(acme.org_id, inference["id"], inference["key"])
        yield Console(url, platform, served.admin_key, acme, globex, only)
    platform.close()


@pytest.fixture(scope="package")
def chat_model(console: Console, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random-weight Qwen2 with Qwen2.5's tool-calling chat template, imported and deployed
    as `chat` in acme (a few seconds)."""
    folder = build_tiny_model(
        tmp_path_factory.mktemp("llm") / "tiny-qwen", "qwen2", max_position_embeddings=2048
    )
    use_template(folder, QWEN25)
    engine = {"kv_cache_memory_bytes": 16 * 1024 * 1024, "max_num_seqs": 4, "max_model_len": 2048}
    with Client(console.url, console.acme.key) as client:
        client.import_model(folder, "chat")
        client.deployments.create("chat", name="chat", engine=engine)
        client.deployments.wait_ready("chat", timeout=120)
    return "chat"
