"""Builders of the datasets the training tests use: scikit-learn's bundled sets written out in the
formats users upload, and small synthetic sets (topic texts, low-rank interactions)."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

SPEECH_DIGITS = Path(__file__).parent / "speech_digits.zip"


def breast_cancer_csv(path: Path) -> Path:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "label"})
    frame["label"] = frame["label"].map({0: "malignant", 1: "benign"})
    frame.to_csv(path, index=False)
    return path


def diabetes_csv(path: Path) -> Path:
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)
    return path


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_zip(path: Path, limit: int | None = None) -> Path:
    """scikit-learn's 8×8 digits (the first `limit`) as grayscale PNGs in class folders `0/` … `9/`."""
    digits = load_digits()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i, (image, label) in enumerate(zip(digits.images[:limit], digits.target[:limit], strict=True)):
            archive.writestr(f"digits/{label}/{i:04d}.png", png_bytes(image * 255.0 / 16.0))
    return path


_TOPICS = {
    "sports": "team match goal coach player season league score win stadium referee",
    "cooking": "recipe oven flour sugar bake kitchen taste salt butter dinner spoon",
    "space": "rocket orbit planet star moon launch galaxy astronaut telescope comet",
}
_FILLER = [
    "the",
    "a",
    "today",
    "we",
    "they",
    "really",
    "some",
    "very",
    "new",
    "old",
    "big",
    "small",
    "this",
    "that",
    "and",
    "then",
]


def topic_texts_csv(path: Path, per_class: int = 150, seed: int = 0) -> Path:
    """Three topics; each sentence mixes 2–4 topic words with shared filler words."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in _TOPICS.items():
        vocab = words.split()
        for _ in range(per_class):
            tokens = list(rng.choice(vocab, size=int(rng.integers(2, 5)))) + list(
                rng.choice(_FILLER, size=int(rng.integers(3, 8)))
            )
            rng.shuffle(tokens)
            rows.append({"text": " ".join(tokens), "label": label})
    pd.DataFrame(rows).sample(frac=1.0, random_state=seed).to_csv(path, index=False)
    return path


def interactions_csv(
    path: Path, users: int = 300, items: int = 200, rank: int = 4, per_user: int = 20, seed: int = 0
) -> Path:
    """Implicit interactions drawn from low-rank user/item affinities (no popularity bias built in)."""
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(size=(users, rank))
    item_factors = rng.normal(size=(items, rank))
    affinity = user_factors @ item_factors.T * 1.5
    rows = []
    for user in range(users):
        weights = np.exp(affinity[user] - affinity[user].max())
        chosen = rng.choice(items, size=per_user, replace=False, p=weights / weights.sum())
        rows += [{"user": f"u{user}", "item": f"i{item}", "rating": 1.0} for item in chosen]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def zip_bytes(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive holding `entries` (name → bytes), names written as given (`../x`, `/etc/x`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def symlink_zip(name: str, target: str) -> bytes:
    """A zip whose one entry `name` is a symbolic link to `target`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, target)
    return buffer.getvalue()
