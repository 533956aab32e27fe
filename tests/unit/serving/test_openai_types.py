"""The OpenAI-shaped request bodies: OpenAI's bounds, checked before anything reaches the engine."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from openmaas.engine.sampling_params import SamplingParams
from openmaas.errors import InvalidRequest
from openmaas.serving.openai_types import ChatCompletionRequest, CompletionRequest

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("seed", [2**63, 2**64, -(2**63) - 1])
def test_a_seed_outside_signed_64_bits_is_refused_naming_seed(seed: int) -> None:
    for kind, body in ((ChatCompletionRequest, CHAT), (CompletionRequest, {"model": "m", "prompt": "hi"})):
        with pytest.raises(ValidationError) as caught:
            kind.model_validate({**body, "seed": seed})
        assert [e["loc"] for e in caught.value.errors()] == [("seed",)]
    # The engine's own parameters (used without the HTTP layer) refuse it too.
    with pytest.raises(InvalidRequest) as refused:
        SamplingParams(seed=seed)
    assert refused.value.param == "seed"


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63), 0, None])
def test_every_signed_64_bit_seed_is_taken(seed: int | None) -> None:
    request = ChatCompletionRequest.model_validate({**CHAT, "seed": seed, "n": 16})
    assert request.to_sampling().seed == seed
