"""Datasets: ingest uploads safely, detect formats by content, validate by streaming, and
declare preprocessing — a library with no database, HTTP or job code — and the dataset service
on top of it: dataset versions (`tables`, `service`), streamed uploads (`uploads`) and the
validation job (`jobs`).
"""

from openmaas.datasets.archive import ArchiveEntry, ArchiveLimits, iter_entries
from openmaas.datasets.formats import DatasetFormat, detect_format
from openmaas.datasets.hashing import sha256_file
from openmaas.datasets.ingest import IngestedFile, ingest
from openmaas.datasets.report import (
    ColumnSchema,
    ColumnType,
    DatasetSchema,
    Severity,
    ValidationIssue,
    ValidationReport,
)
from openmaas.datasets.validate import validate_dataset

__all__ = [
    "ArchiveEntry",
    "ArchiveLimits",
    "ColumnSchema",
    "ColumnType",
    "DatasetFormat",
    "DatasetSchema",
    "IngestedFile",
    "Severity",
    "ValidationIssue",
    "ValidationReport",
    "detect_format",
    "ingest",
    "iter_entries",
    "sha256_file",
    "validate_dataset",
]
