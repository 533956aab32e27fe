"""Deployments: the list, one deployment's state, traffic and events, and a playground for
trained models (a form made from the model's input signature; the prediction shown).

The playground calls the inference use-case the predict route calls (`platform.inference`), as
the signed-in key: same scope (`inference`), same metering, so its requests appear in usage.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response

from openmaas import errors
from openmaas.console.deployment_metrics import charts
from openmaas.console.sessions import SignedIn
from openmaas.console.web import PREFIX, ConsoleRoute, can, platform_of, render, signed_form, signed_in
from openmaas.registry.tables import ModelVersion
from openmaas.serving import service
from openmaas.serving.explain.explainer import EXPLAINABLE
from openmaas.serving.traffic import input_signature
from openmaas.tasks import TEXT_GENERATION
from openmaas.tenancy import scopes as scope_rules

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

# The playground's requests are inference, not management calls: not audited, as the API's.
_NOT_AUDITED = {"x-audit": False}
_EXPLAIN_STEPS = 32  # the playground's explanations: quick, and their convergence delta says how exact
_MAX_BARS = 20
After = Annotated[str | None, Query(max_length=100)]


@dataclass(frozen=True)
class Field:
    """One input of the playground's form."""

    name: str
    label: str
    kind: str  # number | choice | text | textarea | file
    choices: tuple[str, ...] = ()  # a choice's options; a file's accepted types


