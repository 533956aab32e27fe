"""The relational database: engine and sessions, the declarative `Base`, and Alembic migrations."""
