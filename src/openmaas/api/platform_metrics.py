"""The platform's metrics on `/metrics`, read when scraped from the counters each part keeps (nothing
here runs per request):

- per loaded deployment: queue depth, requests in flight and refused, rows per batch, the model's
  batch latency and the queue wait (the batcher's `BatchStats`);
- per LLM deployment: running and waiting sequences, KV-cache blocks used and free, prefix-cache
  lookups and hits, prompt and generated tokens, preemptions, time to first token and inter-token
  latency (the engine's own stats);
- jobs by kind and state, and the run time of ended jobs (one aggregate query: jobs run in other
  processes, the database is the only place that knows them all; every server reports the same);
- the usage ledger's backlog, batch write latency, events written and failed writes;
- request log lines dropped because its writer fell behind.

Labels stay bounded: deployments are those this server has loaded (`org_id`, `deployment`,
`version`), job kinds and states are the code's own. Nothing is labelled by request, key or input.
The scrape reads the database first, in a thread (`read_database`), then writes everything on the
event loop, where the gateway's own counters change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from openmaas.api.request_log import RequestLog
from openmaas.bootstrap import Platform
from openmaas.engine.async_engine import AsyncLLMEngine
from openmaas.histogram import Histogram
from openmaas.jobs.stats import DURATION_BOUNDS, JobStats, job_stats
from openmaas.serving.batcher import Batcher
from openmaas.serving.directory import ServedModel

log = logging.getLogger("openmaas.api")

_DEPLOYMENT = ["org_id", "deployment", "version"]


class PlatformCollector(Collector):
    def __init__(self, platform: Platform, request_log: RequestLog | None = None) -> None:
        self._platform = platform
        self._request_log = request_log
        self._jobs_read: list[JobStats] | None = None  # None: not read, or the database failed

    def read_database(self) -> None:
        """Read the job counts for the next `collect` (blocking: call it in a thread)."""
        try:
            with self._platform.db.read_session() as session:
                self._jobs_read = job_stats(session)
        except Exception as exc:  # the database is down: every other metric still answers
            log.warning("reading job metrics failed: %s: %s", type(exc).__name__, exc)
            self._jobs_read = None

    def collect(self) -> Iterator[Metric]:
        served = [m for entry in self._platform.served_models.all() for m in entry.routes or (entry,)]
        yield from _batchers(served)
        yield from _engines(served)
        yield from self._jobs()
        yield from self._ledger()
        if self._request_log is not None:
            dropped = CounterMetricFamily(
                "openmaas_request_log_dropped", "Request log lines dropped because its writer fell behind"
            )
            dropped.add_metric([], self._request_log.dropped)
            yield dropped

    def _jobs(self) -> Iterator[Metric]:
        rows = self._jobs_read
        if rows is None:
            return
        jobs = GaugeMetricFamily("openmaas_jobs", "Jobs by kind and state", labels=["kind", "state"])
        duration = HistogramMetricFamily(
            "openmaas_job_duration_seconds",
            "Run time of ended jobs, from first start to end (retries included)",
            labels=["kind", "state"],
        )
        for row in rows:
            jobs.add_metric([row.kind, row.status], row.jobs)
            if row.timed:
                buckets = [
                    (floatToGoString(bound), count)
                    for bound, count in zip(DURATION_BOUNDS, row.timed_at_or_below, strict=True)
                ]
                duration.add_metric([row.kind, row.status], [*buckets, ("+Inf", row.timed)], row.seconds)
        yield jobs
        yield duration

    def _ledger(self) -> Iterator[Metric]:
        ledger = self._platform.meter
        backlog = GaugeMetricFamily("openmaas_ledger_backlog_events", "Usage events queued, not yet written")
        backlog.add_metric([], ledger.backlog)
        yield backlog
        write = _histogram("openmaas_ledger_write_seconds", "Time to write one batch of usage events", [])
        _observe(write, [], ledger.write_seconds)
        yield write
        written = CounterMetricFamily("openmaas_ledger_events_written", "Usage events written")
        written.add_metric([], ledger.events_written)
        yield written
        failures = CounterMetricFamily(
            "openmaas_ledger_write_failures", "Failed tries to write a batch of usage events (retried)"
        )
        failures.add_metric([], ledger.write_failures)
        yield failures


def _labels(model: ServedModel) -> list[str]:
    return [model.org_id, model.name, model.version_id]


def _batchers(served: list[ServedModel]) -> Iterator[Metric]:
    queued = GaugeMetricFamily(
        "openmaas_deployment_queue_depth", "Requests waiting for a batch", labels=_DEPLOYMENT
    )
    in_flight = GaugeMetricFamily(
        "openmaas_deployment_requests_in_flight", "Requests awaiting an answer", labels=_DEPLOYMENT
    )
    refused = CounterMetricFamily(
        "openmaas_deployment_requests_dropped",
        "Requests not run: queue full (503), past their deadline (504), or their client gone",
        labels=[*_DEPLOYMENT, "reason"],
    )
    rows = _histogram("openmaas_deployment_batch_rows", "Rows per batch the model ran")
    seconds = _histogram("openmaas_deployment_batch_seconds", "Time the model took per batch")
    waited = _histogram("openmaas_deployment_queue_wait_seconds", "Time a request waited for its batch")
    for model in served:
        batcher = getattr(model.runtime, "batcher", None)
        if not isinstance(batcher, Batcher):
            continue
        labels = _labels(model)
        stats = batcher.stats
        queued.add_metric(labels, batcher.queued)
        in_flight.add_metric(labels, getattr(model.runtime, "in_flight", 0))
        dropped = {"queue_full": stats.rejected, "expired": stats.expired, "client_gone": stats.cancelled}
        for reason, count in dropped.items():
            refused.add_metric([*labels, reason], count)
        _observe(rows, labels, stats.batch_rows)
        _observe(seconds, labels, stats.batch_seconds)
        _observe(waited, labels, stats.queue_seconds)
    yield from (queued, in_flight, refused, rows, seconds, waited)


def _engines(served: list[ServedModel]) -> Iterator[Metric]:
    def gauge(name: str, text: str, labels: list[str] = _DEPLOYMENT) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, labels=labels)

    def counter(name: str, text: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, text, labels=_DEPLOYMENT)

    running = gauge("openmaas_llm_running_sequences", "Sequences being generated")
    waiting = gauge("openmaas_llm_waiting_sequences", "Sequences waiting to be scheduled")
    blocks = gauge("openmaas_llm_kv_cache_blocks", "KV-cache blocks by state", [*_DEPLOYMENT, "state"])
    hit_rate = gauge("openmaas_llm_prefix_cache_hit_rate", "Prompt blocks found / looked up in the cache")
    queried = counter("openmaas_llm_prefix_cache_queried_blocks", "Prompt blocks looked up in the cache")
    found = counter("openmaas_llm_prefix_cache_found_blocks", "Prompt blocks found in the cache")
    prompt = counter("openmaas_llm_prompt_tokens", "Prompt tokens of requests that got a first token")
    generated = counter("openmaas_llm_generation_tokens", "Tokens generated")
    preemptions = counter("openmaas_llm_preemptions", "Sequences preempted for KV-cache room")
    drafted = counter("openmaas_llm_spec_draft_tokens", "Guessed tokens verified (speculative decoding)")
    accepted = counter("openmaas_llm_spec_accepted_tokens", "Guessed tokens the model agreed with")
    ttft = _histogram("openmaas_llm_time_to_first_token_seconds", "Time to a request's first token")
    itl = _histogram("openmaas_llm_inter_token_latency_seconds", "Time between a sequence's tokens")
    for model in served:
        front = getattr(model.runtime, "engine", None)
        if not isinstance(front, AsyncLLMEngine):
            continue
        labels = _labels(model)
        stats = front.stats()
        running.add_metric(labels, stats.num_running)
        waiting.add_metric(labels, stats.num_waiting)
        blocks.add_metric([*labels, "used"], stats.num_blocks - stats.num_free_blocks)
        blocks.add_metric([*labels, "free"], stats.num_free_blocks)
        lookups = stats.prefix_cache_queried_blocks
        hit_rate.add_metric(labels, stats.prefix_cache_found_blocks / lookups if lookups else 0.0)
        queried.add_metric(labels, lookups)
        found.add_metric(labels, stats.prefix_cache_found_blocks)
        prompt.add_metric(labels, stats.prompt_tokens)
        generated.add_metric(labels, stats.generation_tokens)
        preemptions.add_metric(labels, stats.num_preemptions)
        drafted.add_metric(labels, stats.spec_draft_tokens)
        accepted.add_metric(labels, stats.spec_accepted_tokens)
        _observe(ttft, labels, front.engine.time_to_first_token)
        _observe(itl, labels, front.engine.inter_token_latency)
    yield from (running, waiting, blocks, hit_rate, queried, found, prompt, generated, preemptions)
    yield from (drafted, accepted, ttft, itl)


def _histogram(name: str, text: str, labels: list[str] = _DEPLOYMENT) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, text, labels=labels)


def _observe(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    cumulative, total = histogram.cumulative()
    bounds = [floatToGoString(b) for b in histogram.bounds]
    family.add_metric(labels, list(zip([*bounds, "+Inf"], cumulative, strict=True)), total)