@router.get("/deployments", name="console.deployments")
def deployments_page(
    request: Request, after: Annotated[str | None, Query(max_length=100)] = None
) -> Response:
    signed = signed_in(request)
    signed.principal.require("deployments:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    limit = platform.settings.default_page_limit
    with platform.db.read_session() as session:
        page = service.list_page(
            session, org_id, limit=limit, after=after, loaded=platform.replicas.loaded_version
        )
    return render(request, "deployments.html", signed, page=page, after=after)


@router.get("/deployments/{name}", name="console.deployment")
def deployment_page(request: Request, name: str) -> Response:
    signed = signed_in(request)
    return _detail(request, signed, name)


@router.post("/deployments/{name}/predict", name="console.deployments.predict", openapi_extra=_NOT_AUDITED)
async def predict(request: Request, name: str) -> Response:
    """Predict one input of the form; with `explain`, also explain it (integrated gradients)."""
    signed, form = await signed_form(request)
    platform = platform_of(request)
    fields, explainable = await run_in_threadpool(_form_fields, request, signed, name)
    values = {f.name: str(form.get(f"in_{f.name}") or "") for f in fields if f.kind != "file"}
    result = explanation = error = None
    try:
        row, picture = await _row(fields, values, form)
        body = orjson.dumps({"inputs": [row]})
        answer = await platform.inference.predict(
            signed.principal, name, body, None, request.state.request_id, None
        )
        result = answer.result[0] if answer.result else None
        if form.get("explain") and explainable:
            body = orjson.dumps({"inputs": [row], "steps": _EXPLAIN_STEPS})
            explained = await platform.inference.explain(
                signed.principal, name, body, None, f"{request.state.request_id}-explain", None
            )
            explanation = _drawn(explained.result.explanations[0], picture)
    except errors.OpenMaaSError as exc:
        error = exc
    return await run_in_threadpool(
        lambda: _detail(
            request,
            signed,
            name,
            values=values,
            result=result,
            explanation=explanation,
            error=error,
            status=error.status if error else 200,
        )
    )


def _detail(request: Request, signed: SignedIn, name: str, *, status: int = 200, **context: Any) -> Response:
    signed.principal.require("deployments:read")
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        row = service.get(session, org_id, name)
        deployment = service.public(row, platform.replicas.loaded_version)
        events = service.events(
            session, org_id, row.id, limit=platform.settings.default_page_limit, after=None
        )
        version = session.get(ModelVersion, row.version_id)
        signature = input_signature(version) if version is not None else None
    fields = _fields(signature)
    explainable = deployment.task in EXPLAINABLE
    inference = can(signed, scope_rules.INFERENCE)
    playground = fields is not None and inference
    chat = deployment.task == TEXT_GENERATION and inference
    return render(
        request,
        "deployment.html",
        signed,
        status=status,
        deployment=deployment,
        events=events,
        fields=fields or [],
        playground=playground,
        chat=chat,
        signature_kind=(signature or {}).get("kind"),
        explainable=explainable,
        config=json.dumps(deployment.config, indent=2, sort_keys=True),
        load=charts(platform.deployment_metrics.series(org_id, name)),
        load_url=f"{PREFIX}/deployments/{name}/metrics.json",
        **{"values": {}, "result": None, "explanation": None, "error": None, **context},
    )


def _form_fields(request: Request, signed: SignedIn, name: str) -> tuple[list[Field], bool]:
    """The playground form's fields, and whether the deployment's model can be explained."""
    signed.principal.require(scope_rules.INFERENCE)
    org_id = signed.principal.require_org()
    platform = platform_of(request)
    with platform.db.read_session() as session:
        row = service.get(session, org_id, name)
        version = session.get(ModelVersion, row.version_id)
        fields = _fields(input_signature(version) if version is not None else None)
        explainable = version is not None and version.task in EXPLAINABLE
    if fields is None:
        raise errors.InvalidRequest(
            "This model's inputs cannot be typed in a form; call /v1/deployments/{name}/predict.",
            param="inputs",
        )
    return fields, explainable


def _fields(signature: Any) -> list[Field] | None:
    """The form for a signature: one field per tabular feature, or one text; None for inputs a
    form cannot hold (images, audio, tensors)."""
    if not isinstance(signature, dict):
        return None
    kind = signature.get("kind")
    if kind == "tabular":
        return [
            Field(f["name"], f["name"], "choice", tuple(f["categories"]))
            if f.get("categories")
            else Field(f["name"], f["name"], "number" if f.get("type") == "numeric" else "text")
            for f in signature.get("features", [])
        ]
    if kind == "text":
        return [Field("text", "Text", "textarea")]
    if kind == "user_ids":
        return [Field("user", "User id", "text")]
    if kind == "image":
        return [Field("image", "Image (PNG or JPEG)", "file", ("image/png", "image/jpeg"))]
    if kind == "audio":
        return [Field("audio", "Sound (WAV)", "file", ("audio/wav", ".wav"))]
    return None


async def _row(fields: list[Field], values: dict[str, str], form: FormData) -> tuple[Any, str | None]:
    """The form's input row, and for an image its data URI (drawn under its saliency map)."""
    if fields[0].kind != "file":
        return _input(fields, values), None
    field = fields[0]
    upload = form.get(f"in_{field.name}")
    data = await upload.read() if isinstance(upload, UploadFile) else b""
    if not data:
        raise errors.ValidationFailed(f"{field.name}: choose a file to send.", param=field.name)
    encoded = base64.b64encode(data).decode()
    if field.name != "image":
        return encoded, None
    kind = upload.content_type if isinstance(upload, UploadFile) and upload.content_type else "image/png"
    return encoded, f"data:{kind if kind.startswith('image/') else 'image/png'};base64,{encoded}"


def _drawn(explanation: dict[str, Any], picture: str | None) -> dict[str, Any]:
    """An explanation as the page draws it: bars per feature or token (strongest first, widths
    in 5% steps of the strongest, the sign kept), or a saliency map over the image."""
    scores = explanation.get("attributions") or {}
    drawn: dict[str, Any] = {
        "target": explanation.get("target"),
        "delta": explanation.get("convergence_delta"),
    }
    if "heatmap_png" in scores:
        drawn["heatmap"] = f"data:image/png;base64,{scores['heatmap_png']}"
        drawn["picture"] = picture
        return drawn
    if "tokens" in scores:
        pairs = list(zip(scores.get("tokens") or [], scores.get("scores") or [], strict=False))
    else:
        pairs = [(k, v) for k, v in scores.items() if isinstance(v, int | float)]
    pairs = sorted(pairs, key=lambda p: abs(p[1]), reverse=True)[:_MAX_BARS]
    peak = max((abs(v) for _, v in pairs), default=0.0) or 1.0
    drawn["bars"] = [
        {"label": str(k), "score": float(v), "width": round(abs(v) / peak * 20) * 5, "positive": v >= 0}
        for k, v in pairs
    ]
    return drawn


def _input(fields: list[Field], values: dict[str, str]) -> Any:
    """The form's values as one input row of the predict request; an empty number is a missing
    value (the model imputes it), a number that does not parse is refused naming its field."""
    if len(fields) == 1 and fields[0].name in ("text", "user"):
        return values[fields[0].name]
    row: dict[str, Any] = {}
    for field in fields:
        text = values[field.name].strip()
        if field.kind == "number":
            try:
                row[field.name] = float(text) if text else None
            except ValueError:
                raise errors.ValidationFailed(f"{field.name}: expected a number.", param=field.name) from None
        else:
            row[field.name] = text or None
    return row
