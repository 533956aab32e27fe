"""The metering call site for served requests: every inference route reports its usage here,
exactly once per request, when its work ends (streamed or not, finished or dropped).

The billing issue's ledger plugs in behind `Platform.meter`: this function is the one place
that connects serving to it.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from openmaas.serving.directory import ServedModel
from openmaas.tenancy.auth import Principal


def usage_sink(request: Request, principal: Principal, served: ServedModel) -> Callable[[int, int], None]:
    """A callback taking (input tokens, output tokens); safe to call once, further calls are ignored."""
    platform = request.app.state.platform
    request_id: str = request.state.request_id
    called = False

    def record(input_tokens: int, output_tokens: int) -> None:
        nonlocal called
        if called:
            return
        called = True
        meter = getattr(platform, "meter", None)
        if meter is not None:
            meter.record_inference(
                request_id=request_id,
                org_id=principal.org_id,
                api_key_id=principal.key_id,
                deployment_id=served.deployment_id,
                model_version_id=served.version_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )

    return record
