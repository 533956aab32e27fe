"""What metering costs: the ledger's sustained event rate with group commit, and the latency a
metered, rate-limited, budget-checked request adds.

1. Sustained rate: producer threads call `meter.record(UsageEvent)` (3 units each: requests,
   input and output tokens, one ledger row) as fast as they can and wait on every receipt
   (durable: committed); events/s is counted from the first record to the last durable write,
   and per CPU-second of this process (all threads), the fairer figure on a shared machine.
2. Added latency: one request at a time, `gate.admit` + `gate.complete(...).wait()` (rate limit,
   budget check, one durable usage event) against doing nothing; p50 and p99 in milliseconds, for
   an organisation without a cap (the cached fast path) and with a monthly cap (held against this
   server's budget lease, which goes to the database once per slice).
3. Usage at scale (`--report-events`, 10 million by default; 0 skips it): a ledger holding that
   many events of one organisation in one month (8 models, 4 keys, 3 units each) is loaded in bulk
   at migration 0009, then migrated (0010 fills the hourly sums from it: timed), and the month's
   report grouped by day and model (`GET /v1/usage`'s service call) and the month's invoice are
   timed, best and median of 5. `--scan` also times one sum of the month straight from the events,
   what every report did before the hourly sums. This part starts from an empty database (on
   PostgreSQL it drops the tables the other parts made). `--keep FOLDER` keeps the loaded month
   (SQLite: FOLDER/report.db) and reuses it on the next run.

    .venv/bin/python -m benchmarks.metering [--events 50000] [--report-events 10000000]
        [--postgres postgresql+psycopg://…] [--only rate|report] [--scan] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from openmaas.billing import invoices, pricebooks, usage_report
from openmaas.bootstrap import Platform, build_platform
from openmaas.config import Settings
from openmaas.db import migrate
from openmaas.db.database import Database
from openmaas.metering.events import UsageEvent
from openmaas.metering.tables import BillingAccount, UsageRecord, usage_lines
from openmaas.schemas import billing as schemas
from openmaas.schemas import tenancy as tenancy_schemas
from openmaas.tenancy import service as tenancy


def _platform(home: Path, url: str, rate_limiter: str) -> Platform:
    settings = Settings(
        home=home,
        database_url=url,
        secret_key=secrets.token_hex(32),
        rate_limit_requests_per_minute=10**9,
        rate_limit_tokens_per_minute=10**12,
        rate_limiter=rate_limiter,
    )
    platform = build_platform(settings)
    migrate.upgrade(platform.db)
    with platform.db.session() as session:
        body = schemas.PricebookCreate(
            components=[
                schemas.PriceComponentIn(unit="requests", price="0.001"),
                schemas.PriceComponentIn(unit="input_tokens", price="0.10"),
                schemas.PriceComponentIn(unit="output_tokens", price="0.30"),
            ]
        )
        pricebooks.create_pricebook(session, body, default_currency="USD", now=platform.clock.now())
    return platform


def _org(platform: Platform, name: str, cap_micros: int | None = None) -> str:
    with platform.db.session() as session:
        org = tenancy.create_organization(
            session, tenancy_schemas.OrganizationCreate(name=name), platform.clock.now()
        )
        if cap_micros is not None:
            session.add(
                BillingAccount(
                    org_id=org.id,
                    balance_micros=0,
                    prepaid=False,
                    monthly_cap_micros=cap_micros,
                    reserved_micros=0,
                    period="",
                    period_spend_micros=0,
                    unbilled_micros=0,
                )
            )
        return org.id


def sustained_rate(platform: Platform, events: int, producers: int) -> tuple[float, float]:
    org = _org(platform, f"rate-{secrets.token_hex(3)}")
    now = platform.clock.now()
    per = events // producers
    start = threading.Barrier(producers + 1)

    def produce(worker: int) -> None:
        start.wait()
        receipts = [
            platform.meter.record(
                UsageEvent(
                    f"w{worker}-{i}", org, {"requests": 1, "input_tokens": 120, "output_tokens": 40}, now
                )
            )
            for i in range(per)
        ]
        for receipt in receipts:
            receipt.wait(120)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(producers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    cpu_began = time.process_time()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    return per * producers / elapsed, per * producers / cpu


def added_latency(platform: Platform, requests: int, *, capped: bool) -> tuple[float, float, float]:
    org = _org(platform, f"latency-{capped}-{secrets.token_hex(3)}", cap_micros=10**15 if capped else None)
    quantities = {"requests": 1, "input_tokens": 120, "output_tokens": 40}
    samples = []
    cpu_began = time.process_time()
    for i in range(requests + 50):
        began = time.perf_counter()
        admission = platform.gate.admit(
            org, None, f"lat-{capped}-{i}", worst_case={**quantities, "output_tokens": 256}
        )
        platform.gate.complete(admission, quantities).wait()
        elapsed = time.perf_counter() - began
        if i >= 50:  # warm-up: caches, connections
            samples.append(elapsed)
        else:
            cpu_began = time.process_time()
    cpu_per_request = (time.process_time() - cpu_began) / requests
    baseline = []
    for _ in range(requests):
        began = time.perf_counter()
        baseline.append(time.perf_counter() - began)
    samples.sort()
    p50 = statistics.median(samples) - statistics.median(baseline)
    p99 = samples[int(len(samples) * 0.99) - 1]
    return p50 * 1000, p99 * 1000, cpu_per_request * 1000


def _load() -> str:
    """The 1-minute load average: numbers from a shared machine mean little without it."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


