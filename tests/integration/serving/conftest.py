"""Fixtures shared by the serving tests: tiny random-weight LLM folders, built once per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmaas.engine.testing import build_tiny_model


@pytest.fixture(scope="session")
def tiny_llm_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two versions of one tiny Qwen2 model: the same shapes and tokenizer, other random weights
    (so their greedy answers differ). Read-only: tests import them, never change them."""
    root = tmp_path_factory.mktemp("tiny-llm")
    first, second = (
        build_tiny_model(root / f"v{seed}", "qwen2", max_position_embeddings=128, seed=seed)
        for seed in (0, 1)
    )
    return first, second
