"""The billing tests' clock-controlled platform, for metering tests too."""

from tests.integration.billing.conftest import clocked, clocked_served

__all__ = ["clocked", "clocked_served"]
