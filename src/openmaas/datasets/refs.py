"""Dataset references: `ds_…` (an id), `name` (its latest version) or `name:version`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from openmaas import errors
from openmaas.schemas.names import DATASET_REF_PATTERN

_REF = re.compile(DATASET_REF_PATTERN)


@dataclass(frozen=True)
class DatasetRef:
    name: str | None
    version: int | None = None
    id: str | None = None


def parse_dataset_ref(text: str, param: str = "dataset") -> DatasetRef:
    if text.startswith("ds_"):
        return DatasetRef(None, id=text)
    match = _REF.fullmatch(text)
    if match is None:
        raise errors.ValidationFailed(
            f"{text!r} is not a dataset reference: use name, name:version or an id", param=param
        )
    name, version = match.groups()
    return DatasetRef(name, int(version) if version else None)
