"""JSON bodies a client should never send, against a real server: nesting far past any real body,
free-form objects nested deeper than their stored form can be written, integers past 64 bits,
NaN and Infinity (not JSON), huge strings, duplicate keys and wrong types. Each is a 4xx in our
error shape naming the field, answered quickly, and leaves nothing behind."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.integration.hostile.wire import error_of
from tests.support.leftovers import nothing_left
from tests.support.served import Served, Tenant

TRAIN = {"task": "tabular-classification", "dataset": "d"}
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}

# Every kind of route that parses JSON: FastAPI's (json.loads) and the hand-parsed hot paths (orjson).
JSON_ROUTES = [
    "/v1/api_keys",
    "/v1/deployments",
    "/v1/training_jobs",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/deployments/d/predict",
    "/v1/deployments/d/explain",
]


def _post(api: httpx.Client, path: str, raw: str | bytes) -> httpx.Response:
    return api.post(path, content=raw, headers={"content-type": "application/json"})


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_json_nested_100000_levels_is_400_at_once(served: Served, api: httpx.Client, path: str) -> None:
    with nothing_left(served.platform):
        for deep in ("[" * 100_000 + "]" * 100_000, '{"a":' * 40_000 + "1" + "}" * 40_000):
            started = time.monotonic()
            refused = _post(api, path, deep)
            assert time.monotonic() - started < 2
            assert error_of(refused) == (400, "invalid_json", None), refused.text


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_a_body_that_is_not_utf8_is_invalid_json(served: Served, api: httpx.Client, path: str) -> None:
    with nothing_left(served.platform):
        refused = _post(api, path, b'{"name": "\xff\xfe"}')
    assert error_of(refused) == (400, "invalid_json", None), refused.text


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": [value]}
    return value


# Free-form objects are stored as JSON and served back: 300 levels passed validation, then failed to
# be written (500 "Maximum serialization depth exceeded").
FREE_FORM = [
    ("/v1/deployments", {"model": "m", "engine": {"x": _nested(150)}}, "engine"),
    ("/v1/training_jobs", {**TRAIN, "params": {"epochs": _nested(150)}}, "params"),
    ("/v1/training_jobs", {**TRAIN, "preprocessing": {"tabular": _nested(150)}}, "preprocessing"),
]


@pytest.mark.parametrize(("path", "body", "param"), FREE_FORM, ids=[p for *_, p in FREE_FORM])
def test_free_form_objects_nested_too_deep_are_refused_naming_the_field(
    served: Served, api: httpx.Client, path: str, body: dict[str, Any], param: str
) -> None:
    with nothing_left(served.platform):
        for idempotency in ({}, {"Idempotency-Key": "deep"}):
            refused = api.post(path, json=body, headers=idempotency)
            assert error_of(refused) == (422, "invalid_value", param), refused.text
            assert "deep" in refused.json()["error"]["message"]


BIG = 18446744073709551616  # 2**64


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/deployments", {"model": "m", "engine": {"x": [-358365313929167241216]}}, "model"),
        ("/v1/training_jobs", {**TRAIN, "params": {"epochs": BIG}}, "epochs"),
        ("/v1/training_jobs", {**TRAIN, "max_attempts": BIG}, "max_attempts"),
        ("/v1/deployments", {"model": "m", "replicas": -BIG}, "replicas"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": -BIG}, "max_tokens"),
    ],
    ids=["engine", "params", "max_attempts", "replicas", "max_tokens"],
)
def test_integers_past_64_bits_are_refused_naming_the_field(
    served: Served, api: httpx.Client, path: str, body: dict[str, Any], param: str
) -> None:
    with nothing_left(served.platform):
        for idempotency in ({}, {"Idempotency-Key": "big"}):
            refused = api.post(path, json=body, headers=idempotency)
            assert refused.status_code in (400, 404, 422), refused.text
            assert refused.json()["error"]["param"] == param, refused.text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinity_are_refused_naming_the_field(
    served: Served, api: httpx.Client, literal: str
) -> None:
    cases = [
        ("/v1/api_keys", '{"name": %s}', (422, "invalid_value", "name")),
        ("/v1/deployments", '{"model": "m", "max_wait_ms": %s}', (422, "invalid_value", "max_wait_ms")),
        ("/v1/deployments", '{"model": "m", "idle_timeout_s": %s}', (422, "invalid_value", "idle_timeout_s")),
        (
            "/v1/training_jobs",
            '{"task": "tabular-classification", "dataset": "d", "preprocessing": {"split": {"test": %s}}}',
            (422, "invalid_value", "preprocessing.split.test"),
        ),
        (
            "/v1/training_jobs",
            '{"task": "tabular-classification", "dataset": "d", "params": {"learning_rate": %s}}',
            (422, "invalid_value", "learning_rate"),
        ),
        (
            "/v1/chat/completions",
            '{"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": %s}',
            (400, "invalid_value", "temperature"),
        ),
    ]
    hand_parsed = [
        ("/v1/deployments/d/predict", '{"inputs": [{"age": %s}]}'),
        ("/v1/deployments/d/explain", '{"inputs": [{"age": 1}], "baseline": {"age": %s}}'),
    ]
    with nothing_left(served.platform):
        for path, template, expected in cases:
            refused = _post(api, path, template % literal)
            assert error_of(refused) == expected, (path, refused.text)
        for path, template in hand_parsed:
            refused = _post(api, path, template % literal)
            assert refused.status_code == 400 and refused.json()["error"]["code"] in (
                "invalid_json",
                "invalid_value",
            )


def test_huge_strings_in_names_are_refused_naming_the_field(
    served: Served, tenant: Tenant, api: httpx.Client
) -> None:
    huge = "n" * 200_000
    long = "n" * 5_000  # in a query: within the head's limit
    with nothing_left(served.platform), served.admin() as admin:
        for client, path, body, param in (
            (admin, "/v1/admin/organizations", {"name": huge}, "name"),
            (admin, f"/v1/admin/organizations/{tenant.org_id}/api_keys", {"name": huge}, "name"),
            (api, "/v1/api_keys", {"name": huge}, "name"),
            (api, "/v1/deployments", {"model": "m", "name": huge}, "name"),
            (api, "/v1/deployments", {"model": huge}, "model"),
            (api, "/v1/training_jobs", {**TRAIN, "model": huge}, "model"),
            (api, "/v1/training_jobs", {**TRAIN, "dataset": huge}, "dataset"),
        ):
            refused = client.post(path, json=body)
            assert refused.status_code in (404, 422) and refused.json()["error"]["param"] == param, (
                refused.text
            )
            assert len(refused.content) < 2_000  # the answer does not echo the string back whole
        for path, param in (("/v1/datasets?name={}", "name"), ("/v1/registry/imports?name={}", "name")):
            refused = api.post(path.format(long), content=b"a\n1\n")
            assert error_of(refused) == (422, "invalid_value", param), refused.text


def test_duplicate_keys_keep_the_last_and_it_is_the_one_checked(served: Served, api: httpx.Client) -> None:
    """The value validated is the value stored: a duplicate cannot slip a bad value past the check."""
    with nothing_left(served.platform):
        refused = _post(api, "/v1/api_keys", '{"name": "ok", "name": "bad\\u0000"}')
        assert error_of(refused) == (422, "invalid_value", "name"), refused.text
    created = _post(api, "/v1/api_keys", '{"name": "bad\\u0000", "name": "ok"}')
    assert created.status_code == 201 and created.json()["name"] == "ok", created.text


WRONG_TYPES = [
    ("/v1/api_keys", {"name": ["a"]}, (422, "invalid_value", "name")),
    ("/v1/api_keys", {"name": "k", "scopes": "datasets:read"}, (422, "invalid_value", "scopes")),
    ("/v1/deployments", {"model": {"name": "m"}}, (422, "invalid_value", "model")),
    ("/v1/deployments", {"model": "m", "replicas": "many"}, (422, "invalid_value", "replicas")),
    ("/v1/deployments", {"model": "m", "engine": ["x"]}, (422, "invalid_value", "engine")),
    ("/v1/training_jobs", {**TRAIN, "params": [1]}, (422, "invalid_value", "params")),
    ("/v1/chat/completions", {"model": "chat", "messages": "hi"}, (400, "invalid_value", "messages")),
    ("/v1/api_keys", ["name", "k"], (422, "invalid_value", None)),
    ("/v1/api_keys", "k", (422, "invalid_value", None)),
]


@pytest.mark.parametrize(
    ("path", "body", "expected"), WRONG_TYPES, ids=[f"{p}-{i}" for i, (p, *_) in enumerate(WRONG_TYPES)]
)
def test_wrong_types_are_refused_naming_the_field(
    served: Served, api: httpx.Client, path: str, body: Any, expected: tuple[int, str, str | None]
) -> None:
    with nothing_left(served.platform):
        refused = _post(api, path, json.dumps(body))
    assert error_of(refused) == expected, refused.text


def test_a_json_body_sent_as_another_content_type_is_415(served: Served, api: httpx.Client) -> None:
    with nothing_left(served.platform):
        for content_type in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ):
            refused = api.post(
                "/v1/api_keys", content=b'{"name": "k"}', headers={"content-type": content_type}
            )
            assert error_of(refused)[:2] == (415, "unsupported_media_type"), refused.text