_MONTH = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
_COLUMNS = (
    "event_id, org_id, api_key_id, model, deployment, resource_class, occurred_at, cost_micros, "
    "price_ref, seller_org_id, recorded_at, qty_requests, cost_requests, qty_input_tokens, "
    "cost_input_tokens, qty_output_tokens, cost_output_tokens"
)
# Event i: model i % 8 (its own deployment), key i % 4, spread evenly over November 2026; one
# request, 100-163 input and 20-51 output tokens at 0.001 per request, 0.10 and 0.30 per 1K tokens.
_VALUES = (
    "'e' || {i}, 'org_busy', 'key_' || ({i} / 8 % 4), 'mv_' || ({i} % 8), 'dep_' || ({i} % 8), NULL, {at}, "
    "1000 + (100 + {i} % 64) * 100 + (20 + {i} % 32) * 300, 'pb_bench', NULL, {at}, "
    "1, 1000, 100 + {i} % 64, (100 + {i} % 64) * 100, 20 + {i} % 32, (20 + {i} % 32) * 300"
)


def _load_month(db: Database, events: int) -> None:
    """`events` ledger rows of one organisation in November 2026, written in bulk (at 0009)."""
    spacing_us = 30 * 86_400 * 1_000_000 // events
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO organizations (id, name, plan, created_at, timezone) "
                "VALUES ('org_busy', 'busy', 'default', '2026-10-01 00:00:00', 'UTC')"
            )
        )
        if db.is_sqlite:
            connection.execute(text("PRAGMA cache_size = -1000000"))  # 1 GB: the indexes of the load
            micros = f"i * {spacing_us}"
            at = (
                f"strftime('%Y-%m-%d %H:%M:%S', 1793491200 + {micros} / 1000000, 'unixepoch') "
                f"|| printf('.%06d', {micros} % 1000000)"
            )
            connection.execute(
                text(
                    f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {events - 1}) "
                    f"INSERT INTO usage_events ({_COLUMNS}) SELECT {_VALUES.format(i='i', at=at)} FROM n"
                )
            )
        else:
            at = f"timestamp '2026-11-01' + i * interval '{spacing_us} microseconds'"
            connection.execute(
                text(
                    f"INSERT INTO usage_events ({_COLUMNS}) "
                    f"SELECT {_VALUES.format(i='i', at=at)} FROM generate_series(0, {events - 1}) AS i"
                )
            )
            connection.execute(text("ANALYZE usage_events"))


def _holds_month(db: Database, events: int) -> bool:
    """Whether `db` holds the month of `events` (`--keep`), then migrated to the newest revision
    (the migrations after the hourly sums leave them as they are)."""
    try:
        with db.engine.connect() as connection:
            held = connection.execute(text("SELECT count(*) FROM usage_events WHERE org_id = 'org_busy'"))
            hours = connection.execute(text("SELECT count(*) FROM usage_hours")).scalar()
            if held.scalar() != events or not hours:
                return False
    except DBAPIError:
        return False
    migrate.upgrade(db)
    return True


def _load_and_migrate(label: str, db: Database, events: int) -> None:
    migrate.downgrade(db, "base")
    migrate.upgrade(db, "0009")
    began = time.perf_counter()
    _load_month(db, events)
    loaded = time.perf_counter() - began
    began = time.perf_counter()
    migrate.upgrade(db)
    migrated = time.perf_counter() - began
    with db.engine.connect() as connection:
        hours = connection.execute(text("SELECT count(*) FROM usage_hours")).scalar()
        if not db.is_sqlite:
            connection.execute(text("ANALYZE usage_hours"))
            connection.commit()
    print(
        f"{label:10s} {events:,} events of one organisation in a month: loaded in "
        f"{loaded:.0f} s; migration 0010 summed them into {hours:,} hourly rows in {migrated:.1f} s"
    )


