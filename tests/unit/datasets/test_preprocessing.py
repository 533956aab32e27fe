"""Preprocessing is declared as JSON, fitted on train only, and saved without pickle."""

from __future__ import annotations

import io
import json
import math
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from openmaas.datasets.preprocessing import (
    AudioPreprocessor,
    AudioSpec,
    ImagePreprocessor,
    ImageSpec,
    InteractionIndex,
    PreprocessingSpec,
    SplitSpec,
    TabularPreprocessor,
    TabularSpec,
    TextPreprocessor,
    TextSpec,
    load_preprocessor,
    save_preprocessor,
    split_examples,
    split_interactions,
)
from openmaas.datasets.preprocessing.audio import mel_filterbank
from openmaas.datasets.preprocessing.base import FittedPreprocessor
from openmaas.errors import ValidationFailed
from tests.data.builders import png_bytes


def _roundtrip(prep: FittedPreprocessor, tmp_path: Path) -> FittedPreprocessor:
    save_preprocessor(prep, tmp_path)
    json.loads((tmp_path / "preprocessing.json").read_text())  # plain JSON
    return load_preprocessor(tmp_path)


def _tone(freq: float, rate: int = 8000, seconds: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    samples = (np.sin(2 * math.pi * freq * t) * 20000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())
    return buffer.getvalue()


def test_spec_roundtrips_as_json_and_names_bad_fields() -> None:
    spec = PreprocessingSpec.from_dict({"split": {"test": 0.25, "seed": 3}, "text": {"tokenizer": "bpe"}})
    assert PreprocessingSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    cases = [
        ({"split": {"test": 1.5}}, "preprocessing.split.test"),
        ({"text": {"tokenizer": "sentencepiece"}}, "preprocessing.text.tokenizer"),
        ({"image": {"height": "tall"}}, "preprocessing.image.height"),
        ({"audio": {"n_mels": 1}}, "preprocessing.audio.n_mels"),
        ({"tabular": {"bogus": 1}}, "preprocessing.tabular.bogus"),
    ]
    for data, param in cases:
        with pytest.raises(ValidationFailed) as info:
            PreprocessingSpec.from_dict(data)
        assert info.value.param == param


def test_split_is_seeded_disjoint_and_stratified() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    spec = SplitSpec(validation=0.1, test=0.2, seed=7)
    first, again = split_examples(100, spec, labels), split_examples(100, spec, labels)
    assert all(np.array_equal(a, b) for a, b in zip(vars(first).values(), vars(again).values(), strict=True))
    parts = [set(first.train), set(first.validation), set(first.test)]
    assert sum(map(len, parts)) == 100 and len(set.union(*parts)) == 100
    assert (labels[first.test] == 1).sum() == 4 and (labels[first.test] == 0).sum() == 16
    other = split_examples(100, SplitSpec(seed=8), labels)
    assert not np.array_equal(first.test, other.test)


def test_interaction_split_keeps_every_user_in_train() -> None:
    users = np.repeat(np.arange(10), 10)
    split = split_interactions(users, SplitSpec(validation=0.1, test=0.2, seed=0))
    assert set(users[split.train]) == set(range(10))
    assert np.bincount(users[split.test]).tolist() == [2] * 10


def test_tabular_imputes_scales_and_one_hot_encodes(tmp_path: Path) -> None:
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, None], "c": ["a", "b", "a", None], "label": [0, 1, 0, 1]})
    prep = TabularPreprocessor.fit(train, TabularSpec(exclude=("label",)))
    rows = [{"x": 2.0, "c": "b"}, {"c": "unseen"}, {"x": "oops", "c": None}]
    out = prep.transform(rows)
    std = np.std([1.0, 2.0, 3.0])
    assert out.shape == (3, 3)
    assert torch.allclose(out[:, 0], torch.tensor([0.0, 0.0, 0.0]))  # 2.0 is the mean; missing → mean
    assert out[0, 1:].tolist() == [0.0, 1.0] and out[1, 1:].tolist() == [0.0, 0.0]
    assert out[2, 1:].tolist() == [1.0, 0.0]  # missing category → most frequent ("a")
    assert torch.allclose(prep.transform([{"x": 3.0}])[0, 0], torch.tensor(1 / std, dtype=torch.float32))
    assert torch.equal(_roundtrip(prep, tmp_path).transform(rows), out)


