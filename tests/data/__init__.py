"""Committed test fixtures and the builders of the datasets tests generate."""
