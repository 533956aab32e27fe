"""Which rate limits apply to an organisation: its override, else the limits of its plan's
pricebook version in effect now, else the platform default."""

from __future__ import annotations

from datetime import timedelta

from openmaas.metering.ratelimit import Limits
from openmaas.metering.tables import RateLimitOverride
from tests.integration.billing.conftest import Clocked
from tests.integration.billing.helpers import make_org, make_pricebook


def test_the_plan_version_in_effect_sets_the_limits_until_an_override_replaces_them(
    clocked: Clocked,
) -> None:
    platform, limits = clocked.platform, clocked.platform.metering.limits
    settings = platform.settings
    default = Limits(settings.rate_limit_requests_per_minute, settings.rate_limit_tokens_per_minute)
    org = make_org(platform, "acme", plan="pro")

    def applied() -> Limits:
        limits.forget()
        ((subject, org_limits),) = limits.subjects(org, None)
        assert subject == org
        return org_limits

    assert applied() == default  # the plan has no version
    make_pricebook(platform, [], plan="pro")
    assert applied() == default  # its version sets no limits
    clocked.clock.advance(60)
    make_pricebook(platform, [], plan="pro", requests_per_minute=10)
    assert applied() == Limits(10, None)
    later = platform.clock.now() + timedelta(days=1)
    make_pricebook(platform, [], plan="pro", effective_from=later, requests_per_minute=99)
    assert applied() == Limits(10, None)  # not in effect yet
    clocked.move_to(later)
    assert applied() == Limits(99, None)
    with platform.db.session() as session:
        session.add(RateLimitOverride(subject_id=org, org_id=org, requests_per_minute=5, tokens_per_minute=7))
    assert applied() == Limits(5, 7)
