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

    .venv/bin/python -m benchmarks.metering [--events 50000] [--postgres postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

from openmaas.billing import pricebooks
from openmaas.bootstrap import Platform, build_platform
from openmaas.config import Settings
from openmaas.db import migrate
from openmaas.metering.events import UsageEvent
from openmaas.metering.tables import BillingAccount
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


def run(label: str, url: str, home: Path, args: argparse.Namespace) -> None:
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
    parser.add_argument(
        "--rate-limiter",
        choices=["memory", "database"],
        default="memory",
        help="memory: the embedded mode's limiter; database: cluster mode's, shared by all servers",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", Path(tmp) / "sqlite-home", args)
        if args.postgres:
            run("postgresql", args.postgres, Path(tmp) / "pg-home", args)


if __name__ == "__main__":
    main()
