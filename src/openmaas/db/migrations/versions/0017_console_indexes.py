"""Indexes on `model_versions.dataset_id` and `model_versions.parent_version_id`: the console's
dataset page lists the versions trained on a dataset, and a version's lineage its optimised
children, each by one of these columns.

Revision ID: 0017_console_indexes
Revises: 0016_batches
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0017_console_indexes"
down_revision = "0016_batches"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_model_versions_dataset_id", "model_versions", ["dataset_id"])
    op.create_index("ix_model_versions_parent_version_id", "model_versions", ["parent_version_id"])


def downgrade() -> None:
    op.drop_index("ix_model_versions_parent_version_id", table_name="model_versions")
    op.drop_index("ix_model_versions_dataset_id", table_name="model_versions")
