"""Checking predict inputs against a trained model's input signature, on the event loop.

Each family's `InputCheck.check(inputs)` returns the rows the model takes (base64 decoded to
bytes, ids as strings) or raises `ValidationFailed` whose `param` names the row and field
(`inputs.3.age`). Checks are cheap, per-value type tests; anything that needs real work (decoding an
image, tokenising) happens in the replica thread. Nothing here runs a model; `check_finite` checks
what one answered before it is served (NaN and infinity are no answer, and JSON has neither).
"""

from __future__ import annotations

import base64
import binascii
import operator
from collections.abc import Callable
from typing import Any, Protocol

import torch

from openmaas.errors import ValidationFailed

MAX_TEXT_CHARS = 100_000
MAX_NAMED = 10  # names an error lists (missing or unknown fields), then "and N more"


class InputCheck(Protocol):
    def check(self, inputs: list[Any]) -> list[Any]: ...


class InvalidRow(ValidationFailed):
    """A problem with one row of a request (or one of its fields): `param` is `inputs.<row>` or
    `inputs.<row>.<field>`. A request run in slices renumbers it to its own rows (`shifted`)."""

    def __init__(
        self, index: int, detail: str, field: str | None = None, code: str = "invalid_input"
    ) -> None:
        self.index, self.detail, self.field = index, detail, field
        param = f"inputs.{index}" + (f".{field}" if field is not None else "")
        super().__init__(f"{param}: {detail}", param=param, code=code)

    def shifted(self, offset: int) -> InvalidRow:
        """The same problem, for a slice whose first row is row `offset` of the request."""
        return InvalidRow(self.index + offset, self.detail, self.field, str(self.code))


def non_finite_output(index: int) -> InvalidRow:
    """The model answered row `index` with NaN or infinity, which is no answer to serve."""
    return InvalidRow(
        index,
        "the model's output for this row is not a finite number; its values are too far from the "
        "data the model was trained on for it to answer.",
        code="non_finite_output",
    )


def check_finite(outputs: torch.Tensor) -> None:
    """`non_finite_output` naming the first row (axis 0) of `outputs` that holds NaN or infinity."""
    if bool(torch.isfinite(outputs).all()):  # one reduction in the common case
        return
    finite = torch.isfinite(outputs.reshape(len(outputs), -1)).all(dim=1)
    raise non_finite_output(int((~finite).nonzero()[0]))


def _row_error(index: int, message: str, field: str | None = None) -> InvalidRow:
    return InvalidRow(index, message, field)


def values_of(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row's values of `names`, in order, as a tuple: one C call per row."""
    if len(names) == 1:
        name = names[0]
        return lambda row: (row[name],)
    return operator.itemgetter(*names) if names else (lambda row: ())


class TabularCheck:
    """Rows of named features: every feature present (null means missing, imputed as in
    training), numbers for numeric features, strings or numbers for categorical ones."""

    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.names = [str(f["name"]) for f in features]
        self.numeric = [str(f["name"]) for f in features if f["type"] == "numeric"]
        self.categorical = [str(f["name"]) for f in features if f["type"] != "numeric"]
        self._names = frozenset(self.names)
        self._numeric_values = values_of(self.numeric)
        self._categorical_values = values_of(self.categorical)

    def check(self, inputs: list[Any]) -> list[Any]:
        numeric, categorical = self._numeric_values, self._categorical_values
        for index, row in enumerate(inputs):
            if type(row) is not dict:
                raise _row_error(index, f"must be an object of features, not {_kind(row)}")
            if len(row) != len(self._names) or row.keys() != self._names:
                self._explain_keys(index, row)
            # The types of the row's values, gathered in C: only a row with a bad one is walked.
            if not set(map(type, numeric(row))) <= _NUMERIC_TYPES:
                self._explain_numeric(index, row)
            if self.categorical and not set(map(type, categorical(row))) <= _CATEGORY_TYPES:
                self._explain_categorical(index, row)
        return inputs

    def _explain_numeric(self, index: int, row: dict[str, Any]) -> None:
        for name in self.numeric:
            if type(row[name]) not in _NUMERIC_TYPES:
                raise _row_error(index, f"must be a number or null, not {_kind(row[name])}", name)

    def _explain_categorical(self, index: int, row: dict[str, Any]) -> None:
        for name in self.categorical:
            if type(row[name]) not in _CATEGORY_TYPES:
                raise _row_error(index, f"must be a string or null, not {_kind(row[name])}", name)

    def _explain_keys(self, index: int, row: dict[str, Any]) -> None:
        missing = [name for name in self.names if name not in row]
        if missing:
            also = f"; {len(missing)} features are missing: {listed(missing)}" if len(missing) > 1 else ""
            raise _row_error(index, f"is required (send null for an unknown value){also}", missing[0])
        unknown = sorted(set(row) - self._names)
        also = f" ({len(unknown)} fields are not: {listed(unknown)})" if len(unknown) > 1 else ""
        raise _row_error(
            index, f"is not a feature of this model{also}; its features: {listed(self.names)}", unknown[0]
        )


_NUMERIC_TYPES = frozenset({float, int, type(None)})
_CATEGORY_TYPES = frozenset({str, int, float, type(None)})


class TextCheck:
    def check(self, inputs: list[Any]) -> list[Any]:
        for index, text in enumerate(inputs):
            if type(text) is not str:
                raise _row_error(index, f"must be a string, not {_kind(text)}")
            if not text.strip():
                raise _row_error(index, "must not be empty")
            if len(text) > MAX_TEXT_CHARS:
                raise _row_error(index, f"is longer than {MAX_TEXT_CHARS} characters")
        return inputs


class EncodedFileCheck:
    """Base64 strings (optionally `data:…;base64,` URLs) of images or WAV files, decoded to bytes."""

    def __init__(self, what: str) -> None:
        self.what = what

    def check(self, inputs: list[Any]) -> list[Any]:
        decoded: list[bytes] = []
        for index, value in enumerate(inputs):
            if type(value) is not str:
                raise _row_error(index, f"must be a base64-encoded {self.what}, not {_kind(value)}")
            text = value.partition(",")[2] if value.startswith("data:") else value
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise _row_error(index, f"is not valid base64 (a base64-encoded {self.what})") from None
            if not data:
                raise _row_error(index, f"is an empty {self.what}")
            decoded.append(data)
        return decoded


class UserIdCheck:
    def check(self, inputs: list[Any]) -> list[Any]:
        users: list[str] = []
        for index, user in enumerate(inputs):
            if type(user) is not str and type(user) is not int:
                raise _row_error(index, f"must be a user id (string or integer), not {_kind(user)}")
            users.append(str(user))
        return users


def input_check(signature: dict[str, Any]) -> InputCheck:
    kind = signature.get("kind")
    if kind == "tabular":
        return TabularCheck(list(signature["features"]))
    if kind == "text":
        return TextCheck()
    if kind == "image":
        return EncodedFileCheck("image")
    if kind == "audio":
        return EncodedFileCheck("WAV file")
    if kind == "user_ids":
        return UserIdCheck()
    raise ValueError(f"unknown input signature kind {kind!r}")


def listed(names: list[str], limit: int = MAX_NAMED) -> str:
    """`names` for a message: the first `limit`, then how many more."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
