"""The artifact folder: safetensors + JSON manifest, written atomically, loaded to predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from openmaas.errors import Conflict, ValidationFailed
from openmaas.registry.manifest import read_manifest
from openmaas.training import artifact
from openmaas.training.artifact import load_artifact, write_artifact
from openmaas.training.predictor import ClassPrediction, ValuePrediction
from openmaas.training.result import TrainedModel
from openmaas.training.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=120), "b": rng.choice(["x", "y"], size=120)})
    frame["label"] = np.where(frame["a"] + (frame["b"] == "x") > 0.5, "yes", "no")
    path = tmp_path_factory.mktemp("data") / "d.csv"
    frame.to_csv(path, index=False)
    return train("tabular-classification", path, {"epochs": 3, "hidden_sizes": [8]})


def test_artifact_roundtrip_predicts_the_same(trained: TrainedModel, tmp_path: Path) -> None:
    manifest = write_artifact(trained, tmp_path / "v1", lineage={"dataset": "ds_1", "job": "job_1"})
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == [
        "manifest.json",
        "model.safetensors",
        "preprocessing.safetensors",
    ]
    assert read_manifest(tmp_path / "v1") == json.loads(json.dumps(manifest))
    assert manifest["task"] == "tabular-classification"
    assert manifest["architecture"]["name"] == "mlp"
    assert manifest["output_signature"]["labels"] == ["no", "yes"]
    assert {f["name"] for f in manifest["input_signature"]["features"]} == {"a", "b"}
    assert set(manifest["metrics"]) >= {"accuracy", "f1", "roc_auc", "confusion_matrix"}
    assert len(manifest["history"]) == 3 and manifest["training_params"]["epochs"] == 3
    rows = [{"a": 2.0, "b": "x"}, {"a": -2.0, "b": "y"}, {"b": "x"}]
    predictor = load_artifact(tmp_path / "v1")
    assert predictor.manifest["lineage"] == {"dataset": "ds_1", "job": "job_1"}
    loaded = predictor.predict(rows)
    direct = [
        p.to_dict()
        for p in artifact.Predictor(
            trained.task, trained.model, trained.preprocessor, trained.labels
        ).predict(rows)
    ]
    assert [p.to_dict() for p in loaded] == direct
    assert all(isinstance(p, ClassPrediction) for p in loaded)
    first = loaded[0]
    assert isinstance(first, ClassPrediction) and abs(sum(first.probabilities.values()) - 1) < 1e-5


def test_existing_destination_is_a_conflict(trained: TrainedModel, tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    with pytest.raises(Conflict):
        write_artifact(trained, tmp_path / "v1")


def test_failed_write_leaves_nothing(
    trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(artifact, "save_file", fail)
    with pytest.raises(OSError):
        write_artifact(trained, tmp_path / "v1")
    assert list(tmp_path.iterdir()) == []


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed) as info:
        load_artifact(tmp_path)
    assert info.value.param == "artifact"


def test_bad_predict_inputs_name_the_field(trained: TrainedModel, tmp_path: Path) -> None:
    write_artifact(trained, tmp_path / "v1")
    predictor = load_artifact(tmp_path / "v1")
    for bad in ([], "text", ["not a row"]):
        with pytest.raises(ValidationFailed) as info:
            predictor.predict(bad)  # type: ignore[arg-type]
        assert info.value.param == "inputs"
    assert not isinstance(predictor.predict([{"a": 1.0}])[0], ValuePrediction)
