"""The error tree's JSON shape and headers, and how validation problems name their field."""

from __future__ import annotations

import pickle

from fastapi.exceptions import RequestValidationError

from openmaas import errors
from openmaas.api.errors import validation_error
from openmaas.serving.signatures import non_finite_output


def test_every_error_has_the_openai_shape() -> None:
    error = errors.Conflict("taken", param="name")
    assert error.status == 409
    assert error.to_dict() == {
        "error": {"message": "taken", "type": "conflict_error", "param": "name", "code": "conflict"}
    }


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert errors.ServiceUnavailable("busy", retry_after=0.2).headers["Retry-After"] == "1"
    assert errors.ServiceUnavailable("busy", retry_after=2.5).headers["Retry-After"] == "3"
    assert errors.RateLimited("slow down", retry_after=7).headers["Retry-After"] == "7"


def test_rate_limit_type_names_the_limit() -> None:
    body = errors.RateLimited("too many tokens", limit_type="tokens").to_dict()["error"]
    assert body["type"] == "tokens" and body["code"] == "rate_limit_exceeded"


def test_validation_error_names_the_nested_field() -> None:
    exc = RequestValidationError(
        [
            {
                "type": "int_parsing",
                "loc": ("body", "items", 2, "count"),
                "msg": "Input should be a valid integer",
            }
        ]
    )
    error = validation_error(exc, "application/json")
    assert error.status == 422
    assert error.param == "items.2.count"
    assert "items.2.count" in error.message


def test_missing_field_and_bad_json_codes() -> None:
    missing = validation_error(
        RequestValidationError([{"type": "missing", "loc": ("body", "name"), "msg": "Field required"}]),
        "application/json",
    )
    assert (missing.param, missing.code) == ("name", "missing_field")
    bad = validation_error(
        RequestValidationError([{"type": "json_invalid", "loc": ("body", 3), "msg": "JSON decode error"}]),
        "application/json",
    )
    assert (bad.status, bad.code) == (400, "invalid_json")


def test_non_json_body_is_415() -> None:
    exc = RequestValidationError(
        [{"type": "model_attributes_type", "loc": ("body",), "msg": "Input should be a valid dictionary"}]
    )
    assert validation_error(exc, "application/x-www-form-urlencoded").status == 415


def test_errors_cross_a_pickle_whole() -> None:
    """Ray replicas send errors back pickled: each keeps its class, status, code and fields, also
    one whose `__init__` takes positional fields (the default pickling called it with the message)."""
    sent = [
        non_finite_output(3).shifted(2),
        errors.ServiceUnavailable("full", retry_after=2.5, code="queue_full"),
        errors.InvalidFile("bad", issues=[{"code": "x", "message": "y", "line": 1}]),
        errors.RateLimited("slow", limit_type="tokens"),
    ]
    for error in sent:
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and back.__dict__ == error.__dict__
        assert back.to_dict() == error.to_dict() and str(back) == str(error)
    assert pickle.loads(pickle.dumps(sent[0])).param == "inputs.5"
