"""Dataset references: `ds_…` (an id), `name` (its latest version) or `name:version`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from openmaas import errors

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class DatasetRef:
    name: str | None
    version: int | None = None
    id: str | None = None


def parse_dataset_ref(text: str, param: str = "dataset") -> DatasetRef:
    if text.startswith("ds_"):
        return DatasetRef(None, id=text)
    name, _, version = text.partition(":")
    if not _NAME.fullmatch(name) or (version and not version.isdigit()):
        raise errors.ValidationFailed(
            f"{text!r} is not a dataset reference: use name, name:version or an id", param=param
        )
    return DatasetRef(name, int(version) if version else None)
