"""The competitor servers of `benchmarks/serving.py`, as source text each runs in its own venv.

Each loads the same artifact (manifest JSON + safetensors, no OpenMaaS import, so no dependency
clash), standardises the 64 features with the fitted means and deviations, runs the same MLP with
one torch thread, and answers `{"predictions": [{"label", "probabilities"}]}` for a body of
`{"inputs": [{feature: value}, ...]}` — the same work OpenMaaS does, minus auth and metering.
"""

from __future__ import annotations

MODEL = """
import json, os
import torch
from safetensors.torch import load_file

torch.set_num_threads(1)
_dir = os.environ["MODEL_DIR"]
_manifest = json.load(open(os.path.join(_dir, "manifest.json")))
_features = _manifest["preprocessing"]["state"]["features"]
FEATURES = [f["name"] for f in _features]
MEAN = torch.tensor([f["mean"] for f in _features])
STD = torch.tensor([f["std"] for f in _features])
LABELS = _manifest["labels"]
_state = load_file(os.path.join(_dir, "model.safetensors"))
_layers = []
_linear = {k.rsplit(".", 1)[0] for k in _state if k.startswith("net.")}
for name in sorted(_linear, key=lambda n: int(n.split(".")[1])):
    weight = _state[name + ".weight"]
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    linear.load_state_dict({"weight": weight, "bias": _state[name + ".bias"]})
    _layers += [linear, torch.nn.ReLU()]
NET = torch.nn.Sequential(*_layers[:-1]).eval()
SCALE, SHIFT = _state["output_scale"], _state["output_shift"]


def predict_rows(rows):
    x = torch.tensor([[float(row[name]) for name in FEATURES] for row in rows])
    with torch.inference_mode():
        probabilities = torch.softmax(NET((x - MEAN) / STD) * SCALE + SHIFT, dim=1).tolist()
    return [
        {"label": LABELS[max(range(len(p)), key=p.__getitem__)], "probabilities": dict(zip(LABELS, p))}
        for p in probabilities
    ]
"""

FLASK = (
    MODEL
    + """
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/predict")
def predict():
    return jsonify({"predictions": predict_rows(request.get_json()["inputs"])})
"""
)

FASTAPI = (
    MODEL
    + """
import sys
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class PredictRequest(BaseModel):
    inputs: list[dict[str, float]]


@app.post("/predict")
async def predict(body: PredictRequest):
    return {"predictions": predict_rows(body.inputs)}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=False, log_level="warning")
"""
)

BENTOML = (
    MODEL
    + """
import bentoml


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class MLP:
    @bentoml.api(route="/predict", batchable=True, batch_dim=0, max_batch_size=64, max_latency_ms=1000)
    def predict(self, inputs: list[dict[str, float]]) -> list[dict]:
        return predict_rows(inputs)
"""
)

RAY = (
    MODEL
    + """
import sys, time
import ray
from ray import serve
from starlette.requests import Request

ray.init(num_cpus=1, include_dashboard=False, _temp_dir=sys.argv[2], log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})


@serve.deployment(max_ongoing_requests=64, logging_config={"enable_access_log": False})
class MLP:
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def batch(self, rows: list[dict]) -> list[dict]:
        return predict_rows(rows)

    async def __call__(self, request: Request) -> dict:
        inputs = (await request.json())["inputs"]
        return {"predictions": [await self.batch(inputs[0])]}


serve.run(MLP.bind(), route_prefix="/predict")
while True:
    time.sleep(3600)
"""
)

NOTHING = """
import asyncio, sys
RESPONSE = b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\ncontent-type: application/json\\r\\n\\r\\n{}"
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(RESPONSE)
    except Exception:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""
