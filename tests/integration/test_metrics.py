"""`/metrics` over a real server: per deployment its queue, batch sizes and latencies; per LLM
deployment its sequences, KV-cache blocks, prefix-cache hits, tokens and latency histograms; jobs by
kind and state with their run times; the ledger's backlog and write latency — with labels that
name deployments, kinds and states only, never a request, a key or user input."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from openmaas import Client
from openmaas.api import platform_metrics
from openmaas.engine.testing import build_tiny_model
from openmaas.jobs import queue
from openmaas.jobs.tables import JobStatus
from tests.integration.billing.helpers import make_org
from tests.support.served import Served

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 4, "max_model_len": 256, "block_size": 16}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(served: Served) -> Samples:
    with served.client() as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    matches = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def _linear(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    w = numpy_helper.from_array(np.ones((3, 2), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "linear", [x], [y], [w])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_llm_engine_metrics(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    with Client(served.url, tenant.key) as client:
        client.import_model(build_tiny_model(tmp_path / "tiny", "llama", max_position_embeddings=256), "tiny")
        client.deployments.create("tiny", name="chat", engine=ENGINE)
        client.deployments.wait_ready("chat", timeout=60)
    prompt = "the same long prompt, twice, so that the second finds its blocks in the prefix cache " * 2
    used = []
    with served.client(tenant.key) as http:
        for i in range(3):
            body = {
                "model": "chat",
                "prompt": prompt if i < 2 else "short",
                "max_tokens": 5,
                "temperature": 0,
            }
            answer = http.post("/v1/completions", json=body)
            assert answer.status_code == 200, answer.text
            used.append(answer.json()["usage"])
    samples = _scrape(served)
    chat = {"org_id": tenant.org_id, "deployment": "chat"}
    prompt_tokens = sum(u["prompt_tokens"] for u in used)
    generated = sum(u["completion_tokens"] for u in used)
    assert _value(samples, "openmaas_llm_prompt_tokens_total", **chat) == prompt_tokens
    assert _value(samples, "openmaas_llm_generation_tokens_total", **chat) == generated
    assert _value(samples, "openmaas_llm_time_to_first_token_seconds_count", **chat) == 3
    assert _value(samples, "openmaas_llm_time_to_first_token_seconds_sum", **chat) > 0
    assert _value(samples, "openmaas_llm_time_to_first_token_seconds_bucket", le="+Inf", **chat) == 3
    assert _value(samples, "openmaas_llm_inter_token_latency_seconds_count", **chat) == generated - 3
    assert _value(samples, "openmaas_llm_running_sequences", **chat) == 0
    assert _value(samples, "openmaas_llm_waiting_sequences", **chat) == 0
    used_blocks = _value(samples, "openmaas_llm_kv_cache_blocks", state="used", **chat)
    free_blocks = _value(samples, "openmaas_llm_kv_cache_blocks", state="free", **chat)
    assert used_blocks == 0 and free_blocks > 0
    found = _value(samples, "openmaas_llm_prefix_cache_found_blocks_total", **chat)
    queried = _value(samples, "openmaas_llm_prefix_cache_queried_blocks_total", **chat)
    assert 0 < found < queried  # the second long prompt's blocks were found, the first's were not
    assert _value(samples, "openmaas_llm_prefix_cache_hit_rate", **chat) == pytest.approx(found / queried)
    # The ledger wrote the three requests' usage.
    assert _value(samples, "openmaas_ledger_events_written_total") >= 3
    assert _value(samples, "openmaas_ledger_write_seconds_count") >= 1
    assert _value(samples, "openmaas_ledger_backlog_events") == 0
    _labels_are_bounded(samples, secrets=[tenant.key, tenant.key_id, prompt])


def test_batcher_metrics_per_deployment(served: Served, tmp_path: Path) -> None:
    tenant = served.tenant("acme")
    with Client(served.url, tenant.key) as client:
        client.import_model(_linear(tmp_path / "linear.onnx"), "linear")
        client.deployments.create("linear", name="lin")
        client.deployments.wait_ready("lin", timeout=60)
    with served.client(tenant.key) as http:
        for _ in range(3):
            rows = {"inputs": [[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]}
            assert http.post("/v1/deployments/lin/predict", json=rows).status_code == 200
    samples = _scrape(served)
    lin = {"org_id": tenant.org_id, "deployment": "lin"}
    assert _value(samples, "openmaas_deployment_batch_rows_sum", **lin) == 6
    batches = _value(samples, "openmaas_deployment_batch_rows_count", **lin)
    assert 1 <= batches <= 3
    assert _value(samples, "openmaas_deployment_batch_rows_bucket", le="2.0", **lin) == batches
    assert _value(samples, "openmaas_deployment_batch_seconds_count", **lin) == batches
    assert _value(samples, "openmaas_deployment_batch_seconds_sum", **lin) > 0
    assert _value(samples, "openmaas_deployment_queue_wait_seconds_count", **lin) == 3
    assert _value(samples, "openmaas_deployment_queue_depth", **lin) == 0
    assert _value(samples, "openmaas_deployment_requests_in_flight", **lin) == 0
    assert _value(samples, "openmaas_deployment_requests_dropped_total", reason="queue_full", **lin) == 0
    version = {
        dict(labels)["version"] for (name, labels) in samples if name == "openmaas_deployment_queue_depth"
    }
    assert len(version) == 1 and version.pop().startswith("mv_")
    _labels_are_bounded(samples, secrets=[tenant.key, tenant.key_id])


class _Params(BaseModel):
    epochs: int = 1


def test_jobs_by_state_and_their_run_times_come_from_the_database(served: Served) -> None:
    platform = served.platform
    org = make_org(platform, "acme")
    start, lease = platform.clock.now(), timedelta(seconds=30)

    def run(kind: str, seconds: float, status: JobStatus) -> None:
        with platform.db.session() as session:
            queue.enqueue(session, org_id=org, kind=kind, params=_Params(), now=start, max_attempts=1)
        with platform.db.session() as session:
            claim = queue.claim_next(session, owner="w", now=start, lease=lease, org_limit=10)
            assert claim is not None
            queue.finish(session, claim, status, now=start + timedelta(seconds=seconds))

    run("train", 90, JobStatus.SUCCEEDED)
    run("train", 3, JobStatus.SUCCEEDED)
    run("optimize", 700, JobStatus.FAILED)
    with platform.db.session() as session:
        for _ in range(2):
            queue.enqueue(session, org_id=org, kind="train", params=_Params(), now=start, max_attempts=1)
    samples = _scrape(served)
    assert _value(samples, "openmaas_jobs", kind="train", state="queued") == 2
    assert _value(samples, "openmaas_jobs", kind="train", state="succeeded") == 2
    assert _value(samples, "openmaas_jobs", kind="optimize", state="failed") == 1
    train = {"kind": "train", "state": "succeeded"}
    assert _value(samples, "openmaas_job_duration_seconds_count", **train) == 2
    assert _value(samples, "openmaas_job_duration_seconds_sum", **train) == pytest.approx(93, abs=0.01)
    assert _value(samples, "openmaas_job_duration_seconds_bucket", le="5.0", **train) == 1
    assert _value(samples, "openmaas_job_duration_seconds_bucket", le="60.0", **train) == 1
    assert _value(samples, "openmaas_job_duration_seconds_bucket", le="120.0", **train) == 2
    assert _value(samples, "openmaas_job_duration_seconds_bucket", le="+Inf", **train) == 2
    failed = {"kind": "optimize", "state": "failed"}
    assert _value(samples, "openmaas_job_duration_seconds_bucket", le="600.0", **failed) == 0
    assert _value(samples, "openmaas_job_duration_seconds_bucket", le="1800.0", **failed) == 1
    assert not [
        name
        for (name, labels) in samples
        if name.startswith("openmaas_job_duration") and ("state", "queued") in labels
    ]


def test_a_database_failure_leaves_the_other_metrics_answering(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_: object) -> None:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(platform_metrics, "job_stats", down)
    with served.client() as http:
        assert http.get("/healthz").status_code == 200
    samples = _scrape(served)
    assert not [name for (name, _) in samples if name == "openmaas_jobs"]
    assert _value(samples, "openmaas_ledger_backlog_events") == 0
    assert any(name == "openmaas_http_requests_total" for (name, _) in samples)


def _labels_are_bounded(samples: Samples, secrets: list[str]) -> None:
    allowed = {
        "method",
        "route",
        "status",
        "le",
        "org_id",
        "deployment",
        "version",
        "state",
        "reason",
        "kind",
    }
    names = {label for (_, labels) in samples for label, _ in labels}
    assert names <= allowed, names - allowed
    values = {value for (_, labels) in samples for _, value in labels}
    assert not [v for v in values if v.startswith("req_") or any(s in v for s in secrets)]
