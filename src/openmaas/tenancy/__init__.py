"""Organisations, API keys (hashed, scoped, expiring), the audit log and idempotent creates."""
