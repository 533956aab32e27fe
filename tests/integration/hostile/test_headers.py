"""The request head against a real server running `openmaas serve`'s HTTP protocol: its size and
header count are bounded (431), a head HTTP does not allow (control characters, a Content-Length
that is not a length) is a 400 in our error shape naming what is wrong, and a body shorter than its
Content-Length leaves nothing behind when the client goes away."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.integration.hostile.wire import (
    connect,
    raw_request,
    read_answer,
    request_head,
    status_and_error,
)
from tests.support.leftovers import nothing_left
from tests.support.served import Served, Tenant


def _get(headers: list[tuple[str, str]], path: str = "/healthz") -> bytes:
    return request_head("GET", path, headers)


def test_too_many_headers_is_431_naming_the_limit(served: Served) -> None:
    count = served.platform.settings.max_header_count
    ok = raw_request(served.url, _get([(f"x-h{i}", "v") for i in range(count - 1)]))
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
    status, error = status_and_error(raw_request(served.url, _get([(f"x-h{i}", "v") for i in range(count)])))
    assert status == 431 and error["param"] == "headers" and str(count) in str(error["message"])


def test_headers_larger_than_the_limit_are_431(served: Served) -> None:
    limit = served.platform.settings.max_header_bytes
    ok = raw_request(served.url, _get([("x-big", "v" * (limit // 2))]))
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
    status, error = status_and_error(raw_request(served.url, _get([("x-big", "v" * limit)])))
    assert status == 431 and error["code"] == "request_headers_too_large"
    status, _ = status_and_error(raw_request(served.url, _get([], path="/healthz?" + "q" * limit)))
    assert status == 431


def test_a_header_that_never_ends_is_cut_off_at_the_limit(served: Served) -> None:
    """Sent in pieces, as a slow client would: the server answers once the limit is passed, and does
    not keep buffering."""
    limit = served.platform.settings.max_header_bytes
    with connect(served.url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nx-endless: ")
        sent = 0
        try:
            while sent < 50 * limit:
                sock.sendall(b"v" * 4096)
                sent += 4096
                time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock, 10)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert sent < 50 * limit


def test_a_large_body_arriving_with_its_head_is_not_taken_for_headers(served: Served) -> None:
    """Head and body in one read: only the head counts towards the head's limit."""
    body = json.dumps({"name": "large-body", "plan": "default", "timezone": "UTC"}).encode()
    padding = b" " * (served.platform.settings.max_body_bytes - len(body) - 1)
    payload = body[:-1] + padding + b"}"
    head = request_head(
        "POST",
        "/v1/admin/organizations",
        {
            "Authorization": f"Bearer {served.admin_key}",
            "Content-Type": "application/json",
            "Content-Length": str(len(payload)),
        },
    )
    answer = raw_request(served.url, head, body=payload)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]


# --- Heads HTTP does not allow: 400 in our error shape, naming what is wrong ----------------------

CONTROL_IN_HEADERS = {
    "value_nul": ("X-Note", "a\x00b"),
    "value_control": ("X-Note", "a\x01b"),
    "value_delete": ("X-Note", "a\x7fb"),
    "name_control": ("X-N\x01ote", "a"),
    "idempotency_key": ("Idempotency-Key", "k\x1b[31m"),
}


@pytest.mark.parametrize("header", CONTROL_IN_HEADERS.values(), ids=CONTROL_IN_HEADERS.keys())
def test_a_header_with_control_characters_is_400_naming_the_headers(
    served: Served, tenant: Tenant, header: tuple[str, str]
) -> None:
    body = b'{"name": "k"}'
    headers = [
        ("Authorization", f"Bearer {tenant.key}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        header,
    ]
    with nothing_left(served.platform):
        answer = raw_request(served.url, request_head("POST", "/v1/api_keys", headers), body=body)
    status, error = status_and_error(answer)
    assert (status, error["code"], error["param"]) == (400, "malformed_request", "headers"), error


BOGUS_LENGTHS = {
    "negative": ["-5"],
    "not_a_number": ["abc"],
    "signed": ["+13"],
    "past_64_bits": ["99999999999999999999999"],
    "twice": ["13", "14"],
}


@pytest.mark.parametrize("lengths", BOGUS_LENGTHS.values(), ids=BOGUS_LENGTHS.keys())
def test_a_content_length_that_is_not_a_length_is_400_naming_it(
    served: Served, tenant: Tenant, lengths: list[str]
) -> None:
    body = b'{"name": "k"}'
    headers = [("Authorization", f"Bearer {tenant.key}"), ("Content-Type", "application/json")]
    headers += [("Content-Length", length) for length in lengths]
    with nothing_left(served.platform):
        for path in ("/v1/api_keys", "/v1/datasets?name=d"):
            answer = raw_request(served.url, request_head("POST", path, headers), body=body)
            status, error = status_and_error(answer)
            assert (status, error["code"], error["param"]) == (400, "malformed_request", "Content-Length")


def test_a_content_length_beside_chunked_encoding_is_400(served: Served, tenant: Tenant) -> None:
    headers = {
        "Authorization": f"Bearer {tenant.key}",
        "Content-Length": "13",
        "Transfer-Encoding": "chunked",
    }
    with nothing_left(served.platform):
        answer = raw_request(
            served.url, request_head("POST", "/v1/datasets?name=d", headers), body=b"0\r\n\r\n"
        )
    status, error = status_and_error(answer)
    assert (status, error["code"], error["param"]) == (400, "malformed_request", "Content-Length")


@pytest.mark.parametrize("path", ["/v1/api_keys", "/v1/datasets?name=short&filename=d.csv"])
def test_a_body_shorter_than_its_content_length_leaves_nothing_when_the_client_leaves(
    served: Served, tenant: Tenant, path: str
) -> None:
    """The server waits for the rest, as HTTP says; when the client gives up, nothing it sent stays."""
    body = b'{"name": "k"}' if path == "/v1/api_keys" else b"a,b\n" + b"1,2\n" * 10_000
    headers = {
        "Authorization": f"Bearer {tenant.key}",
        "Content-Type": "application/json" if path == "/v1/api_keys" else "application/octet-stream",
        "Content-Length": str(len(body) + 1000),
    }
    with nothing_left(served.platform, settle_s=5), connect(served.url) as sock:
        sock.sendall(request_head("POST", path, headers) + body)
        sock.shutdown(socket.SHUT_WR)
        assert read_answer(sock, 1.0) == b""  # no answer to a request that never ended
    with served.client(tenant.key) as client:
        assert client.get("/v1/datasets").json()["data"] == []
    # A client leaving is not the server failing: the package's check of 5xx answers covers that.
