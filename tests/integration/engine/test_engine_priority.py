"""Batch lines wait behind live requests: with the engine full, a live request added after many
batch lines (`priority=1`) starts before the lines still waiting, no running line is preempted
for it, and every line still finishes."""

from __future__ import annotations

from pathlib import Path

from openmaas.engine.sampling_params import SamplingParams
from tests.integration.engine.conftest import make_engine


def test_a_live_request_starts_before_the_batch_lines_waiting(model_dirs: dict[str, Path]) -> None:
    engine = make_engine(model_dirs["llama"], max_num_seqs=2)
    params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    for i in range(6):
        engine.add_request(f"line-{i}", [5, 6, 7 + i], params, priority=1)
    started: list[str] = []  # request ids in the order of their first token
    finished: set[str] = set()

    def step() -> None:
        for out in engine.step():
            if out.request_id not in started:
                started.append(out.request_id)
            if out.finish_reason is not None:
                finished.add(out.request_id)

    step()  # the engine is full: two lines run, four wait
    engine.add_request("live", [5, 6, 40], params)
    while engine.has_unfinished_requests:
        step()
    assert started[:2] == ["line-0", "line-1"]  # the running lines were not preempted for it
    assert started[2] == "live"  # ahead of the four lines that waited longer
    assert started[3:] == [f"line-{i}" for i in range(2, 6)]  # then the lines, in their order
    assert finished == {"live", *(f"line-{i}" for i in range(6))}
    assert engine.stats().num_preemptions == 0
