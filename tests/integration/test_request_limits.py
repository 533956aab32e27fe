"""Limits on what a request may be, against a real server: uploads whose `Content-Length` is over
their limit are refused before a byte of the body is read; the request head (request line and
headers) is bounded in size and in header count; names refuse NUL and control characters."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from openmaas.api.app import create_app
from openmaas.api.http_protocol import limited_http_protocol
from openmaas.bootstrap import Platform
from tests.support.served import Served


def _raw_request(url: str, head: bytes, *, body: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send `head` (and `body`) on a fresh connection; everything the server answers before it closes
    or `timeout` passes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + body)
        return _read_answer(sock, timeout)


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    answer = b""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if b"\r\n\r\n" in answer and _complete(answer):
                break
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
    return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _status_and_error(answer: bytes) -> tuple[int, dict[str, object]]:
    assert answer, "the server answered nothing"
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body)["error"]


# --- Content-Length over an upload's limit --------------------------------------------------------


def _upload_head(path: str, key: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("path", "limit_setting"),
    [
        ("/v1/datasets?name=big&filename=big.csv", "max_dataset_bytes"),
        ("/v1/registry/imports?name=big", "max_import_bytes"),
    ],
)
def test_an_upload_declaring_more_than_its_limit_is_refused_before_its_body(
    served: Served, path: str, limit_setting: str
) -> None:
    tenant = served.tenant("acme")
    limit = getattr(served.platform.settings, limit_setting)
    started = time.monotonic()
    # Only the head is sent: a server that waited for the body would answer nothing.
    answer = _raw_request(served.url, _upload_head(path, tenant.key, limit + 1), timeout=15)
    status, error = _status_and_error(answer)
    assert status == 413 and error["code"] == "payload_too_large" and error["param"] == "file"
    assert str(limit) in str(error["message"])
    assert time.monotonic() - started < 10
    artifacts = Path(served.platform.settings.resolved_storage_url)
    assert not [p for p in artifacts.rglob("*") if p.is_file()]  # nothing left on disk
    with served.client(tenant.key) as client:
        assert client.get("/v1/datasets").json()["data"] == []
        assert client.get("/v1/registry/models").json()["data"] == []


def test_an_upload_within_its_limit_still_works(served: Served) -> None:
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        created = client.post(
            "/v1/datasets",
            params={"name": "small", "filename": "small.csv"},
            content=b"a,b\n1,2\n3,4\n",
            headers={"content-type": "application/octet-stream"},
        )
    assert created.status_code == 201, created.text


# --- The request head -----------------------------------------------------------------------------


@contextmanager
def limited_server(platform: Platform) -> Iterator[str]:
    """The app on a free port, with the HTTP protocol `openmaas serve` runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        create_app(platform),
        http=limited_http_protocol(platform.settings),
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def limited(platform: Platform) -> Iterator[str]:
    with limited_server(platform) as url:
        yield url


def _get(headers: list[tuple[str, str]], path: str = "/healthz") -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{lines}\r\n".encode()


def test_too_many_headers_is_431_naming_the_limit(limited: str, platform: Platform) -> None:
    count = platform.settings.max_header_count
    ok = _raw_request(limited, _get([(f"x-h{i}", "v") for i in range(count - 1)]))
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
    status, error = _status_and_error(_raw_request(limited, _get([(f"x-h{i}", "v") for i in range(count)])))
    assert status == 431 and error["param"] == "headers" and str(count) in str(error["message"])


