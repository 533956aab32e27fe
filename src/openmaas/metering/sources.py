"""Usage events for the non-request billables: training and optimisation compute, fine-tuning's
trained tokens, data ingested, and data stored (sampled daily). Each builds its event id from what
it measures, so a retry or a second sampler run the same day meters once.

Jobs' compute is metered by the job worker, per interval (`JobComputeMeter`, the worker's
`ComputeMeter`): before an interval `gate.admit(..., worst_case=compute_quantities(seconds),
rate_limited=False)` holds its cost (a 402: the worker pauses the job at its checkpoint); after it
`gate.complete(admission, compute_quantities(actual_seconds), resource_class=...)` meters it under
the id `compute_event_id(job_id, run, interval)`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from openmaas.clock import Clock
from openmaas.ids import new_id
from openmaas.jobs.executor import Resources
from openmaas.jobs.queue import Claim
from openmaas.metering.events import UsageEvent
from openmaas.metering.gate import Admission, UsageGate
from openmaas.metering.ledger import UsageLedger
from openmaas.pricing.periods import days_in_period, zone
from openmaas.units import RESOURCE_CLASSES

_GB = 1_000_000_000


def compute_event_id(job_id: str, run: str, interval: int) -> str:
    """`run` names one claim of the job (`claim_run`): its attempt, and the worker that claimed it
    (an attempt handed back by a worker shutting down or paused keeps its number)."""
    return f"{job_id}:compute:{run}:{interval}"


def claim_run(claim: Claim) -> str:
    """The attempt and the random part of the claiming worker's id (`host:pid:random`)."""
    return f"{claim.attempt}.{claim.owner.rsplit(':', 1)[-1][-8:]}"


def compute_quantities(seconds: float) -> dict[str, int]:
    return {"compute_ms": max(0, round(seconds * 1000))}


def compute_usage(
    job_id: str,
    run: str,
    interval: int,
    org_id: str,
    *,
    resource_class: str,
    seconds: float,
    at: datetime,
    model: str | None = None,
) -> UsageEvent:
    """One interval of a training or optimisation job's compute, by resource class."""
    return UsageEvent(
        compute_event_id(job_id, run, interval),
        org_id,
        compute_quantities(seconds),
        at,
        model=model,
        resource_class=resource_class,
    )


class JobComputeMeter:
    """The job worker's `ComputeMeter`: an interval's compute held on the budget through the gate
    (not rate limited), and billed once under its deterministic id. The quantity is wall seconds ×
    the units of the attempt's resource class (`Resources.billed`), in milliseconds."""

    def __init__(
        self, gate: UsageGate, ledger: UsageLedger, clock: Clock, billed_kinds: frozenset[str]
    ) -> None:
        self._gate = gate
        self._ledger = ledger
        self._clock = clock
        # The kinds of job the customer asked for (training, fine-tuning, optimisation); the
        # platform's own chores on their data (validating an upload, an import) are not billed as
        # compute: ingest and storage price the data.
        self._billed_kinds = billed_kinds

    def begin(self, claim: Claim, interval: int, resources: Resources, seconds: float) -> Admission | None:
        if claim.kind not in self._billed_kinds:
            return None
        resource_class, units = resources.billed()
        return self._gate.admit(
            claim.org_id,
            None,
            compute_event_id(claim.job_id, claim_run(claim), interval),
            worst_case=compute_quantities(seconds * units),
            rate_limited=False,
            resource_class=resource_class,
        )

    def check_budget(self, org_id: str) -> None:
        """Raise `InsufficientQuota` (402) when the organisation's credit or monthly cap cannot hold
        one second of compute (CPU or GPU): a job created now could not run. Holds nothing."""
        for resource_class in RESOURCE_CLASSES:
            probe = self._gate.admit(
                org_id,
                None,
                new_id("probe_"),
                worst_case=compute_quantities(1.0),
                rate_limited=False,
                resource_class=resource_class,
            )
            self._gate.abandon(probe)

    def end(
        self, claim: Claim, interval: int, resources: Resources, seconds: float, hold: object | None
    ) -> None:
        if claim.kind not in self._billed_kinds:
            return
        resource_class, units = resources.billed()
        if isinstance(hold, Admission):
            if seconds <= 0:
                self._gate.abandon(hold)
                return
            self._gate.complete(hold, compute_quantities(seconds * units), resource_class=resource_class)
            return
        if seconds > 0:
            event = compute_usage(
                claim.job_id,
                claim_run(claim),
                interval,
                claim.org_id,
                resource_class=resource_class,
                seconds=seconds * units,
                at=self._clock.now(),
            )
            self._ledger.record(event)


def trained_tokens_event_id(job_id: str) -> str:
    return f"{job_id}:trained_tokens"


def trained_tokens_usage(job_id: str, org_id: str, tokens: int, at: datetime, *, model: str) -> UsageEvent:
    """A fine-tuning job's trained tokens (tokens × epochs), priced per 1K on the base `model`.
    One event per job: written with the job's success (`ledger.record_in`), so a resumed or
    retried job, whatever it re-trained, meters its tokens once."""
    return UsageEvent(trained_tokens_event_id(job_id), org_id, {"trained_tokens": tokens}, at, model=model)


def ingest_usage(
    upload_id: str, org_id: str, nbytes: int, at: datetime, api_key_id: str | None = None
) -> UsageEvent:
    """Data ingested by one upload (priced per GB)."""
    return UsageEvent(f"{upload_id}:ingest", org_id, {"bytes_ingested": nbytes}, at, api_key_id=api_key_id)


def storage_event_id(org_id: str, day: date) -> str:
    return f"storage:{org_id}:{day.isoformat()}"


def storage_usage(org_id: str, stored_bytes: int, day: date, timezone: str) -> UsageEvent:
    """One day's share of a GB-month: the month's own number of days, not 30."""
    period = f"{day.year:04d}-{day.month:02d}"
    share = round(stored_bytes * 1_000_000 / (_GB * days_in_period(period)))
    noon = datetime.combine(day, time(12), tzinfo=zone(timezone)).astimezone(UTC)
    return UsageEvent(storage_event_id(org_id, day), org_id, {"storage_gb_month_micros": share}, noon)


def yesterday(now: datetime, timezone: str) -> date:
    """The last complete local day: what a sampler running after midnight records."""
    return (now.astimezone(zone(timezone)) - timedelta(days=1)).date()
