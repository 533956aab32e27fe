"""Every table, imported in one place so `Base.metadata` is complete for migrations and tests."""

from openmaas.billing import models as billing_models
from openmaas.db.base import Base
from openmaas.jobs import models as jobs_models
from openmaas.metering import models as metering_models
from openmaas.registry import models as registry_models
from openmaas.serving import models as serving_models
from openmaas.tenancy import models as tenancy_models

__all__ = [
    "Base",
    "billing_models",
    "jobs_models",
    "metering_models",
    "registry_models",
    "serving_models",
    "tenancy_models",
]
