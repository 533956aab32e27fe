"""Typed results of dataset validation: the inferred schema and the problems found, each with
its location (file, line, column), so that a user can fix the data without guessing.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from openmaas.datasets.formats import DatasetFormat

MAX_ISSUES = 200


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


class ColumnType(enum.StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    CATEGORICAL = "categorical"
    TEXT = "text"
    EMPTY = "empty"

    @property
    def is_numeric(self) -> bool:
        return self in (ColumnType.INTEGER, ColumnType.FLOAT)


@dataclass(frozen=True)
class ValidationIssue:
    """One problem in the data. `line` is 1-based in the file (for Parquet: the row number)."""

    code: str
    message: str
    severity: Severity = Severity.ERROR
    file: str | None = None
    line: int | None = None
    column: str | None = None


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    type: ColumnType
    missing: int
    distinct: int | None
    minimum: float | None = None
    maximum: float | None = None


@dataclass
class DatasetSchema:
    """What validation learned about the data: columns for tables, classes and media for archives."""

    columns: list[ColumnSchema] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    image_sizes: dict[str, int] = field(default_factory=dict)
    image_modes: dict[str, int] = field(default_factory=dict)
    sample_rates: dict[int, int] = field(default_factory=dict)
    media_kind: str | None = None

    def column(self, name: str) -> ColumnSchema | None:
        return next((col for col in self.columns if col.name == name), None)


@dataclass
class ValidationReport:
    format: DatasetFormat
    rows: int
    schema: DatasetSchema
    issues: list[ValidationIssue] = field(default_factory=list)
    issues_truncated: bool = False

    @property
    def ok(self) -> bool:
        return not any(issue.severity == Severity.ERROR for issue in self.issues)

    @property
    def errors(self) -> list[ValidationIssue]:
        return [issue for issue in self.issues if issue.severity == Severity.ERROR]

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["ok"] = self.ok
        return body


class IssueCollector:
    """Collects issues up to a cap so a file with a million bad rows does not exhaust memory."""

    def __init__(self, limit: int = MAX_ISSUES) -> None:
        self.limit = limit
        self.issues: list[ValidationIssue] = []
        self.truncated = False

    def add(self, code: str, message: str, **where: Any) -> None:
        if len(self.issues) >= self.limit:
            self.truncated = True
            return
        self.issues.append(ValidationIssue(code=code, message=message, **where))
