"""Every table, imported in one place so `Base.metadata` is complete: for the composition root,
the job processes it starts, migrations and tests. Like `bootstrap`, it knows every package."""

from openmaas.billing import tables as billing_tables
from openmaas.datasets import file_tables
from openmaas.datasets import tables as dataset_tables
from openmaas.db.base import Base
from openmaas.jobs import tables as job_tables
from openmaas.metering import tables as metering_tables
from openmaas.registry import tables as registry_tables
from openmaas.serving import tables as serving_tables
from openmaas.serving.batches import tables as batch_tables
from openmaas.tenancy import tables as tenancy_tables

__all__ = [
    "Base",
    "batch_tables",
    "billing_tables",
    "dataset_tables",
    "file_tables",
    "job_tables",
    "metering_tables",
    "registry_tables",
    "serving_tables",
    "tenancy_tables",
]
