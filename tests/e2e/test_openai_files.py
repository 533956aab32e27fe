"""OpenAI's `/v1/files`, driven by the official `openai` SDK unchanged against a real server:
upload with a purpose, list (purpose filter, pages, order), retrieve, content, delete; a fine-tune
file refused with every problem named by line and nothing left behind; output purposes refused;
another organisation's ids answer 404; the bytes count towards storage billing."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from openmaas.billing.scheduler import stored_bytes
from tests.support.leftovers import nothing_left
from tests.support.platforms import make_platform
from tests.support.served import Served, Tenant, serving


def chat_lines(n: int = 10) -> bytes:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i}"},
            ]
        }
        for i in range(n)
    ]
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("files")
    platform = make_platform(home / "home", f"sqlite:///{home / 'openmaas.db'}", max_dataset_bytes=64 * 1024)
    with serving(platform) as served:
        yield served


def _client(served: Served, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=tenant.key, max_retries=0)


@pytest.fixture(scope="module")
def acme(served: Served) -> Tenant:
    return served.tenant("acme")


def test_upload_list_retrieve_content_delete(served: Served, acme: Tenant) -> None:
    client = _client(served, acme)
    data = chat_lines(12)
    created = client.files.create(file=("train.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.purpose, created.bytes, created.filename) == ("fine-tune", len(data), "train.jsonl")
    assert created.status == "processed" and created.created_at > 0
    notes = client.files.create(file=("notes.pdf", b"%PDF-1.4 any bytes"), purpose="user_data")
    batch = client.files.create(file=("batch.jsonl", b'{"custom_id": "1"}\n'), purpose="batch")

    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == data
    assert client.files.content(notes.id).content == b"%PDF-1.4 any bytes"
    assert stored_bytes(served.platform.store, acme.org_id) >= len(data) + len(b"%PDF-1.4 any bytes")

    assert [f.id for f in client.files.list(purpose="fine-tune")] == [created.id]
    newest_first = [f.id for f in client.files.list()]
    assert newest_first == [batch.id, notes.id, created.id]
    first_page = client.files.list(limit=2)
    assert [f.id for f in first_page.data] == newest_first[:2] and first_page.has_more
    assert [f.id for f in client.files.list(limit=1)] == newest_first  # the SDK follows `after`
    assert [f.id for f in client.files.list(order="asc", limit=2)] == newest_first[::-1]

    deleted = client.files.delete(notes.id)
    assert (deleted.id, deleted.deleted) == (notes.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(notes.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(notes.id)
    assert not served.platform.store.path(served.platform.store.dataset_dir(acme.org_id, notes.id)).exists()


def test_another_organisations_file_answers_404(served: Served, acme: Tenant) -> None:
    mine = _client(served, acme).files.create(file=("a.txt", b"secret"), purpose="user_data")
    other = _client(served, served.tenant("globex"))
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError) as missing:
            call(mine.id)
        assert missing.value.status_code == 404
    assert [f.id for f in other.files.list()] == []
    assert _client(served, acme).files.content(mine.id).content == b"secret"


def _bad_fine_tune_file() -> bytes:
    good = json.loads(chat_lines(1))
    lines = [json.dumps(good)] * 11
    lines[1] = '{"messages": [{"role": "user", "content": "hi"}'  # line 2: cut short
    lines[3] = json.dumps({"messages": [{"role": "robot", "content": "beep"}]})  # line 4
    lines[6] = json.dumps({"messages": [{"role": "user", "content": "no answer"}]})  # line 7
    lines[8] = json.dumps({"prompt": "old format"})  # line 9
    return "\n".join(lines).encode()


def test_a_bad_fine_tune_file_is_refused_with_every_problem_by_line(served: Served, acme: Tenant) -> None:
    client = _client(served, acme)
    with nothing_left(served.platform), pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("train.jsonl", _bad_fine_tune_file()), purpose="fine-tune")
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "file" and body["code"] == "invalid_file"
    found = {(issue["line"], issue["code"]) for issue in body["issues"]}
    assert found == {
        (2, "invalid_json"),
        (4, "invalid_role"),
        (7, "no_assistant_message"),
        (9, "missing_messages"),
    }
    assert "line 2" in body["message"] and "line 9" in body["message"]

    with nothing_left(served.platform), pytest.raises(openai.BadRequestError) as too_few:
        client.files.create(file=("train.jsonl", chat_lines(3)), purpose="fine-tune")
    assert too_few.value.body["issues"][0]["code"] == "too_few_examples"  # type: ignore[index]


@pytest.mark.parametrize(
    ("purpose", "status", "param"),
    [("fine-tune-results", 400, "purpose"), ("batch_output", 400, "purpose"), ("assistants", 400, "purpose")],
)
def test_purposes_the_platform_writes_or_does_not_know_are_refused(
    served: Served, acme: Tenant, purpose: str, status: int, param: str
) -> None:
    with nothing_left(served.platform), pytest.raises(openai.APIStatusError) as refused:
        _client(served, acme).files.create(file=("x.jsonl", chat_lines()), purpose=purpose)  # type: ignore[arg-type]
    assert refused.value.status_code == status
    assert refused.value.body["param"] == param  # type: ignore[index]


def test_raw_form_mistakes_are_named(served: Served, acme: Tenant) -> None:
    headers = {"Authorization": f"Bearer {acme.key}"}
    with nothing_left(served.platform), httpx.Client(base_url=served.url, headers=headers) as http:
        no_purpose = http.post("/v1/files", files={"file": ("a.txt", b"x")})
        assert (no_purpose.status_code, no_purpose.json()["error"]["param"]) == (422, "purpose")
        no_file = http.post("/v1/files", data={"purpose": "batch"}, files={"other": ("a", b"x")})
        assert (no_file.status_code, no_file.json()["error"]["param"]) == (422, "file")
        raw = http.post("/v1/files", content=b"just bytes", headers={"Content-Type": "text/plain"})
        assert (raw.status_code, raw.json()["error"]["param"]) == (415, "file")
        too_big = http.post("/v1/files", data={"purpose": "batch"}, files={"file": ("a", b"x" * 70_000)})
        assert (too_big.status_code, too_big.json()["error"]["param"]) == (413, "file")
        cut = http.post(
            "/v1/files",
            content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        assert (cut.status_code, cut.json()["error"]["param"]) == (400, "body")
        bad_order = http.get("/v1/files", params={"order": "sideways"})
        assert bad_order.status_code == 422


def test_the_platform_writes_output_files(served: Served, acme: Tenant, tmp_path: Path) -> None:
    from openmaas.datasets.files import store_output_file

    source = tmp_path / "results.csv"
    source.write_text("step,train_loss\n1,2.5\n")
    platform = served.platform
    with platform.db.session() as session:
        written = store_output_file(
            session,
            platform.store,
            org_id=acme.org_id,
            purpose="fine-tune-results",
            filename="step_metrics.csv",
            source=source,
            now=platform.clock.now(),
        )
    client = _client(served, acme)
    assert client.files.retrieve(written.id).purpose == "fine-tune-results"
    assert client.files.content(written.id).content == source.read_bytes()


def test_cli_files_upload_list_download_delete(served: Served, tmp_path: Path) -> None:
    from tests.e2e.test_cli import Cli

    cli, key = Cli(served, tmp_path), served.tenant("cli-files").key
    train = tmp_path / "train.jsonl"
    train.write_bytes(chat_lines(10))
    created = cli.json("files", "upload", str(train), "--purpose", "fine-tune", key=key)
    assert isinstance(created, dict) and created["purpose"] == "fine-tune"
    assert created["bytes"] == train.stat().st_size
    listed = cli.json("files", "list", "--purpose", "fine-tune", key=key)
    assert isinstance(listed, list) and [f["id"] for f in listed] == [created["id"]]
    assert created["id"] in cli("files", "show", created["id"], key=key).stdout
    copy = tmp_path / "copy.jsonl"
    cli("files", "download", created["id"], "-o", str(copy), key=key)
    assert copy.read_bytes() == train.read_bytes()
    deleted = cli.json("files", "delete", created["id"], key=key)
    assert deleted == {"id": created["id"], "object": "file", "deleted": True}

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(chat_lines(10) + b'{"messages": [{"role": "user", "content": "x"}]}\n')
    refused = cli("files", "upload", str(bad), "--purpose", "fine-tune", key=key, check=False)
    assert refused.returncode == 1
    assert "no_assistant_message" in refused.stdout and "11" in refused.stdout
    assert cli.json("files", "list", key=key) == []
