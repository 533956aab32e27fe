"""Migration 0008 carries usage over from one row per (event, unit) to one row per event, and back."""

from __future__ import annotations

from sqlalchemy import text

from openmaas.db import migrate
from openmaas.db.database import Database

_OLD_INSERT = text(
    "INSERT INTO usage_events (event_id, unit, org_id, api_key_id, model, deployment, resource_class, "
    "quantity, occurred_at, cost_micros, price_ref, seller_org_id, recorded_at) VALUES "
    "(:event_id, :unit, 'org_1', NULL, 'mv_1', NULL, NULL, :quantity, '2026-11-20 10:00:00', :cost, "
    "'pb_1', NULL, '2026-11-20 10:00:01')"
)
_OLD = [
    ("r1", "requests", 1, 250),
    ("r1", "input_tokens", 1200, 120),
    ("r1", "output_tokens", 300, 90),
    ("r2", "rows", 40, 400),
]


def test_usage_is_carried_over_both_ways(database_url: str) -> None:
    db = Database(database_url)
    try:
        migrate.upgrade(db, "0005")
        with db.engine.begin() as connection:
            for event_id, unit, quantity, cost in _OLD:
                connection.execute(
                    _OLD_INSERT, {"event_id": event_id, "unit": unit, "quantity": quantity, "cost": cost}
                )
        migrate.upgrade(db, "0008")
        with db.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT event_id, cost_micros, qty_requests, qty_input_tokens, cost_output_tokens, "
                    "qty_rows, qty_compute_ms, model FROM usage_events ORDER BY seq"
                )
            ).all()
        assert [tuple(row) for row in rows] == [
            ("r1", 460, 1, 1200, 90, None, None, "mv_1"),
            ("r2", 400, None, None, None, 40, None, "mv_1"),
        ]
        migrate.downgrade(db, "0005")
        with db.engine.connect() as connection:
            back = connection.execute(
                text("SELECT event_id, unit, quantity, cost_micros FROM usage_events")
            ).all()
        assert sorted(tuple(row) for row in back) == sorted(_OLD)
    finally:
        migrate.downgrade(db, "base")
        db.dispose()
