"""Talking to the server below httpx: requests written byte by byte on a socket (heads httpx would
refuse to send, bodies shorter than they claim), and reading our error shape from any answer."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx


def error_of(response: httpx.Response) -> tuple[int, str | None, str | None]:
    """(status, code, param) of an answer in our error shape."""
    error = response.json().get("error") or {}
    return response.status_code, error.get("code"), error.get("param")


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def raw_request(url: str, head: bytes, *, body: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send `head` (and `body`) on a fresh connection; everything the server answers before it closes
    or `timeout` passes."""
    with connect(url, timeout) as sock:
        sock.sendall(head + body)
        return read_answer(sock, timeout)


def read_answer(sock: socket.socket, timeout: float) -> bytes:
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


def status_and_error(answer: bytes) -> tuple[int, dict[str, Any]]:
    """The status of a raw answer and its error object (the body must be our JSON error shape)."""
    assert answer, "the server answered nothing"
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    content_type = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-type:")]
    assert content_type == [b"content-type: application/json"], head
    error: dict[str, Any] = json.loads(body)["error"]
    return status, error


def request_head(method: str, path: str, headers: dict[str, str] | list[tuple[str, str]]) -> bytes:
    pairs = headers.items() if isinstance(headers, dict) else headers
    lines = "".join(f"{name}: {value}\r\n" for name, value in pairs)
    return f"{method} {path} HTTP/1.1\r\nHost: test\r\n{lines}\r\n".encode("latin-1")


def server_errors(url: str) -> float:
    """How many requests the server at `url` answered, or counted, as its own failure (5xx)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("openmaas_http_requests_total{") and 'status="5' in line
    )
