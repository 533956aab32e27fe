"""The one entry point of dataset validation: detect the format, then validate by kind."""

from __future__ import annotations

from pathlib import Path

from openmaas.datasets.archive import ArchiveLimits
from openmaas.datasets.archive_validation import validate_archive
from openmaas.datasets.formats import DatasetFormat, detect_format
from openmaas.datasets.report import ValidationReport
from openmaas.datasets.tabular_validation import validate_table


def validate_dataset(
    path: Path | str, *, target: str | None = None, limits: ArchiveLimits | None = None
) -> ValidationReport:
    """Validate the dataset file at `path`; `target` names the label column of a table.

    Problems in the data come back as issues in the report; a file that cannot be read at all
    (unknown format, unsafe or corrupt archive) raises the matching OpenMaaSError.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == DatasetFormat.ZIP:
        return validate_archive(path, limits)
    return validate_table(path, fmt, target=target)
