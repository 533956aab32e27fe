"""Migration 0008 carries usage over from one row per (event, unit) to one row per event, and back;
migration 0010 fills the hourly sums from the ledger, migration 0015 the daily ones."""

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


def test_usage_is_carried_over_both_ways(empty_database_url: str) -> None:
    db = Database(empty_database_url)
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


_EVENT_INSERT = text(
    "INSERT INTO usage_events (event_id, org_id, api_key_id, model, deployment, resource_class, "
    "occurred_at, cost_micros, price_ref, seller_org_id, recorded_at, qty_requests, cost_requests, "
    "qty_output_tokens, cost_output_tokens) VALUES (:event_id, :org_id, :key, 'mv_1', NULL, NULL, "
    ":at, :cost, 'pb_1', NULL, '2026-12-01 00:00:00', 1, :cost, :tokens, 0)"
)


def test_hourly_sums_are_filled_from_the_ledger(empty_database_url: str) -> None:
    """Migration 0010 sums the events already in the ledger into `usage_hours`, in each
    organisation's local hours."""
    db = Database(empty_database_url)
    try:
        migrate.upgrade(db, "0009")
        with db.engine.begin() as connection:
            for org_id, timezone in (("org_utc", "UTC"), ("org_in", "Asia/Kolkata")):
                connection.execute(
                    text(
                        "INSERT INTO organizations (id, name, plan, created_at, timezone) "
                        "VALUES (:id, :id, 'default', '2026-11-01 00:00:00', :tz)"
                    ),
                    {"id": org_id, "tz": timezone},
                )
            events = [
                ("e1", "org_utc", "key_1", "2026-11-20 10:05:00.250000", 100, 7),
                ("e2", "org_utc", "key_1", "2026-11-20 10:59:59.999999", 200, 3),
                ("e3", "org_utc", None, "2026-11-20 11:00:00.000000", 400, 1),
                ("e4", "org_in", None, "2026-11-20 10:05:00.000000", 800, 2),
                ("e5", "org_in", None, "2026-11-20 10:35:00.000000", 1600, 5),
            ]
            for event_id, org_id, key, at, cost, tokens in events:
                values = {"event_id": event_id, "org_id": org_id, "key": key, "at": at}
                connection.execute(_EVENT_INSERT, {**values, "cost": cost, "tokens": tokens})
        migrate.upgrade(db)
        with db.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT org_id, hour_start, unit, api_key_id, model, price_ref, quantity, cost_micros, "
                    "events FROM usage_hours ORDER BY org_id, hour_start, unit, api_key_id"
                )
            ).all()
        hours = [(r[0], str(r[1])[:16], *r[2:]) for r in rows]
        assert hours == [
            ("org_in", "2026-11-20 09:30", "output_tokens", "", "mv_1", "pb_1", 2, 0, 1),
            ("org_in", "2026-11-20 09:30", "requests", "", "mv_1", "pb_1", 1, 800, 1),
            ("org_in", "2026-11-20 10:30", "output_tokens", "", "mv_1", "pb_1", 5, 0, 1),
            ("org_in", "2026-11-20 10:30", "requests", "", "mv_1", "pb_1", 1, 1600, 1),
            ("org_utc", "2026-11-20 10:00", "output_tokens", "key_1", "mv_1", "pb_1", 10, 0, 2),
            ("org_utc", "2026-11-20 10:00", "requests", "key_1", "mv_1", "pb_1", 2, 300, 2),
            ("org_utc", "2026-11-20 11:00", "output_tokens", "", "mv_1", "pb_1", 1, 0, 1),
            ("org_utc", "2026-11-20 11:00", "requests", "", "mv_1", "pb_1", 1, 400, 1),
        ]
        with db.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT org_id, day_start, day_end, unit, api_key_id, quantity, cost_micros, events "
                    "FROM usage_days WHERE unit = 'requests' ORDER BY org_id, day_start, api_key_id"
                )
            ).all()
        # India's day of 20 November starts at 18:30 UTC the day before.
        assert [(r[0], str(r[1])[:16], str(r[2])[:16], *r[3:]) for r in rows] == [
            ("org_in", "2026-11-19 18:30", "2026-11-20 18:30", "requests", "", 2, 2400, 2),
            ("org_utc", "2026-11-20 00:00", "2026-11-21 00:00", "requests", "", 1, 400, 1),
            ("org_utc", "2026-11-20 00:00", "2026-11-21 00:00", "requests", "key_1", 2, 300, 2),
        ]
        migrate.downgrade(db, "0009")
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM usage_events")).scalar() == 5
    finally:
        migrate.downgrade(db, "base")
        db.dispose()
