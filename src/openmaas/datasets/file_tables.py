"""The `files` table: OpenAI's `/v1/files`, one row per uploaded (or platform-written) file."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from openmaas.db.base import Base, UTCDateTime


class StoredFile(Base):
    """One immutable file: its bytes live at `path` in the artifact store, under the
    organisation's dataset folder, so storage billing counts them with the datasets."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_org_id_id", "org_id", "id"),
        Index("ix_files_org_id_purpose_id", "org_id", "purpose", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(40))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(500))
    # Chat examples of a `fine-tune` file (validated at upload); None for other purposes.
    examples: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
