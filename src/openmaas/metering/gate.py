"""The gate every metered request passes: rate limit, budget hold, then one usage event.

An inference route calls, in a sync route (the hold may write to the database):

    admission = platform.gate.admit(principal, request_id, model=..., worst_case={...},
                                    headers=response.headers)
    ...serve...
    platform.gate.complete(admission, {"requests": 1, "input_tokens": n, "output_tokens": m}).wait()
    # or platform.gate.abandon(admission) if nothing was served

`admit` raises `RateLimited` (429, `Retry-After`) or `InsufficientQuota` (402) — or
`ServiceUnavailable` (503) while the ledger cannot write — and writes the `x-ratelimit-*` headers
into `headers`; `complete` writes exactly one usage event keyed by the request id and returns a
receipt to wait on before the response completes. A stream the client dropped is completed with
the tokens generated so far.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from openmaas import errors
from openmaas.clock import Clock
from openmaas.metering.budgets import BudgetGuard
from openmaas.metering.events import Hold, UsageEvent
from openmaas.metering.failures import FailureCounter
from openmaas.metering.ledger import Receipt, UsageLedger
from openmaas.metering.limits import LimitBook
from openmaas.metering.pricing_events import worst_case_micros
from openmaas.metering.ratelimit import Limits, RateLimiter, headers_for
from openmaas.pricing.periods import period_of
from openmaas.pricing.source import PriceSource

_TOKEN_UNITS = ("input_tokens", "output_tokens")
_NO_HOLD = Hold("", None, 0, 0)  # an admission's placeholder until `_admit` fills it in


# Not frozen: a frozen dataclass's __init__ costs ~2 µs, paid on every request; treat as immutable.
@dataclass(slots=True)
class Admission:
    org_id: str
    api_key_id: str | None
    request_id: str
    model: str | None
    deployment: str | None
    resource_class: str | None
    hold: Hold
    tokens_taken: int
    subjects: tuple[tuple[str, Limits], ...]
    headers: Mapping[str, str]


class UsageGate:
    def __init__(
        self,
        ledger: UsageLedger,
        budgets: BudgetGuard,
        limiter: RateLimiter,
        limits: LimitBook,
        prices: PriceSource,
        clock: Clock,
        failures: FailureCounter | None = None,
    ) -> None:
        self._ledger = ledger
        self.failures = failures  # None: failed requests are not counted
        self._budgets = budgets
        self._limiter = limiter
        self._limits = limits
        self._prices = prices
        self._clock = clock

    def admit(
        self,
        org_id: str,
        api_key_id: str | None,
        request_id: str,
        *,
        worst_case: Mapping[str, int],
        model: str | None = None,
        deployment: str | None = None,
        headers: MutableMapping[str, str] | None = None,
        rate_limited: bool = True,
        resource_class: str | None = None,
    ) -> Admission:
        """Check the rate limits and hold the worst-case cost; raise 429 or 402 if either fails.

        May read or write the database: call it from a thread. `rate_limited=False` for work that
        is not an API request (a training interval)."""
        if rate_limited and self._ledger.unavailable:
            raise _ledger_unavailable()
        subjects = self._limits.subjects(org_id, api_key_id) if rate_limited else []
        needs_hold = self._budgets.needs_hold(org_id, api_key_id)
        request = Admission(
            org_id, api_key_id, request_id, model, deployment, resource_class, _NO_HOLD, 0, (), {}
        )
        admission = self._admit(request, subjects, needs_hold, worst_case, headers, nowait=False)
        assert admission is not None  # only a `nowait` admission declines
        return admission

    def admit_nowait(
        self,
        org_id: str,
        api_key_id: str | None,
        request_id: str,
        *,
        worst_case: Mapping[str, int],
        model: str | None = None,
        deployment: str | None = None,
        headers: MutableMapping[str, str] | None = None,
    ) -> Admission | None:
        """`admit` for the event loop: None (and nothing done) when it would need the database —
        limits or budget settings not cached, a rate-limit slice or budget lease to take or
        extend — and the caller then runs `admit` in a thread. The common case, budget holds
        against this server's lease included, is answered from memory (prices from their cache,
        which `complete` reads on the loop as well)."""
        if self._ledger.unavailable:
            raise _ledger_unavailable()
        subjects = self._limits.cached_subjects(org_id, api_key_id)
        needs_hold = self._budgets.cached_needs_hold(org_id, api_key_id)
        if subjects is None or needs_hold is None:
            return None
        request = Admission(org_id, api_key_id, request_id, model, deployment, None, _NO_HOLD, 0, (), {})
        return self._admit(request, subjects, needs_hold, worst_case, headers, nowait=True)

    def _admit(
        self,
        request: Admission,
        subjects: list[tuple[str, Limits]],
        needs_hold: bool,
        worst_case: Mapping[str, int],
        headers: MutableMapping[str, str] | None,
        *,
        nowait: bool,
    ) -> Admission | None:
        """Fill in `request` (an admission with nothing taken yet) or raise; None when `nowait`
        and the decision needs the database."""
        tokens = sum(worst_case.get(unit, 0) for unit in _TOKEN_UNITS)
        if nowait:
            maybe = self._limiter.acquire_nowait(subjects, tokens)
            if maybe is None:  # the shared limiter must ask the database
                return None
            decision = maybe
        else:
            decision = self._limiter.acquire(subjects, tokens)
        limit_headers = headers_for(decision)
        if headers is not None:
            headers.update(limit_headers)
        if not decision.allowed:
            raise errors.RateLimited(
                f"Rate limit reached for {decision.limit_type} per minute; retry after "
                f"{decision.retry_after_s:.2f}s.",
                limit_type=decision.limit_type,
                retry_after=decision.retry_after_s,
                headers={**limit_headers, "retry-after-ms": str(int(decision.retry_after_s * 1000) + 1)},
            )
        request.hold = Hold(request.org_id, request.api_key_id, 0, 0)
        if needs_hold:
            try:
                held = self._hold(request, worst_case, nowait)
            except (errors.InsufficientQuota, errors.Conflict) as exc:
                self._limiter.refund(subjects, tokens)
                exc.headers.update(limit_headers)
                raise
            if held is None:  # `nowait`, and the hold needs the database
                self._limiter.refund(subjects, tokens)
                return None
            request.hold = held
        request.tokens_taken, request.subjects, request.headers = tokens, tuple(subjects), limit_headers
        return request

    def _hold(self, request: Admission, worst_case: Mapping[str, int], nowait: bool) -> Hold | None:
        """Reserve the worst-case cost on the organisation's wallet or cap (and the key's cap);
        `nowait`: from this server's lease in memory, or None."""
        now = self._clock.now()
        org_id, api_key_id, request_id = request.org_id, request.api_key_id, request.request_id
        probe = UsageEvent(
            request_id,
            org_id,
            dict(worst_case) or {"requests": 1},
            now,
            api_key_id,
            request.model,
            resource_class=request.resource_class,
        )
        worst = worst_case_micros(self._prices, probe)
        if nowait:
            return self._budgets.reserve_nowait(org_id, api_key_id, worst, request_id)
        period = period_of(now, self._prices.profile(org_id).timezone)
        return self._budgets.reserve(org_id, api_key_id, worst, period, request_id)

    def complete(
        self, admission: Admission, actual: Mapping[str, int], *, resource_class: str | None = None
    ) -> Receipt:
        """Meter what was served (one event, keyed by the request id) and settle the hold."""
        used_tokens = sum(actual.get(unit, 0) for unit in _TOKEN_UNITS)
        self._limiter.refund(list(admission.subjects), admission.tokens_taken - used_tokens)
        event = UsageEvent(
            event_id=admission.request_id,
            org_id=admission.org_id,
            quantities=dict(actual),
            occurred_at=self._clock.now(),
            api_key_id=admission.api_key_id,
            model=admission.model,
            deployment=admission.deployment,
            resource_class=resource_class or admission.resource_class,
            hold=admission.hold,
        )
        try:
            receipt = self._ledger.record(event)
        except errors.ServiceUnavailable:
            self._budgets.release(admission.hold, admission.request_id)
            raise
        if admission.hold.lease:
            self._budgets.settle(admission.hold, admission.request_id, receipt)
        return receipt

    def close(self) -> None:
        """Write the rate limiter's pending state (refunds of the shared limiter) and the pending
        failed-request counts."""
        self._limiter.close()
        if self.failures is not None:
            self.failures.flush()

    def failed(self, admission: Admission) -> None:
        """The admitted request failed on the server's side: counted (`metering.failures`), never
        billed."""
        if self.failures is not None:
            self.failures.add(admission.org_id, admission.api_key_id, admission.deployment)

    def abandon(self, admission: Admission) -> None:
        """Nothing was served: release the hold and the tokens; no usage is written."""
        self._limiter.refund(list(admission.subjects), admission.tokens_taken)
        self._budgets.release(admission.hold, admission.request_id)


def _ledger_unavailable() -> errors.ServiceUnavailable:
    # A request is answered only once its usage is durable: while the ledger cannot write, serving
    # it would only hold its answer until the metering wait runs out.
    return errors.ServiceUnavailable(
        "Usage cannot be recorded right now (the database is unavailable); retry shortly.",
        code="metering_unavailable",
        retry_after=2,
    )
