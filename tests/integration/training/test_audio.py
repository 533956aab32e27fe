"""Audio classification: spoken digits synthesised with espeak-ng (committed as a small zip)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from openmaas.datasets import validate_dataset
from openmaas.training.artifact import load_artifact, write_artifact
from openmaas.training.train import train
from tests.data.builders import SPEECH_DIGITS

AUDIO = {"duration_s": 0.9, "n_mels": 24, "hop_length": 160}


def test_spoken_digits_reach_90_percent(tmp_path: Path) -> None:
    assert SPEECH_DIGITS.stat().st_size < 2 * 1024 * 1024
    report = validate_dataset(SPEECH_DIGITS)
    assert report.ok and report.schema.sample_rates == {8000: report.rows}
    assert sorted(report.schema.classes) == sorted(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    trained = train(
        "audio-classification",
        SPEECH_DIGITS,
        {"epochs": 10, "learning_rate": 0.003, "batch_size": 16, "channels": [16, 32, 64]},
        {"audio": AUDIO},
    )
    assert trained.metrics["accuracy"] >= 0.9
    write_artifact(trained, tmp_path / "model")
    with zipfile.ZipFile(SPEECH_DIGITS) as archive:
        names = [n for n in archive.namelist() if n.endswith(".wav")][::48]
        clips = [archive.read(n) for n in names]
    predictions = load_artifact(tmp_path / "model").predict(clips)
    correct = sum(p.label == n.split("/")[0] for p, n in zip(predictions, names, strict=True))  # type: ignore[union-attr]
    assert correct >= len(names) - 1
