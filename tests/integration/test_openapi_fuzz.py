"""Schema fuzzing of the whole OpenAPI document with schemathesis, against a real server.

Every operation the document lists is called with generated requests, valid and invalid, as a
tenant (a key with every tenant scope) and as the operator, and each answer goes through all of
schemathesis' checks: no server error, a documented status code, content type and headers, a body
matching the declared schema, invalid data refused and valid data accepted, authentication
enforced (no key, a wrong key), 405 with the right `Allow` for undocumented methods. The stateful
phase then chains operations (create, then read, update, delete what was created) along the links
schemathesis infers from the document, with the checks that need state: a deleted thing is gone
(`use_after_free`), a created one can be read at once (`ensure_resource_availability`).

The tenant owns a trained model (`churn:1`, alias `prod`), a ready deployment of it (`churn`), a
tiny LLM deployed as `bot`, and a dataset (`fuzz`); the document handed to schemathesis names them
as examples of the path parameters and of the OpenAI routes' `model`, so the examples phase calls
the routes that act on real things, not only their 404s.

The budget keeps the suite within a few minutes on two cores: one server for every operation,
few examples per operation (the examples and coverage phases add their boundary and negative
cases on top), a fixed seed so CI sends the same requests every time, and no example database
written to disk. PostgreSQL, when configured, runs the same with fewer examples. For a deeper run
by hand: OPENMAAS_FUZZ_EXAMPLES=100 OPENMAAS_FUZZ_SEED=7 pytest tests/integration/test_openapi_fuzz.py

The document is the app's own, made once at import from a throwaway platform: schemathesis'
fixture-based loader does not run under pytest 9.2 (it sets `Node._nodeid`, which pytest removed).
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from openmaas import Client
from openmaas.api.app import create_app
from openmaas.bootstrap import build_platform
from openmaas.config import Settings
from openmaas.engine.testing import build_tiny_model
from tests.conftest import POSTGRES_URL
from tests.integration.serving.predict_support import artifact, register
from tests.support.platforms import make_platform, migrated_postgres_database
from tests.support.served import Served
from tests.support.server import running_server

# Examples per operation in the fuzzing phase (the examples and coverage phases add their own).
FUZZ_EXAMPLES = int(os.environ.get("OPENMAAS_FUZZ_EXAMPLES", "6"))
POSTGRES_FUZZ_EXAMPLES = max(1, FUZZ_EXAMPLES // 2)
STATEFUL_SCENARIOS = 2 * FUZZ_EXAMPLES
SEED = int(os.environ.get("OPENMAAS_FUZZ_SEED", "20150"))
HYPOTHESIS = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))

# Where validity is more than a JSON schema can state, a request valid per the document may still
# be refused with a 4xx naming the field, so positive_data_acceptance is off for these alone:
NOT_STATED_BY_THE_DOCUMENT = {
    # what an upload holds (a table to read, a zip of a model folder) is checked by reading it
    "POST /v1/datasets",
    "POST /v1/registry/imports",
    "POST /v1/files",  # a fine-tune file must be chat-format JSON lines
    # the base must be an imported text-generation model, the files the caller's fine-tune files
    "POST /v1/fine_tuning/jobs",
    # a prompt must fit the model's context and vocabulary, which the document cannot know
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/responses",  # and a function_call_output must answer a call before it
    # the `after` of `granularity=event` is a cursor of that list (`micros.seq.unit`), not any id
    "GET /v1/usage",
    # hyperparameters and preprocessing are checked against the task's own (`training/config.py`)
    "POST /v1/training_jobs",
    # traffic weights must sum to 100, and `model` and `traffic` exclude each other
    "PATCH /v1/deployments/{deployment}",
    # `placement: ray` needs a server with a Ray cluster, and `cpus`/`gpus` go with it alone
    "POST /v1/deployments",
    # an instant must lie ahead of now (a key's expiry, a pricebook's start: metered usage keeps
    # its prices), which a schema cannot say
    "POST /v1/api_keys",
    "POST /v1/admin/organizations/{org_id}/api_keys",
    "POST /v1/admin/pricebooks",
}
# Rows are checked against the deployed model's own signature (features, types, sizes), and a
# caller's own `timeout` that passes answers 504 `deadline_exceeded` by design, not as a fault.
WITH_A_DEADLINE = {"POST /v1/deployments/{deployment}/predict", "POST /v1/deployments/{deployment}/explain"}

# Things the tenant owns, named as examples of the path parameters that address them.
EXAMPLES = {
    "deployment": "churn",
    "ref": "churn:1",
    "name": "churn",
    "alias": "prod",
}


_ROW = {"age": 42.0, "plan": "pro", "noise": 0.1}
_CHAT = {"model": "bot", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
_TEXT = {"model": "bot", "prompt": "the quick brown", "max_tokens": 4}
_RESPONSE = {"model": "bot", "input": "hi", "max_output_tokens": 4}
# Bodies that reach what the tenant owns, for the examples phase (which sends each as it is).
BODY_EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/deployments/{deployment}/predict", "post"): {"row": {"inputs": [_ROW]}},
    ("/v1/deployments/{deployment}/explain", "post"): {"row": {"inputs": [_ROW], "steps": 4}},
    ("/v1/chat/completions", "post"): {"whole": _CHAT, "streamed": {**_CHAT, "stream": True}},
    ("/v1/completions", "post"): {"whole": _TEXT, "streamed": {**_TEXT, "stream": True, "logprobs": 2}},
    ("/v1/responses", "post"): {"whole": _RESPONSE, "streamed": {**_RESPONSE, "stream": True}},
}


def _document() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="openmaas-openapi-") as folder:
        home = Path(folder)
        platform = build_platform(
            Settings(
                home=home,
                database_url=f"sqlite:///{home / 'openmaas.db'}",
                secret_key=secrets.token_hex(32),
                config_dir=home / "config",
            )
        )
        try:
            document = copy.deepcopy(create_app(platform).openapi())
        finally:
            platform.close()
    for path, operations in document["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                example = EXAMPLES.get(parameter["name"]) if parameter["in"] == "path" else None
                if path.startswith("/v1/datasets/"):
                    example = "fuzz"
                if example is not None and "org_id" not in path:
                    parameter["example"] = example
    for (path, method), examples in BODY_EXAMPLES.items():
        content = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        content["examples"] = {name: {"value": value} for name, value in examples.items()}
    return document


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"deterministic": True, "database": "none"},
            "request-timeout": 30,
            "operations": [
                {
                    "include-name": sorted(WITH_A_DEADLINE),
                    "checks": {
                        "positive_data_acceptance": {"enabled": False},
                        "not_a_server_error": {"expected-statuses": ["2XX", "3XX", "4XX", 504]},
                    },
                },
                {
                    "include-name": sorted(NOT_STATED_BY_THE_DOCUMENT),
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
            ],
        }
    )


class _BearerKey:
    """The `Authorization: Bearer` key of a role, which schemathesis leaves out, or replaces by a
    wrong one, in the cases that test how a missing or bad key is refused. Some cases are drawn
    when the tests are collected, before any server runs: they carry a stand-in, `<role>`, which
    `Fuzzed.send` swaps for the key of the server under test."""

    role = ""

    def get(self, _case: Any, _context: Any) -> str:
        return f"<{self.role}>"

    def set(self, case: Any, key: str, _context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {key}"}


class _TenantKey(_BearerKey):
    role = "tenant"


class _OperatorKey(_BearerKey):
    role = "operator"


def _schema(key: type[_BearerKey]) -> Any:
    schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config())
    schema.auth(refresh_interval=None)(key)  # not cached: each server has its own keys
    return schema


DOCUMENT = _document()
AS_TENANT = _schema(_TenantKey)
AS_OPERATOR = _schema(_OperatorKey)


@dataclass
class Fuzzed:
    """The server under fuzzing, and what it answered: status codes by role, and the
    operations each role got a 2xx from."""

    url: str
    keys: dict[str, str]
    answers: dict[str, Counter[int]] = field(
        default_factory=lambda: {"tenant": Counter(), "operator": Counter()}
    )
    succeeded: dict[str, set[str]] = field(default_factory=lambda: {"tenant": set(), "operator": set()})

    def call(self, case: Any, role: str) -> None:
        self.send_as(case, role)
        response = case.call(base_url=self.url)
        self.answered(role, case, response.status_code)
        case.validate_response(response)

    def send_as(self, case: Any, role: str) -> None:
        """Put the role's key where the case holds its stand-in."""
        if case.headers and case.headers.get("Authorization") == f"Bearer <{role}>":
            case.headers["Authorization"] = f"Bearer {self.keys[role]}"

    def answered(self, role: str, case: Any, status: int) -> None:
        self.answers[role][status] += 1
        if 200 <= status < 300:
            self.succeeded[role].add(f"{case.method} {case.path}")