def test_ordinal_encoding_gives_one_column_per_feature() -> None:
    train = pd.DataFrame({"c": ["x", "y", "z", "y"]})
    prep = TabularPreprocessor.fit(train, TabularSpec(encode="ordinal", scale="none"))
    assert prep.transform([{"c": "z"}, {"c": "nope"}]).flatten().tolist() == [2.0, -1.0]


def test_text_tokenizer_learns_only_from_the_training_texts(tmp_path: Path) -> None:
    train = ["the cat sat on the mat", "a dog ate the bone"] * 20
    for kind in ("wordpiece", "bpe"):
        prep = TextPreprocessor.fit(train, TextSpec(tokenizer=kind, vocab_size=60, max_length=8))
        ids = prep.transform(["the cat", "zebra quantum xylophone"])
        assert ids.shape == (2, 8) and ids[0, 2:].eq(prep.pad_id).all()
        vocab = prep.tokenizer.get_vocab()
        assert "cat" in vocab and "zebra" not in vocab and "quantum" not in vocab
        assert torch.equal(_roundtrip(prep, tmp_path).transform(["the cat"]), ids[:1])


def test_image_resize_and_normalise(tmp_path: Path) -> None:
    images = [png_bytes(np.full((6, 6), value)) for value in (0.0, 255.0)]
    prep = ImagePreprocessor.fit(images, ImageSpec(height=4, width=4, grayscale=True))
    out = prep.transform(images)
    assert out.shape == (2, 1, 4, 4)
    assert torch.allclose(out.mean(), torch.tensor(0.0), atol=1e-5)
    assert torch.equal(_roundtrip(prep, tmp_path).transform(images), out)
    with pytest.raises(ValidationFailed):
        prep.transform([b"not an image"])


def test_mel_filterbank_is_triangular_and_covers_the_band() -> None:
    bank = mel_filterbank(8000, 256, 20, 0.0, 4000.0)
    assert bank.shape == (20, 129)
    assert bank.min() >= 0 and bank.max() <= 1.0001
    centres = bank.argmax(dim=1)
    assert torch.all(centres[1:] > centres[:-1])  # ascending, distinct centres


def test_log_mel_puts_a_tone_in_the_right_band(tmp_path: Path) -> None:
    spec = AudioSpec(sample_rate=8000, duration_s=0.5, n_mels=20)
    low, high = _tone(300.0), _tone(3000.0)
    prep = AudioPreprocessor.fit([low, high], spec)
    energies = prep.log_mel([low, high]).mean(dim=2)
    assert energies[0].argmax() < energies[1].argmax()
    out = prep.transform([low, _tone(300.0, rate=16000)])
    assert out.shape == (2, 1, 20, prep.frames)
    assert torch.allclose(out[0], out[1], atol=0.5)  # resampled 16 kHz tone matches the 8 kHz one
    assert torch.equal(_roundtrip(prep, tmp_path).transform([low]), out[:1])


def test_interaction_index_maps_ids_and_remembers_seen_items(tmp_path: Path) -> None:
    index = InteractionIndex.fit(["u1", "u1", "u2"], ["a", "b", "b"])
    assert index.transform(["u2", "ghost"]).tolist() == [1, -1]
    assert sorted(index.seen_items(0).tolist()) == [0, 1]
    restored = _roundtrip(index, tmp_path)
    assert isinstance(restored, InteractionIndex) and restored.seen_items(1).tolist() == [1]
    assert restored.popularity.tolist() == [1, 2]


def test_wav_sample_widths_decode_to_the_same_signal() -> None:
    from openmaas.datasets.media import decode_wav

    t = np.arange(800) / 8000
    signal = np.sin(2 * math.pi * 440 * t) * 0.5
    decoded = []
    for width, encode in (
        (1, lambda x: (x * 127 + 128).astype(np.uint8).tobytes()),
        (2, lambda x: (x * 32767).astype("<i2").tobytes()),
        (3, lambda x: b"".join(int(v).to_bytes(3, "little", signed=True) for v in (x * 8388607).astype(int))),
        (4, lambda x: (x * 2147483647).astype("<i4").tobytes()),
    ):
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(width)
            writer.setframerate(8000)
            writer.writeframes(encode(signal))
        samples, rate = decode_wav(buffer.getvalue())
        assert rate == 8000
        decoded.append(samples)
    for samples in decoded:
        assert np.allclose(samples, signal, atol=0.02)  # 8-bit steps are 1/128
