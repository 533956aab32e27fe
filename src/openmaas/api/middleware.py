"""The gateway around every request, as one pure-ASGI middleware (no BaseHTTPMiddleware: it costs
a task and a copy per request): request ids, the body-size limit, Prometheus metrics, the request
log, the audit log for mutating calls, and a JSON 500 for anything uncaught. Time comes from the
platform's clock.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from openmaas import errors, logs
from openmaas.api.request_log import RequestLog
from openmaas.clock import Clock
from openmaas.ids import new_id
from openmaas.tenancy import audit

log = logging.getLogger("openmaas.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# A handler tried before the app: answers the request and returns True, or returns False untouched.
FastPath = Callable[[Scope, Receive, Send], Awaitable[bool]]

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._:-]{1,100}$")
AUDIT_OFF = {"x-audit": False}  # `openapi_extra` for mutating routes that are not management calls
# `openapi_extra` for routes that stream their body and enforce their own size limit (uploads).
STREAMED_BODY = {"x-streamed-body": True}


_LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LE_LABELS = (*map(floatToGoString, _LATENCY_BOUNDS), "+Inf")  # "1.0", as prometheus_client writes them
_MAX_SERIES = 10_000  # odd methods from clients must not grow the series without bound


class Metrics:
    """HTTP request counts and latency histograms, by method, route and status.

    Counted in plain dicts on the event loop (the gateway's only thread) and turned into Prometheus
    families when scraped: `prometheus_client`'s own Counter and Histogram take a lock and walk
    the buckets in Python on every request."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.registry = CollectorRegistry()
        self._counts: dict[tuple[str, str, int], int] = {}
        self._latency: dict[tuple[str, str], list[float]] = {}  # bucket counts..., then the sum
        # When each series began: the `_created` samples prometheus_client's own types expose.
        self._created: dict[tuple[str | int, ...], float] = {}
        self.registry.register(_HttpCollector(self))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency."""
        key = (method, route, status)
        count = self._counts.get(key)
        if count is None and len(self._counts) >= _MAX_SERIES:
            key = ("OTHER", "<overflow>", status)  # statuses are few: this stays bounded
            count = self._counts.get(key)
        if count is None:
            self._created[key] = self.clock.now().timestamp()
        self._counts[key] = (count or 0) + 1
        histogram = self._latency.get(key[:2])
        if histogram is None:
            histogram = self._latency[key[:2]] = [0.0] * (len(_LATENCY_BOUNDS) + 2)
            self._created[key[:2]] = self.clock.now().timestamp()
        histogram[bisect.bisect_left(_LATENCY_BOUNDS, seconds)] += 1
        histogram[-1] += seconds


class _HttpCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "openmaas_http_requests",
            "HTTP requests by route and status",
            labels=["method", "route", "status"],
        )
        created = self._metrics._created
        for (method, route, status), count in list(self._metrics._counts.items()):
            requests.add_metric([method, route, str(status)], count, created=created[(method, route, status)])
        yield requests
        latency = HistogramMetricFamily(
            "openmaas_http_request_duration_seconds",
            "HTTP request latency by route",
            labels=["method", "route"],
        )
        for (method, route), histogram in list(self._metrics._latency.items()):
            cumulative, buckets = 0.0, []
            for bound, in_bucket in zip(_LE_LABELS, histogram[:-1], strict=True):
                cumulative += in_bucket
                buckets.append((bound, cumulative))
            latency.add_metric([method, route], buckets, histogram[-1])
            latency.add_sample(
                f"{latency.name}_created", {"method": method, "route": route}, created[(method, route)]
            )
        yield latency


AuditSink = Callable[[audit.AuditRecord], None]


class GatewayMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: Metrics,
        audit_sink: AuditSink,
        clock: Clock,
        routes: list[Any] | None = None,
        fast_paths: list[FastPath] | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        self.app = app
        self.request_log = request_log
        self.fast_paths = fast_paths or []
        self.routes = routes or []
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.audit_sink = audit_sink
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock.monotonic()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        bound = logs.bind_request(state)  # metering notes what the request used, for its log line
        id_header = (b"x-request-id", request_id.encode())
        status = 500
        response_started = False
        mutating = scope["method"] in _MUTATING
        audited = False  # decided when the response starts: by then the route and caller are known
        held: list[Message] = []

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started, audited
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
                audited = mutating and _audits(scope)
            if audited:
                # Hold the (small, JSON) response until its audit entry is written, so a crash never
                # leaves a served mutation unaudited.
                held.append(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    await run_in_threadpool(self.audit_sink, _audit_record(scope, status, held))
                    for part in held:
                        await send(part)
                    response_started = True
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            if b"%00" in scope["query_string"] or "\x00" in scope["path"]:
                raise _nul_in_the_url(scope)
            receive = await self._limit_body(scope, receive)
            for fast_path in self.fast_paths:
                if await fast_path(scope, receive, send_wrapper):
                    return
            await self.app(scope, receive, send_wrapper)
        except errors.OpenMaaSError as exc:
            await _send_error(send, exc, id_header)
            status = exc.status
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", scope["method"], scope["path"], request_id)
            if status == 500 and response_started:
                return  # FastAPI's error middleware already answered in our error shape
            if response_started:
                raise
            status = 500
            await _send_error(send, errors.InternalError("Internal server error."), id_header)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "<unmatched>")
            ended = self.clock.monotonic()
            self.metrics.observe(scope["method"], label, status, ended - started)
            if self.request_log is not None:
                method = scope["method"]
                self.request_log.add(ended, ended - started, request_id, method, label, status, state)
            logs.unbind_request(bound)

    async def _limit_body(self, scope: Scope, receive: Receive) -> Receive:
        """Reject bodies over the limit with 413, by `Content-Length` or by counting as they come."""
        if scope["method"] not in _MUTATING:
            return receive
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise errors.InvalidRequest("Invalid Content-Length header.", param="Content-Length")
            if int(declared) > self.max_body_bytes and not self._streams_body(scope):
                raise _too_large(self.max_body_bytes)
            return receive
        if self._streams_body(scope):
            return receive
        # No length given (chunked): read it here, within the limit, then replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        return replayed

    def _streams_body(self, scope: Scope) -> bool:
        """Does the request go to a route marked STREAMED_BODY (`self.routes` holds those only)?

        Asked only of large or chunked bodies."""
        return any(route.matches(scope)[0] == Match.FULL for route in self.routes)


def declared_length(request: Any) -> int | None:
    """A request's `Content-Length` (checked to be digits by the gateway), for the STREAMED_BODY
    routes that refuse an upload over their own limit before reading it."""
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None else None


def _nul_in_the_url(scope: Scope) -> errors.ValidationFailed:
    """A NUL in the path or a query parameter: PostgreSQL's text refuses it (a 500 deep in a query),
    and no name or id holds one."""
    query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    param = next((name for name, value in query if "\x00" in name + value), "path")
    return errors.ValidationFailed(f"{param} must not contain NUL characters.", param=param)


def _too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.", param="body")


def _audits(scope: Scope) -> bool:
    route = scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    # Unauthenticated attempts are not audited: a flood of them must not become database writes.
    authenticated = scope.get("state", {}).get("principal") is not None
    return route is not None and authenticated and bool(extra.get("x-audit", True))


def _audit_record(scope: Scope, status: int, messages: list[Message]) -> audit.AuditRecord:
    state = scope.get("state", {})
    principal = state.get("principal")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    target_id, error_code = _target_and_error(body)
    path_params = scope.get("path_params") or {}
    if target_id is None and path_params:
        target_id = str(list(path_params.values())[-1])
    route = scope.get("route")
    return audit.AuditRecord(
        org_id=state.get("audit_org_id", getattr(principal, "org_id", None)),
        actor_key_id=getattr(principal, "key_id", None),
        action=getattr(route, "name", None) or "unknown",
        method=scope["method"],
        path=scope["path"],
        target_id=target_id,
        request_id=state["request_id"],
        status_code=status,
        error_code=error_code,
    )


def _target_and_error(body: bytes) -> tuple[str | None, str | None]:
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    if isinstance(parsed.get("error"), dict):
        return None, parsed["error"].get("code")
    target = parsed.get("id")
    return (str(target) if target is not None else None), None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id" and _REQUEST_ID_RE.match(value):
            return str(value.decode())
    return new_id("req_")


async def _send_error(send: Send, error: errors.OpenMaaSError, id_header: tuple[bytes, bytes]) -> None:
    body = orjson.dumps(error.to_dict())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        id_header,
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