LLM_ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 4, "max_model_len": 64}


@functools.cache
def _tiny_llm() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="openmaas-fuzz-llm-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return build_tiny_model(folder / "tiny", "qwen2", max_position_embeddings=64)


@contextmanager
def _served(home: Path, database_url: str) -> Iterator[Fuzzed]:
    platform = make_platform(home / "home", database_url, max_body_bytes=64 * 1024)
    try:
        assert platform.new_admin_key is not None
        with running_server(create_app(platform)) as url:
            served = Served(url, platform, platform.new_admin_key)
            tenant = served.tenant("fuzz")
            ref = register(served, tenant, artifact("tabular-classification"), "churn")
            with Client(url, tenant.key) as client:
                client.deployments.create(ref, name="churn", max_batch_size=8)
                client.import_model(_tiny_llm(), "tiny")
                client.deployments.create("tiny:1", name="bot", engine=LLM_ENGINE)
                client.deployments.wait_ready("churn", timeout=60)
                client.deployments.wait_ready("bot", timeout=60)
            with served.client(tenant.key) as http:
                assert http.put("/v1/registry/models/churn/aliases/prod", json={"version": 1}).is_success
                upload = http.post("/v1/datasets?name=fuzz", content=b"age,plan,label\n30,pro,yes\n")
                assert upload.is_success, upload.text
            yield Fuzzed(url, {"tenant": tenant.key, "operator": served.admin_key})
    finally:
        platform.close()


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """One server for every operation (a server per operation would cost more than fuzzing it)."""
    home = tmp_path_factory.mktemp("fuzz")
    with _served(home, f"sqlite:///{home / 'openmaas.db'}") as fuzzed:
        yield fuzzed


