"""Request and response shapes for organisations, keys and the audit log."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from openmaas.schemas.names import Label
from openmaas.schemas.times import Instant, TimeZone

# The scopes an organisation's key may hold (`tenancy/scopes.py` says what each grants; the SDK
# imports only this package, so the names are written out here as well).
TENANT_SCOPES = (
    "admin",
    "inference",
    *(
        f"{resource}:{action}"
        for resource in ("api_keys", "audit", "datasets", "models", "jobs", "deployments", "usage", "billing")
        for action in ("read", "write")
    ),
)
ORGANIZATION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME_RE = re.compile(ORGANIZATION_NAME_PATTERN)
# At most 5 digits: 99999 weeks from now is still a date (a longer one overflowed into a 500).
DURATION_PATTERN = r"^([1-9][0-9]{0,4})([smhdw])$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `2w`, `45s` → a timedelta."""
    match = _DURATION_RE.fullmatch(text)
    if not match:
        raise ValueError("expected a positive duration of at most 5 digits such as 30d, 12h, 90m, 2w or 45s")
    return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrganizationCreate(_Strict):
    name: str = Field(
        description="Unique name: letters, digits, '.', '_' or '-', at most 64",
        json_schema_extra={"pattern": ORGANIZATION_NAME_PATTERN},
    )
    plan: Label = Field(default="default", min_length=1, max_length=64)
    timezone: TimeZone = Field(default="UTC", max_length=64, description="IANA zone of its billing months")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError(
                "must start with a letter or digit and use only letters, digits, '.', '_', '-' (≤64)"
            )
        return value


class Organization(BaseModel):
    object: Literal["organization"] = "organization"
    id: str
    name: str
    plan: str
    created_at: datetime
    timezone: str = "UTC"


class ApiKeyCreate(_Strict):
    name: Label = Field(default="default", min_length=1, max_length=100)
    scopes: list[Annotated[str, Field(json_schema_extra={"enum": list(TENANT_SCOPES)})]] | None = Field(
        default=None, min_length=1, description="Defaults to the creating key's scopes"
    )
    expires_at: Instant | None = None
    expires_in: str | None = Field(
        default=None,
        description="Instead of expires_at: 30d, 12h, 2w …",
        json_schema_extra={"pattern": DURATION_PATTERN},
    )

    @field_validator("expires_in")
    @classmethod
    def _valid_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class ApiKey(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    organization_id: str | None
    name: str
    redacted: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class ApiKeyCreated(ApiKey):
    """Returned once, at creation: the only time the full key is shown."""

    key: str


class AuditEntry(BaseModel):
    object: Literal["audit_entry"] = "audit_entry"
    id: str
    created_at: datetime
    organization_id: str | None
    actor_key_id: str | None
    action: str
    method: str
    path: str
    target_id: str | None
    request_id: str
    outcome: Literal["success", "failure"]
    status_code: int
    error_code: str | None = None


class Caller(BaseModel):
    """Who the presented key is: `GET /v1/me`."""

    object: Literal["caller"] = "caller"
    key_id: str
    organization: Organization | None
    scopes: list[str]
