"""Image classification: scikit-learn's 8×8 digits as PNG class folders in a zip."""

from __future__ import annotations

from pathlib import Path

from openmaas.datasets import validate_dataset
from openmaas.datasets.archive import iter_entries
from openmaas.training.artifact import load_artifact, write_artifact
from openmaas.training.train import train
from tests.data.builders import digits_zip


def test_digits_reach_95_percent(tmp_path: Path) -> None:
    path = digits_zip(tmp_path / "digits.zip")
    report = validate_dataset(path)
    assert report.ok and report.rows == 1797 and len(report.schema.classes) == 10
    assert report.schema.image_sizes == {"8x8": 1797}
    trained = train(
        "image-classification",
        path,
        {"epochs": 6, "learning_rate": 0.003},
        {"image": {"height": 8, "width": 8, "grayscale": True}},
    )
    assert trained.metrics["accuracy"] >= 0.95
    assert len(trained.metrics["confusion_matrix"]) == 10
    write_artifact(trained, tmp_path / "model")
    entries = [entry for _, entry in zip(range(30), iter_entries(path), strict=False)]
    predictions = load_artifact(tmp_path / "model").predict([entry.data for entry in entries])
    correct = sum(p.label == e.label for p, e in zip(predictions, entries, strict=True))  # type: ignore[union-attr]
    assert correct >= 27
