"""Parsing of user-given parameter dicts (JSON, or strings from a CLI) into frozen dataclasses.

Shared by preprocessing specs and training configs so every bad value is reported the same way:
a ValidationFailed whose `param` names the offending field (dotted for nested sections).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from openmaas.errors import ValidationFailed

T = TypeVar("T")


def require(condition: bool, param: str, message: str) -> None:
    """Raise ValidationFailed naming `param` unless `condition` holds."""
    if not condition:
        raise ValidationFailed(f"{param} {message}", param=param)


def unknown_parameter(key: str, known: Sequence[str], *, param: str, owner: str = "") -> ValidationFailed:
    """The error for a parameter that `known` lacks: the closest name, when one is close (a typo),
    and every name, so that nobody has to guess."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    of = f" of {owner}" if owner else ""
    return ValidationFailed(
        f"unknown parameter {key!r}{hint} The parameters{of} are: {', '.join(known)}.",
        param=param,
        code="unknown_parameter",
    )


def parse_dataclass(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build `cls` from `data`, checking names and types; unknown keys are errors."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise unknown_parameter(key, names, param=prefix + key, owner=prefix.rstrip("."))
    values = {key: _coerce(value, hints[key], prefix + key) for key, value in data.items()}
    try:
        return cls(**values)
    except ValidationFailed as exc:
        param = prefix + exc.param if exc.param else None
        message = (
            exc.message if not prefix or not exc.param else exc.message.replace(exc.param, param or "", 1)
        )
        raise ValidationFailed(message, param=param, code=exc.code) from None


def to_dict(instance: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (possibly nested) config dataclass; tuples become lists."""
    return _jsonable(dataclasses.asdict(instance))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _coerce(value: Any, kind: Any, param: str) -> Any:
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [option for option in options if option is not type(None)]
        return _coerce(value, inner, param)
    if origin is Literal:
        choices = get_args(kind)
        require(value in choices, param, f"must be one of {list(choices)}, not {value!r}")
        return value
    if origin is tuple:
        require(isinstance(value, list | tuple), param, "must be a list")
        (inner, _ellipsis) = get_args(kind)
        return tuple(_coerce(item, inner, f"{param}[{i}]") for i, item in enumerate(value))
    if dataclasses.is_dataclass(kind):
        require(isinstance(value, Mapping), param, "must be an object")
        return parse_dataclass(kind, value, prefix=param + ".")  # type: ignore[arg-type]
    return _coerce_scalar(value, kind, param)


def _coerce_scalar(value: Any, kind: Any, param: str) -> Any:
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        require(isinstance(value, bool), param, f"must be true or false, not {value!r}")
        return value
    if kind in (int, float):
        if isinstance(value, str):
            try:
                value = kind(value)
            except ValueError:
                raise ValidationFailed(f"{param} must be a number, not {value!r}", param=param) from None
        ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
        require(
            ok and not isinstance(value, bool),
            param,
            f"must be {'an integer' if kind is int else 'a number'}",
        )
        return kind(value)
    if kind is str:
        require(isinstance(value, str), param, "must be a string")
        return value
    raise TypeError(f"unsupported parameter type {kind!r} for {param}")
