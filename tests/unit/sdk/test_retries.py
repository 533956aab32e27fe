"""The SDK retries what may be retried, as OpenAI's SDK does: up to `max_retries` (default 2) more
attempts after a connection error, a 429 or a 5xx, waiting by exponential backoff with jitter or as
long as `Retry-After` says. A request that may have been done already is retried only when it is
safe: a GET, PUT or DELETE, or a POST carrying an Idempotency-Key (creates carry one of their own).
Each behaviour through `Client` and `AsyncClient` alike."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from inspect import isawaitable
from pathlib import Path
from typing import Any

import httpx
import pytest

from openmaas import AsyncClient, Client
from openmaas.sdk import APIConnectionError, InternalServerError, ServiceUnavailableError
from tests.unit.sdk.test_client import dataset, deployment, organization

Answer = httpx.Response | Exception


class Server:
    """Answers requests from a script, one answer per request (the last one repeats)."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(
            answer.status_code, headers=answer.headers, content=answer.content
        )  # a fresh one


def each_client(
    server: Server, use: Callable[[Any], Any], **options: Any
) -> Iterator[tuple[list[httpx.Request], list[float], Any]]:
    """For `Client`, then `AsyncClient`: the requests the server saw, the waits between them, and
    what `use(client)` gave (or raised)."""
    transport = httpx.MockTransport(server)
    for make in (Client, AsyncClient):
        server.requests = []
        waits: list[float] = []
        client = make("http://om", "om-key", transport=transport, **options)

        if make is Client:
            client._sender.sleep = waits.append
            try:
                outcome: Any = use(client)
            except Exception as exc:
                outcome = exc
            client.close()
        else:

            async def wait(seconds: float, waits: list[float] = waits) -> None:
                waits.append(seconds)

            client._sender.sleep = wait

            async def awaited(client: AsyncClient = client) -> Any:
                try:
                    result = use(client)
                    return await result if isawaitable(result) else result
                except Exception as exc:
                    return exc
                finally:
                    await client.close()

            outcome = asyncio.run(awaited())
        yield server.requests, waits, outcome


def status(code: int, **headers: str) -> httpx.Response:
    body = {"error": {"message": f"status {code}", "type": "server_error", "param": None, "code": None}}
    return httpx.Response(code, json=body, headers=headers)


def test_a_get_is_retried_after_503_and_500_waiting_as_retry_after_says() -> None:
    server = Server(
        status(503, **{"retry-after": "2"}), status(500), httpx.Response(200, json=deployment("a", "m"))
    )
    for requests, waits, result in each_client(server, lambda c: c.deployments.get("a")):
        assert result.name == "a" and len(requests) == 3
        assert waits[0] == 2.0
        assert 0.75 <= waits[1] <= 1.0  # the second retry's backoff, 1 s less up to 25% jitter


def test_the_attempts_are_bounded_by_max_retries_and_the_last_error_is_raised() -> None:
    for max_retries, attempts in ((None, 3), (0, 1), (5, 6)):
        options = {} if max_retries is None else {"max_retries": max_retries}
        server = Server(status(503))
        for requests, waits, outcome in each_client(server, lambda c: c.me(), **options):
            assert isinstance(outcome, ServiceUnavailableError)
            assert len(requests) == attempts and len(waits) == attempts - 1


def test_the_backoff_doubles_from_half_a_second_up_to_eight_with_jitter() -> None:
    server = Server(status(500))
    for _, waits, outcome in each_client(server, lambda c: c.me(), max_retries=7):
        assert isinstance(outcome, InternalServerError)
        for wait, ceiling in zip(waits, (0.5, 1, 2, 4, 8, 8, 8), strict=True):
            assert 0.75 * ceiling <= wait <= ceiling
        assert len(set(waits)) > 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"}, None),  # in the past: backoff instead
        ({"retry-after": "3600"}, None),  # longer than a minute: backoff instead
    ],
)
def test_retry_after_in_milliseconds_or_out_of_range(headers: dict[str, str], expected: float | None) -> None:
    server = Server(status(429, **headers), httpx.Response(200, json=organization("acme")))
    for requests, waits, _ in each_client(server, lambda c: c.admin.organizations.get("acme")):
        assert len(requests) == 2
        if expected is None:
            assert 0.375 <= waits[0] <= 0.5
        else:
            assert waits == [expected]


def test_a_connection_refused_is_retried_for_any_request() -> None:
    """Refused: the request never reached the server, so even a predict goes again."""
    refused = httpx.ConnectError("refused")
    answer = {"deployment": "a", "model": "m:1", "version_id": "mv_1", "task": "t", "predictions": []}
    server = Server(refused, httpx.Response(200, json=answer))
    for requests, _, result in each_client(server, lambda c: c.deployments.predict("a", [{"x": 1}])):
        assert result.deployment == "a" and len(requests) == 2


def test_a_post_that_may_have_been_done_is_not_retried_without_an_idempotency_key() -> None:
    for answer in (status(500), status(502), httpx.ReadTimeout("slow")):
        server = Server(answer)
        for requests, waits, outcome in each_client(server, lambda c: c.deployments.predict("a", [{"x": 1}])):
            assert isinstance(outcome, InternalServerError | APIConnectionError)
            assert len(requests) == 1 and waits == []


def test_a_post_refused_with_429_or_503_is_retried() -> None:
    """429 and 503 say the request was not done (DESIGN: overload answers them with Retry-After)."""
    answer = {"deployment": "a", "model": "m:1", "version_id": "mv_1", "task": "t", "predictions": []}
    server = Server(status(429, **{"retry-after": "1"}), status(503), httpx.Response(200, json=answer))
    for requests, _, result in each_client(server, lambda c: c.deployments.predict("a", [{"x": 1}])):
        assert result.deployment == "a" and len(requests) == 3


def test_a_create_carries_its_own_idempotency_key_and_a_retry_sends_the_same_one() -> None:
    server = Server(httpx.ReadTimeout("lost"), status(500), httpx.Response(201, json=deployment("a", "m")))
    seen: set[str] = set()
    for requests, _, result in each_client(server, lambda c: c.deployments.create("m", name="a")):
        assert result.name == "a" and len(requests) == 3
        keys = {r.headers["idempotency-key"] for r in requests}
        assert len(keys) == 1 and len(next(iter(keys))) >= 20
        seen |= keys
    assert len(seen) == 2  # a new key per call, the same one across its retries


def test_a_key_given_by_the_caller_is_kept() -> None:
    server = Server(status(500), httpx.Response(201, json=organization("acme")))
    for requests, _, _ in each_client(
        server, lambda c: c.admin.organizations.create("acme", idempotency_key="mine")
    ):
        assert [r.headers["idempotency-key"] for r in requests] == ["mine", "mine"]


def test_an_upload_is_sent_whole_again_when_it_is_retried(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(b"a,b\n" + b"1,2\n" * 1000)
    server = Server(status(503), httpx.Response(201, json=dataset(data.stat().st_size)))
    for requests, _, result in each_client(server, lambda c: c.datasets.upload(data, name="churn")):
        assert result.id == "ds_1"
        assert [r.content for r in requests] == [data.read_bytes()] * 2
