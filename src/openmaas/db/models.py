"""Every table, imported in one place so `Base.metadata` is complete for migrations and tests."""

from openmaas.db.base import Base
from openmaas.tenancy import models as tenancy_models

__all__ = ["Base", "tenancy_models"]
