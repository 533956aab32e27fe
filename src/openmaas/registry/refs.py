"""Model references: `name` (latest version), `name:3` (version 3) or `name@alias`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from openmaas import errors

_REF = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,99}?)(?::(?P<version>\d+)|@(?P<alias>[A-Za-z][\w.-]*))?$"
)


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
    version = match["version"]
    return ModelRef(match["name"], int(version) if version else None, match["alias"])
