"""The units usage is metered in, and the resource classes of compute: the vocabulary that
metering, pricing, the API and the SDK share.

Units and the quantity a price is quoted per:
- `requests` (per request), `rows` (per row),
- `input_tokens`, `output_tokens` (per 1K tokens),
- `compute_ms` with a `resource_class` such as `cpu` or `gpu` (priced per compute-second),
- `bytes_ingested` (priced per GB, 10^9 bytes),
- `storage_gb_month_micros`: millionths of a GB-month, written by the daily storage sampler,
- `trained_tokens` (per 1K tokens): a fine-tuning job's training tokens × epochs, metered once
  when the job succeeds.
"""

from __future__ import annotations

# unit → how many base units one price quote covers
UNIT_SCALE: dict[str, int] = {
    "requests": 1,
    "rows": 1,
    "input_tokens": 1_000,
    "output_tokens": 1_000,
    "compute_ms": 1_000,
    "bytes_ingested": 1_000_000_000,
    "storage_gb_month_micros": 1_000_000,
    "trained_tokens": 1_000,
}
UNITS = tuple(UNIT_SCALE)
RESOURCE_CLASSES = ("cpu", "gpu")