@AS_TENANT.parametrize()
@settings(HYPOTHESIS, max_examples=FUZZ_EXAMPLES)
def test_every_operation_as_a_tenant(case: Any, on_sqlite: Fuzzed) -> None:
    on_sqlite.call(case, "tenant")


@AS_OPERATOR.parametrize()
@settings(HYPOTHESIS, max_examples=FUZZ_EXAMPLES)
def test_every_operation_as_the_operator(case: Any, on_sqlite: Fuzzed) -> None:
    on_sqlite.call(case, "operator")


def _stateful(schema: Any, fuzzed: Fuzzed, role: str, scenarios: int) -> None:
    """Chains of calls along the links schemathesis infers; each role walks the routes it may call
    (the per-operation tests above already show each role refused everywhere else)."""
    operator_routes = r"^/v1/admin/"
    scoped = (
        schema.include(path_regex=operator_routes)
        if role == "operator"
        else schema.exclude(path_regex=operator_routes)
    )

    class Workflow(scoped.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            fuzzed.send_as(case, role)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": fuzzed.url}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            fuzzed.answered(role, case, response.status_code)

    # No shrinking: the server keeps what each scenario did, so a replay never draws the same steps
    # again (Hypothesis would report that flakiness instead of the failure it found).
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    Workflow.run(settings=settings(HYPOTHESIS, max_examples=scenarios, stateful_step_count=6, phases=phases))


def test_stateful_as_a_tenant(on_sqlite: Fuzzed) -> None:
    _stateful(AS_TENANT, on_sqlite, "tenant", STATEFUL_SCENARIOS)


def test_stateful_as_the_operator(on_sqlite: Fuzzed) -> None:
    _stateful(AS_OPERATOR, on_sqlite, "operator", STATEFUL_SCENARIOS)


def test_the_keys_were_taken(on_sqlite: Fuzzed) -> None:
    """Guards the suite itself: had schemathesis sent no key or a wrong one, every answer would
    be a documented 401 and every check above would pass. Each role must have been served by
    most of the routes it may call."""
    if not all(on_sqlite.answers.values()):
        pytest.skip("run with the tests above")
    for role, answers in on_sqlite.answers.items():  # shown with `pytest -s`: what a run sent
        print(f"{role}: {sum(answers.values())} requests, by status {dict(sorted(answers.items()))}")
    anyone = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/me"}
    tenant = on_sqlite.succeeded["tenant"] - anyone
    operator = on_sqlite.succeeded["operator"] - anyone
    assert len(tenant) >= 20 and not any("/v1/admin/" in label for label in tenant), (len(tenant), tenant)
    owned = {
        "POST /v1/chat/completions",
        "POST /v1/completions",
        # not "POST /v1/responses": with the merged tool and grammar checks, none of this seed's
        # generated bodies is one the route accepts (an open gap of this stop, in its note)
        "POST /v1/deployments/{deployment}/predict",
        "POST /v1/deployments/{deployment}/explain",
    }
    assert owned <= tenant, owned - tenant  # the seeded deployments answered
    assert len(operator) >= 8 and all("/v1/admin/" in label for label in operator), (len(operator), operator)


if POSTGRES_URL is not None:

    @pytest.fixture(scope="module")
    def on_postgresql(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
        assert POSTGRES_URL is not None
        home = tmp_path_factory.mktemp("fuzz-pg")
        with migrated_postgres_database(POSTGRES_URL) as url, _served(home, url) as fuzzed:
            yield fuzzed

    @pytest.mark.postgres
    @AS_TENANT.parametrize()
    @settings(HYPOTHESIS, max_examples=POSTGRES_FUZZ_EXAMPLES)
    def test_every_operation_as_a_tenant_on_postgresql(case: Any, on_postgresql: Fuzzed) -> None:
        on_postgresql.call(case, "tenant")

    @pytest.mark.postgres
    @AS_OPERATOR.parametrize()
    @settings(HYPOTHESIS, max_examples=POSTGRES_FUZZ_EXAMPLES)
    def test_every_operation_as_the_operator_on_postgresql(case: Any, on_postgresql: Fuzzed) -> None:
        on_postgresql.call(case, "operator")

    @pytest.mark.postgres
    def test_stateful_on_postgresql(on_postgresql: Fuzzed) -> None:
        _stateful(AS_TENANT, on_postgresql, "tenant", POSTGRES_FUZZ_EXAMPLES)
        _stateful(AS_OPERATOR, on_postgresql, "operator", POSTGRES_FUZZ_EXAMPLES)
