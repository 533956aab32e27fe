"""Imported Hugging Face BERT sequence classifiers deploy and answer `/predict` like trained text
models, with the probabilities transformers' own forward pass gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from openmaas import Client
from tests.support.served import Served

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
TEXTS = ["the movie was great", "terrible plot and bad acting", "it was fine", "great great great fine"]


def _tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials)
    tokenizer.train_from_iterator([*TEXTS, "an ok film with a good cast"] * 5, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "sentiment"
    folder.mkdir()
    _tokenizer(folder)
    config = transformers.BertConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def _reference(folder: Path, texts: list[str]) -> torch.Tensor:
    """transformers' own probabilities for the same token ids."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    encodings = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings])
    mask = torch.tensor([e.attention_mask for e in encodings])
    model = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return torch.softmax(model(input_ids=ids, attention_mask=mask).logits, dim=-1)


def test_an_imported_classifier_deploys_and_matches_transformers(served: Served, classifier: Path) -> None:
    tenant = served.tenant("acme")
    expected = _reference(classifier, TEXTS)
    with Client(served.url, tenant.key) as client:
        version = client.import_model(classifier, "sentiment")
        assert version["task"] == "text-classification"
        client.deployments.create("sentiment:1", name="sent", max_batch_size=8)
        ready = client.deployments.wait_ready("sent", timeout=60)
        assert ready.task == "text-classification"
    with served.client(tenant.key) as http:
        response = http.post("/v1/deployments/sent/predict", json={"inputs": TEXTS})
        assert response.status_code == 200, response.text
        body = response.json()
        top = http.post("/v1/deployments/sent/predict", json={"inputs": TEXTS[:1], "top_k": 1}).json()
        bad = http.post("/v1/deployments/sent/predict", json={"inputs": ["fine", 3]})
        empty = http.post("/v1/deployments/sent/predict", json={"inputs": ["ok", "  "]})
    assert body["model"] == "sentiment:1" and body["task"] == "text-classification"
    for row, prediction in zip(expected.tolist(), body["predictions"], strict=True):
        probabilities = prediction["probabilities"]
        assert list(probabilities) == ["negative", "neutral", "positive"]
        assert [probabilities[LABELS[i]] for i in range(3)] == pytest.approx(row, abs=1e-4)
        assert prediction["label"] == LABELS[max(range(3), key=row.__getitem__)]
    assert len(top["predictions"][0]["probabilities"]) == 1
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "inputs.1"
    assert empty.status_code == 422 and empty.json()["error"]["param"] == "inputs.1"


def test_a_classifier_without_labels_fails_to_load_with_the_reason(
    served: Served, classifier: Path, tmp_path: Path
) -> None:
    import shutil

    broken = tmp_path / "nolabels"
    shutil.copytree(classifier, broken)
    config = json.loads((broken / "config.json").read_text())
    config.pop("id2label"), config.pop("label2id")
    (broken / "config.json").write_text(json.dumps(config))
    tenant = served.tenant("acme")
    with Client(served.url, tenant.key) as client:
        client.import_model(broken, "nolabels")
        client.deployments.create("nolabels", name="nl")
        with pytest.raises(RuntimeError, match="failed"):
            client.deployments.wait_ready("nl", timeout=60)
