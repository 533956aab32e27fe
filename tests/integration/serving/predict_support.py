"""Tiny trained models of every family for the predict tests, trained once per test process with
the training library (seconds, not minutes), and a way to register one in a served platform."""

from __future__ import annotations

import atexit
import base64
import functools
import io
import shutil
import tempfile
import wave
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from openmaas.ids import new_id
from openmaas.registry import service as registry
from openmaas.registry.manifest import read_manifest
from openmaas.training.artifact import write_artifact
from openmaas.training.train import train
from tests.data.builders import SPEECH_DIGITS, digits_zip, interactions_csv, png_bytes, topic_texts_csv
from tests.support.served import Served, Tenant

FAMILIES = (
    "tabular-classification",
    "tabular-regression",
    "image-classification",
    "text-classification",
    "audio-classification",
    "recommendation",
)


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="openmaas-predict-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def churn_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """`age` and `plan` decide `churned`; `noise` does not."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.uniform(18, 80, rows).round(1),
            "plan": rng.choice(["basic", "pro", "team"], rows),
            "noise": rng.normal(size=rows),
        }
    )
    score = (frame["age"] - 45) / 10 + np.where(frame["plan"] == "basic", 1.5, -1.5)
    frame["label"] = np.where(score > 0, "yes", "no")
    return frame


def _tabular_csv(path: Path, regression: bool) -> Path:
    frame = churn_frame()
    if regression:
        frame = frame.drop(columns="label")
        frame["target"] = frame["age"] * 2 + np.where(frame["plan"] == "pro", 10.0, 0.0)
    frame.to_csv(path, index=False)
    return path


def _small_speech_zip(path: Path, classes: tuple[str, ...] = ("one", "two", "three"), per: int = 8) -> Path:
    with zipfile.ZipFile(SPEECH_DIGITS) as source, zipfile.ZipFile(path, "w") as out:
        for label in classes:
            names = sorted(n for n in source.namelist() if n.startswith(f"{label}/") and n.endswith(".wav"))
            for name in names[:per]:
                out.writestr(name, source.read(name))
    return path


@functools.cache
def artifact(family: str, variant: int = 0) -> Path:
    """The artifact folder of a tiny model of `family` (variant 1: another seed, another version)."""
    work = _workdir() / f"{family}-{variant}"
    work.mkdir()
    common = {"epochs": 2, "seed": variant}
    if family.startswith("tabular"):
        data = _tabular_csv(work / "data.csv", family == "tabular-regression")
        params: dict[str, Any] = {**common, "epochs": 15, "hidden_sizes": [16], "learning_rate": 0.02}
        prep: dict[str, Any] = {}
    elif family == "image-classification":
        data = digits_zip(work / "digits.zip", limit=120)
        params = {**common, "channels": [4], "batch_size": 32}
        prep = {"image": {"height": 8, "width": 8, "grayscale": True}}
    elif family == "text-classification":
        data = topic_texts_csv(work / "texts.csv", per_class=30)
        params = {**common, "embedding_dim": 16, "hidden_size": 16}
        prep = {"text": {"vocab_size": 200, "max_length": 16}}
    elif family == "audio-classification":
        data = _small_speech_zip(work / "speech.zip")
        params = {**common, "channels": [4], "batch_size": 8}
        prep = {"audio": {"duration_s": 0.5, "n_mels": 16}}
    else:
        data = interactions_csv(work / "interactions.csv", users=40, items=30, per_user=8)
        params = {**common, "factors": 8, "k": 5}
        prep = {}
    folder = work / "artifact"
    write_artifact(train(family, data, params, prep), folder)
    return folder


def register(served: Served, tenant: Tenant, folder: Path, name: str) -> str:
    """Put an artifact folder in the platform's store as a new version of `name`; its ref."""
    platform = served.platform
    version_id = new_id("mv_")
    relative = platform.store.model_dir(tenant.org_id, version_id)
    shutil.copytree(folder, platform.store.path(relative))
    with platform.db.session() as session:
        model, version = registry.register_version(
            session,
            version_id=version_id,
            org_id=tenant.org_id,
            model_name=name,
            artifact_path=relative,
            manifest=read_manifest(folder),
            lineage={"dataset_id": None, "job_id": None, "parent_version_id": None},
            now=platform.clock.now(),
        )
        return f"{model.name}:{version.version}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def digit_png(value: int) -> bytes:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return png_bytes(digits.images[list(digits.target).index(value)] * 255.0 / 16.0)


def speech_wav(label: str = "two", index: int = 0) -> bytes:
    with zipfile.ZipFile(SPEECH_DIGITS) as source:
        names = sorted(n for n in source.namelist() if n.startswith(f"{label}/") and n.endswith(".wav"))
        return source.read(names[index])


def silent_wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(seconds * rate))
    return buffer.getvalue()