def report_at_scale(label: str, url: str, home: Path, args: argparse.Namespace) -> None:
    db = Database(url)
    try:
        if args.keep and _holds_month(db, args.report_events):
            print(f"{label:10s} {args.report_events:,} events of one organisation in a month: kept")
        else:
            _load_and_migrate(label, db, args.report_events)
    finally:
        db.dispose()
    platform = build_platform(Settings(home=home, database_url=url, secret_key=secrets.token_hex(32)))
    try:
        where = usage_report.UsageFilter(start=_MONTH[0], end=_MONTH[1])

        def report() -> int:
            with platform.db.read_session() as session:
                data = usage_report.usage(
                    session, "org_busy", where, group_by=["day", "model"], currency="USD"
                )
            return len(data.data)

        def invoice() -> int:
            with platform.db.read_session() as session:
                bill = invoices.statement(session, "org_busy", "2026-11", now=_MONTH[1], currency="USD")
            return len(bill.lines)

        for name, call in (("month report by day and model", report), ("month invoice", invoice)):
            rows, samples = call(), []
            for _ in range(5):
                began = time.perf_counter()
                call()
                samples.append(time.perf_counter() - began)
            print(
                f"{label:10s} {name}: best {min(samples) * 1000:.0f} ms, median "
                f"{statistics.median(samples) * 1000:.0f} ms ({rows} rows); load average {_load()}"
            )
        if args.scan:
            lines = usage_lines(
                UsageRecord.org_id == "org_busy",
                UsageRecord.occurred_at >= _MONTH[0],
                UsageRecord.occurred_at < _MONTH[1],
            )
            query = select(
                lines.c.model, lines.c.unit, func.sum(lines.c.quantity), func.sum(lines.c.cost_micros)
            )
            began = time.perf_counter()
            with platform.db.read_session() as session:
                session.execute(query.group_by(lines.c.model, lines.c.unit)).all()
            print(
                f"{label:10s} the month summed from the events instead (by model and unit, no days): "
                f"{time.perf_counter() - began:.1f} s; load average {_load()}"
            )
    finally:
        platform.close()


def run(label: str, url: str, home: Path, args: argparse.Namespace) -> None:
    if args.only != "report":
        measure_ledger(label, url, home, args)
    if args.only != "rate" and args.report_events:
        if args.keep and url.startswith("sqlite"):
            url = f"sqlite:///{Path(args.keep).resolve() / 'report.db'}"
        report_at_scale(label, url, home.with_name(home.name + "-report"), args)


def measure_ledger(label: str, url: str, home: Path, args: argparse.Namespace) -> None:
    platform = _platform(home, url, args.rate_limiter)
    try:
        rate, per_cpu_second = sustained_rate(platform, args.events, args.producers)
        print(
            f"{label:10s} ledger sustained: {rate:,.0f} events/s (3 units each, one ledger row), "
            f"{per_cpu_second:,.0f} events per CPU-second of this process; "
            f"{args.producers} producers, {args.events:,} events; load average {_load()}"
        )
        for capped in (False, True):
            p50, p99, cpu = added_latency(platform, args.requests, capped=capped)
            kind = "monthly cap (leased)" if capped else "no cap (cached check)"
            print(
                f"{label:10s} added per request, {kind}: p50 {p50:.3f} ms, p99 {p99:.3f} ms "
                f"(CPU, all threads: {cpu:.3f} ms)"
            )
    finally:
        platform.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--postgres", help="A PostgreSQL URL (an empty database) to measure as well")
    parser.add_argument("--report-events", type=int, default=10_000_000, help="0: skip the report part")
    parser.add_argument(
        "--only", choices=["rate", "report"], help="Run only the ledger part or the report part"
    )
    parser.add_argument("--scan", action="store_true", help="Also time a sum straight from the events")
    parser.add_argument(
        "--keep",
        metavar="FOLDER",
        help="Keep the report's loaded month (SQLite: FOLDER/report.db; PostgreSQL: its database) "
        "and reuse it when it is already there: the load takes minutes",
    )
    parser.add_argument(
        "--rate-limiter",
        choices=["memory", "database"],
        default="memory",
        help="memory: the embedded mode's limiter; database: cluster mode's, shared by all servers",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", Path(tmp) / "sqlite-home", args)
        Path(tmp, "bench.db").unlink(missing_ok=True)  # gigabytes with --report-events
        if args.postgres:
            run("postgresql", args.postgres, Path(tmp) / "pg-home", args)


if __name__ == "__main__":
    main()
