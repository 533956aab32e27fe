"""Every table, imported in one place so `Base.metadata` is complete for migrations and tests."""

from openmaas.billing import models as billing_models
from openmaas.db.base import Base
from openmaas.metering import models as metering_models
from openmaas.jobs import models as jobs_models
from openmaas.registry import models as registry_models
from openmaas.tenancy import models as tenancy_models

__all__ = ["Base", "billing_models", "metering_models", "jobs_models", "registry_models", "tenancy_models"]
