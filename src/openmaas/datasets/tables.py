"""The dataset table: one row per immutable dataset version, with what validation found."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmaas.db.base import Base, UTCDateTime


class DatasetStatus(enum.StrEnum):
    VALIDATING = "validating"
    READY = "ready"
    FAILED = "failed"


class Dataset(Base):
    """One immutable dataset version: the uploaded bytes (by content hash) and what validation found."""

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("org_id", "name", "version", name="uq_datasets_org_id_name_version"),
        UniqueConstraint("org_id", "name", "sha256", name="uq_datasets_org_id_name_sha256"),
        Index("ix_datasets_org_id_id", "org_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str | None] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))
    validation_job_id: Mapped[str | None] = mapped_column(String(40))
    rows: Mapped[int | None] = mapped_column(Integer)
    schema_: Mapped[dict[str, Any] | None] = mapped_column("schema", JSON)
    issues: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
