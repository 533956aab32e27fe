"""How the playground draws an explanation: bars strongest first with their sign and a width in
5% steps of the strongest, a text's tokens as bars, an image's saliency map over the image."""

from __future__ import annotations

from openmaas.console.deployments import _drawn


def test_tabular_scores_are_bars_strongest_first_with_their_sign() -> None:
    drawn = _drawn(
        {"target": "yes", "convergence_delta": 0.001, "attributions": {"age": 0.4, "plan": -0.2, "x": 0.01}},
        None,
    )
    bars = drawn["bars"]
    assert [b["label"] for b in bars] == ["age", "plan", "x"]
    assert [b["width"] for b in bars] == [100, 50, 0]
    assert [b["positive"] for b in bars] == [True, False, True]
    assert drawn["target"] == "yes" and drawn["delta"] == 0.001


def test_a_texts_tokens_are_bars_and_an_image_is_drawn_under_its_saliency_map() -> None:
    text = _drawn({"attributions": {"tokens": ["good", "movie"], "scores": [0.1, 0.3]}}, None)
    assert [(b["label"], b["width"]) for b in text["bars"]] == [("movie", 100), ("good", 35)]
    image = _drawn({"attributions": {"pixels": {}, "heatmap_png": "AAAA"}}, "data:image/png;base64,BBBB")
    assert image["heatmap"] == "data:image/png;base64,AAAA"
    assert image["picture"] == "data:image/png;base64,BBBB"
    assert "bars" not in image
