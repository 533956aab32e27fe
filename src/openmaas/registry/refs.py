"""Model references: `name` (latest version), `name:3` (version 3) or `name@alias`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from openmaas import errors
from openmaas.schemas.names import MODEL_REF_PATTERN

_REF = re.compile(MODEL_REF_PATTERN)


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def parse_ref(text: str, param: str = "model") -> ModelRef:
    match = _REF.fullmatch(text)
    if match is None:
        raise errors.ValidationFailed(
            f"{text!r} is not a model reference: use name, name:version or name@alias", param=param
        )
    name, version, alias = match.groups()
    return ModelRef(name, int(version) if version else None, alias)
