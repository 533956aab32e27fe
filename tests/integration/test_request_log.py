"""The server's log, read from a real `openmaas serve` process: one parseable line per HTTP request
(JSON or logfmt, `OPENMAAS_LOG_FORMAT`) with its request id, organisation, key id, route template,
status, latency and the rows or tokens it used — never a key or a body, in error paths too — and
the deployment, job and billing events as they happen."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save

from openmaas import Client
from openmaas.api.app import create_app
from openmaas.engine.testing import build_tiny_model
from openmaas.logs import Event
from tests.support.platforms import make_platform
from tests.support.server import running_server

ENGINE = {"kv_cache_memory_bytes": 4 * 1024 * 1024, "max_num_seqs": 4, "max_model_len": 128}
PROMPT = "a-prompt-that-must-never-be-logged"


@dataclass
class Server:
    url: str
    home: Path
    log: Path
    admin_key: str

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextmanager
def _server(tmp_path: Path, log_format: str) -> Iterator[Server]:
    """`openmaas serve` on a free port (no in-process worker), its stderr in a file; stopped with
    SIGINT as an operator would, so the log is complete when the block ends."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = tmp_path / "home"
    admin_key = "om-" + secrets.token_urlsafe(32)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "OPENMAAS_HOME": str(home),
        "OPENMAAS_PORT": str(port),
        "OPENMAAS_ADMIN_KEY": admin_key,
        "OPENMAAS_SECRET_KEY": secrets.token_hex(32),
        "OPENMAAS_WORKER_IN_PROCESS": "false",
        "OPENMAAS_LOG_FORMAT": log_format,
        "OPENMAAS_MAX_BODY_BYTES": "65536",
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }
    log = tmp_path / "server.log"
    with open(log, "wb") as stderr, open(tmp_path / "stdout.txt", "wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "openmaas.cli.main", "serve"], env=env, stdout=stdout, stderr=stderr
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield Server(url, home, log, admin_key)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tenant(server: Server) -> tuple[str, str, str]:
    """A new organisation and key: (org id, key id, key)."""
    with server.http(server.admin_key) as admin:
        org = admin.post("/v1/admin/organizations", json={"name": "acme"}, headers={"x-request-id": "t-org"})
        assert org.status_code == 201, org.text
        key = admin.post(
            f"/v1/admin/organizations/{org.json()['id']}/api_keys",
            json={"name": "app"},
            headers={"x-request-id": "t-key"},
        )
        assert key.status_code == 201, key.text
    return org.json()["id"], key.json()["id"], key.json()["key"]


def _linear(path: Path) -> Path:
    """An ONNX file computing y = x @ w (3 inputs, 2 outputs), with a dynamic batch axis."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    w = numpy_helper.from_array(np.ones((3, 2), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "linear", [x], [y], [w])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    # Every line the server wrote is one JSON object (a third-party library writing to stderr
    # directly would show here as an unparseable line).
    return [json.loads(line) for line in lines]


_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def _logfmt(line: str) -> dict[str, Any]:
    pairs = _PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, f"not logfmt: {line!r}"
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


def _requests(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    lines = [r for r in records if r.get("logger") == "openmaas.requests"]
    by_id = {r["request_id"]: r for r in lines}
    assert len(by_id) == len(lines), "a request id logged twice: one line per request"
    return by_id


def test_a_real_server_logs_each_request_once_as_json_and_never_a_key(tmp_path: Path) -> None:
    llm = build_tiny_model(tmp_path / "tiny", "llama", max_position_embeddings=128)
    onnx_file = _linear(tmp_path / "linear.onnx")
    bogus = "om-" + secrets.token_urlsafe(32)
    with _server(tmp_path, "json") as server:
        org_id, key_id, key = _tenant(server)
        with Client(server.url, key) as client:
            client.import_model(llm, "tiny")
            client.deployments.create("tiny", name="chat", engine=ENGINE)
            client.import_model(onnx_file, "linear")
            client.deployments.create("linear", name="lin")
            broken = client.import_model(llm, "broken")
            (server.home / "artifacts" / "models" / org_id / broken["id"] / "model.safetensors").unlink()
            client.deployments.create("broken", engine=ENGINE)
            client.deployments.wait_ready("chat", timeout=60)
            client.deployments.wait_ready("lin", timeout=60)
            with pytest.raises(RuntimeError, match="failed"):
                client.deployments.wait_ready("broken", timeout=60)
        csv = tmp_path / "data.csv"
        csv.write_text("x,label\n1,a\n2,b\n")
        with server.http(key) as http:
            asked = {"model": "chat", "prompt": PROMPT, "max_tokens": 4, "temperature": 0}
            completed = http.post("/v1/completions", json=asked, headers={"x-request-id": "t-complete"})
            assert completed.status_code == 200, completed.text
            streamed = http.post(
                "/v1/completions", json={**asked, "stream": True}, headers={"x-request-id": "t-stream"}
            )
            assert streamed.status_code == 200
            rows = {"inputs": [[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]}
            predicted = http.post(
                "/v1/deployments/lin/predict", json=rows, headers={"x-request-id": "t-predict"}
            )
            assert predicted.status_code == 200, predicted.text
            wrong = http.post(
                "/v1/deployments/lin/predict",
                json={"inputs": [[1.0]]},
                headers={"x-request-id": "t-predict-bad"},
            )
            assert wrong.status_code in (400, 422)
            assert http.get("/v1/models", headers={"x-request-id": "t-models"}).status_code == 200
            assert http.get("/v1/nowhere", headers={"x-request-id": "t-unmatched"}).status_code == 404
            uploaded = http.post(
                "/v1/datasets",
                params={"name": "tiny-data", "filename": "data.csv"},
                content=csv.read_bytes(),
                headers={"x-request-id": "t-upload"},
            )
            assert uploaded.status_code == 201, uploaded.text
        with server.http(bogus) as http:
            assert http.get("/v1/models", headers={"x-request-id": "t-bogus"}).status_code == 401
        with server.http(server.admin_key) as admin:
            invalid = admin.post(
                "/v1/admin/organizations", json={"nom": 1}, headers={"x-request-id": "t-invalid"}
            )
            assert invalid.status_code in (400, 422)
            huge = admin.post(
                "/v1/admin/organizations",
                json={"name": "x" * 100_000},
                headers={"x-request-id": "t-too-large"},
            )
            assert huge.status_code == 413
            credit = admin.post(
                f"/v1/admin/organizations/{org_id}/credits",
                json={"amount": "12.50"},
                headers={"x-request-id": "t-credit"},
            )
            assert credit.status_code == 201, credit.text
        time.sleep(0.3)
    text = server.log.read_text()
    for secret in (server.admin_key, key, bogus, "Bearer", PROMPT):
        assert secret not in text
    records = _json_lines(text)
    requests = _requests(records)

    usage = completed.json()["usage"]
    line = requests["t-complete"]
    assert line["route"] == "/v1/completions" and line["method"] == "POST" and line["status"] == 200
    assert (line["org_id"], line["key_id"]) == (org_id, key_id)
    assert (line["input_tokens"], line["output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["ts"].endswith("Z") and line["level"] == "info" and line["event"] == "request"
    assert requests["t-stream"]["output_tokens"] >= 1
    assert requests["t-predict"]["route"] == "/v1/deployments/{deployment}/predict"
    assert requests["t-predict"]["rows"] == 2 and requests["t-predict"]["status"] == 200
    refused = requests["t-predict-bad"]
    assert refused["status"] == wrong.status_code and "rows" not in refused
    assert requests["t-models"]["route"] == "/v1/models" and requests["t-models"]["key_id"] == key_id
    assert requests["t-unmatched"]["route"] == "<unmatched>" and requests["t-unmatched"]["status"] == 404
    assert requests["t-bogus"]["status"] == 401 and requests["t-bogus"]["key_id"] is None
    assert requests["t-invalid"]["status"] == invalid.status_code
    assert requests["t-too-large"]["status"] == 413
    assert requests["t-org"]["status"] == 201 and requests["t-key"]["route"].endswith("/api_keys")

    events = [r for r in records if "event" in r and r["event"] != "request"]
    loaded = {e["deployment"] for e in events if e["event"] == "deployment_loaded" and e["org_id"] == org_id}
    assert loaded == {"chat", "lin"}
    failed = [e for e in events if e["event"] == "deployment_failed"]
    assert [e["deployment"] for e in failed] == ["broken"] and failed[0]["level"] == "error"
    assert "safetensors" in failed[0]["reason"] and "Traceback" in failed[0]["exc"]
    created = [e for e in events if e["event"] == "job_status" and e["org_id"] == org_id]
    assert [e["status"] for e in created] == ["queued"] and created[0]["kind"]
    credits = [e for e in events if e["event"] == "credit_transaction"]
    assert [(c["org_id"], c["kind"], c["amount"]) for c in credits] == [(org_id, "top_up", "12.50")]


def test_logfmt_lines_parse_and_name_the_request(tmp_path: Path) -> None:
    with _server(tmp_path, "logfmt") as server:
        org_id, key_id, key = _tenant(server)
        with server.http(key) as http:
            assert http.get("/v1/models", headers={"x-request-id": "t-models"}).status_code == 200
        with server.http("om-" + secrets.token_urlsafe(32)) as http:
            assert http.get("/v1/models", headers={"x-request-id": "t-bogus"}).status_code == 401
        time.sleep(0.3)
    text = server.log.read_text()
    assert key not in text and server.admin_key not in text
    records = [_logfmt(line) for line in text.splitlines() if line.strip()]
    requests = _requests(records)
    assert requests["t-models"]["org_id"] == org_id and requests["t-models"]["key_id"] == key_id
    assert requests["t-models"]["status"] == "200" and requests["t-models"]["route"] == "/v1/models"
    assert float(requests["t-models"]["duration_ms"]) > 0
    assert requests["t-bogus"]["status"] == "401" and "org_id" not in requests["t-bogus"]
    # What `openmaas serve` says on start: where the API and the console are.
    banner = (tmp_path / "stdout.txt").read_text()
    assert f"serving on {server.url}" in banner and f"console: {server.url}/console" in banner


@pytest.mark.parametrize("request_log", [True, False])
def test_the_request_log_can_be_turned_off(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture, request_log: bool
) -> None:
    """`OPENMAAS_REQUEST_LOG=false`: no line per request (events are still logged)."""
    caplog.set_level(logging.INFO, logger="openmaas.requests")
    platform = make_platform(tmp_path / "home", database_url, request_log=request_log)
    try:
        app = create_app(platform)
        with running_server(app) as url:
            assert httpx.get(f"{url}/healthz").status_code == 200
        lines = [r for r in caplog.records if isinstance(r.msg, Event) and r.msg.name == "request"]
        assert [r.msg.fields["route"] for r in lines] == (["/healthz"] if request_log else [])
    finally:
        platform.close()