def test_headers_larger_than_the_limit_are_431(limited: str, platform: Platform) -> None:
    limit = platform.settings.max_header_bytes
    ok = _raw_request(limited, _get([("x-big", "v" * (limit // 2))]))
    assert ok.startswith(b"HTTP/1.1 200"), ok[:200]
    status, error = _status_and_error(_raw_request(limited, _get([("x-big", "v" * limit)])))
    assert status == 431 and error["code"] == "request_headers_too_large"
    status, _ = _status_and_error(_raw_request(limited, _get([], path="/healthz?" + "q" * limit)))
    assert status == 431


def test_a_header_that_never_ends_is_cut_off_at_the_limit(limited: str, platform: Platform) -> None:
    """Sent in pieces, as a slow client would: the server answers once the limit is passed, and does
    not keep buffering."""
    limit = platform.settings.max_header_bytes
    host, port = limited.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nx-endless: ")
        sent = 0
        try:
            while sent < 50 * limit:
                sock.sendall(b"v" * 4096)
                sent += 4096
                time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_answer(sock, 10)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert sent < 50 * limit


def test_a_large_body_arriving_with_its_head_is_not_taken_for_headers(
    limited: str, served: Served, platform: Platform
) -> None:
    """Head and body in one read: only the head counts towards the head's limit."""
    body = json.dumps({"name": "acme", "plan": "default", "timezone": "UTC"}).encode()
    padding = b" " * (platform.settings.max_body_bytes - len(body) - 1)
    payload = body[:-1] + padding + b"}"
    head = (
        f"POST /v1/admin/organizations HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {served.admin_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    answer = _raw_request(limited, head, body=payload)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]


# --- Names ----------------------------------------------------------------------------------------

BAD_NAMES = ["ci\x00", "ci\n", "line\nbreak", "tab\there", "bell\x07", "del\x7f", "c1\x85"]


def _error(response, status: int = 422) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_with_control_characters_are_refused_naming_the_field(served: Served, name: str) -> None:
    tenant = served.tenant("acme")
    with served.admin() as admin:
        assert _error(admin.post("/v1/admin/organizations", json={"name": name}))["param"] == "name"
        assert (
            _error(admin.post("/v1/admin/organizations", json={"name": "o", "plan": name}))["param"] == "plan"
        )
        keys = f"/v1/admin/organizations/{tenant.org_id}/api_keys"
        assert _error(admin.post(keys, json={"name": name}))["param"] == "name"
        assert [o["name"] for o in admin.get("/v1/admin/organizations").json()["data"]] == ["acme"]
    with served.client(tenant.key) as client:
        assert _error(client.post("/v1/api_keys", json={"name": name}))["param"] == "name"
        assert [k["name"] for k in client.get("/v1/api_keys").json()["data"]] == ["test"]
        deployment = client.post("/v1/deployments", json={"model": "m", "name": name})
        assert _error(deployment)["param"] == "name"
        upload = client.post(
            "/v1/datasets",
            params={"name": name},
            content=b"a,b\n1,2\n",
            headers={"content-type": "application/octet-stream"},
        )
        assert _error(upload)["param"] == "name"
        for field in ("filename", "target"):
            upload = client.post(
                "/v1/datasets",
                params={"name": "d", field: name},
                content=b"a,b\n1,2\n",
                headers={"content-type": "application/octet-stream"},
            )
            assert _error(upload)["param"] == field
        assert client.get("/v1/datasets").json()["data"] == []
        imported = client.post(
            "/v1/registry/imports",
            params={"name": name},
            content=b"PK",
            headers={"content-type": "application/zip"},
        )
        assert _error(imported)["param"] == "name"
        training = client.post(
            "/v1/training_jobs", json={"task": "tabular-classification", "dataset": "d", "model": name}
        )
        assert _error(training)["param"] == "model"
        for tags in ({name: "v"}, {"k": name}):
            assert _error(client.patch("/v1/registry/versions/m:1", json={"tags": tags}))["param"] == "tags"


def test_nul_in_the_path_or_query_is_422_naming_it(served: Served) -> None:
    """`GET /v1/jobs?kind=K%00` answered 500 on PostgreSQL, whose text refuses NUL (found by
    schemathesis); a price component's model and a training target could carry one too."""
    tenant = served.tenant("acme")
    with served.client(tenant.key) as client:
        for url, param in [
            ("/v1/jobs?status=queued&kind=K%00", "kind"),
            ("/v1/audit_log?action=%00", "action"),
            ("/v1/jobs/job_%00", "path"),
            ("/v1/usage?api_key_id=key_%00x", "api_key_id"),
        ]:
            response = client.get(url)
            assert response.status_code == 422, (url, response.text)
            assert response.json()["error"]["param"] == param, url
        training = {"task": "tabular-classification", "dataset": "d", "target": "label\u0000"}
        refused = client.post("/v1/training_jobs", json=training)
        assert refused.status_code == 422 and refused.json()["error"]["param"] == "target", refused.text
    with served.admin() as admin:
        component = {"unit": "requests", "price": "1", "model": "m\u0000"}
        priced = admin.post("/v1/admin/pricebooks", json={"components": [component]})
        assert priced.status_code == 422 and priced.json()["error"]["param"] == "components.0.model"
