"""Invoice export: CSV from an invoice document (pure, so the CLI and SDK can use it too)."""

from __future__ import annotations

import csv
import io

from openmaas.schemas.billing import Invoice


def to_csv(invoice: Invoice) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "period",
            "kind",
            "description",
            "unit",
            "model",
            "resource_class",
            "quantity",
            "included",
            "amount",
            "currency",
        ]
    )
    for line in invoice.lines:
        writer.writerow(
            [
                invoice.period,
                line.kind,
                line.description,
                line.unit or "",
                line.model or "",
                line.resource_class or "",
                line.quantity if line.quantity is not None else "",
                line.included if line.included is not None else "",
                line.amount,
                invoice.currency,
            ]
        )
    for label, amount in (
        ("subtotal", invoice.subtotal),
        ("credit_applied", invoice.credit_applied),
        ("amount_due", invoice.amount_due),
    ):
        writer.writerow([invoice.period, label, "", "", "", "", "", "", amount, invoice.currency])
    return out.getvalue()
