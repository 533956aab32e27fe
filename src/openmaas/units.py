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
- `batch_input_tokens`, `batch_output_tokens` (per 1K tokens): the tokens of a line of a batch
  (`/v1/batches`), priced apart from live tokens so an operator can discount batch work; a
  pricebook without them prices them at `BATCH_DEFAULT_PERCENT` of the live token price.
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
    "batch_input_tokens": 1_000,
    "batch_output_tokens": 1_000,
}
UNITS = tuple(UNIT_SCALE)
RESOURCE_CLASSES = ("cpu", "gpu")
# A batch line's live unit → the unit it is metered in instead.
BATCH_UNITS: dict[str, str] = {"input_tokens": "batch_input_tokens", "output_tokens": "batch_output_tokens"}
# What a batch unit costs, in percent of its live unit, where no price names it (OpenAI: half).
BATCH_DEFAULT_PERCENT = 50
