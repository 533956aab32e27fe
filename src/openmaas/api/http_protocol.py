"""The HTTP/1.1 protocol `openmaas serve` runs: uvicorn's httptools protocol with a bound on the
request head (request line and headers) — its size and its number of headers.

httptools sets no limit of its own and buffers a header until its end, so a client could make the
server hold any amount of memory before a request reaches the app; uvicorn's own limit
(`h11_max_incomplete_event_size`) only applies to the slower pure-Python h11 parser. Past either
limit the answer is 431 in our error shape, and the connection closes.

The counting costs a few additions per header; the body is never looked at here (the gateway limits
bodies, see `middleware.py`).
"""

from __future__ import annotations

import sys

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from openmaas import errors
from openmaas.config import Settings


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing; answered with 431."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 32 * 1024
    max_header_count = 100

    # Per request head: bytes the parser handed over (exact), bytes read while it stayed open.
    _head_bytes = 0
    _head_received = 0
    _header_count = 0
    _head_open = False  # between a request's first byte and the end of its headers
    _began = False  # a request began in the read being parsed
    _refusal: str | None = None

    def data_received(self, data: bytes) -> None:
        # A read after which the head is still open is all head: counting those bounds what
        # httptools may be buffering (a header it has not seen the end of yet), whatever the
        # callbacks counted. The read a request begins in may hold the previous one's body: it is
        # left to the exact count.
        open_before, self._began = self._head_open, False
        super().data_received(data)
        if self._head_open and open_before and not self._began:
            self._head_received += len(data)
            if self._head_received > self.max_head_bytes:
                self._refuse(self._too_large())

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = self._began = True
        self._head_bytes = self._head_received = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.max_head_bytes:
            self._refusal = self._too_large()
            raise _HeadTooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_header_count:
            self._refusal = (
                f"The request has more than {self.max_header_count} headers, the most this server takes."
            )
            raise _HeadTooLarge
        self._head_bytes += len(name) + len(value) + 4  # as sent: "name: value\r\n"
        if self._head_bytes > self.max_head_bytes:
            self._refusal = self._too_large()
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def _too_large(self) -> str:
        return f"The request line and headers exceed {self.max_head_bytes} bytes, the most this server takes."

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any parser error, ours included, through here, while it handles the error.
        if self._refusal is not None:
            self._refuse(self._refusal)
            return
        reason = str(sys.exc_info()[1] or msg).rstrip(".")
        message = f"The request is not valid HTTP/1.1: {reason}."
        error = errors.InvalidRequest(message, param=_part_named(reason), code="malformed_request")
        self._answer(b"400 Bad Request", error)

    def _refuse(self, message: str) -> None:
        error = errors.InvalidRequest(message, param="headers", code="request_headers_too_large")
        self._answer(b"431 Request Header Fields Too Large", error)

    def _answer(self, status: bytes, error: errors.OpenMaaSError) -> None:
        if self.transport.is_closing():
            return
        body = orjson.dumps(error.to_dict())
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _part_named(reason: str) -> str | None:
    """The part of the request a parser error is about (llhttp's reasons: "Invalid header value
    char", "Duplicate Content-Length", "Invalid char in url path", …)."""
    lowered = reason.lower()
    if "content-length" in lowered:
        return "Content-Length"
    for word, part in (("header", "headers"), ("url", "path"), ("method", "method")):
        if word in lowered:
            return part
    return None


def limited_http_protocol(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` option, with the limits `settings` give."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"max_head_bytes": settings.max_header_bytes, "max_header_count": settings.max_header_count},
    )
