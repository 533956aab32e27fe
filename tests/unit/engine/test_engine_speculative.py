"""N-gram prompt lookup (engine/speculative.py): what it guesses, and when a request stops guessing."""

from __future__ import annotations

from openmaas.engine.speculative import PAUSE, WINDOW, NgramIndex, SpecState


def test_guesses_what_followed_the_latest_earlier_occurrence_of_the_longest_suffix() -> None:
    index = NgramIndex(min_n=2, max_n=4)
    #         0  1  2  3  4  5  6  7  8  9 10 11
    tokens = [5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 6, 7]
    # The suffix (6, 7) last occurred at 6..7 (followed by 2, 3), not at 1..2 (followed by 8, 9).
    assert index.propose(tokens, 2) == [2, 3]
    tokens += [8]  # (6, 7, 8) matches only at 1..3: the longer match wins over the later (7, 8)
    assert index.propose(tokens, 3) == [9, 1, 6]


def test_nothing_matches_nothing_is_guessed() -> None:
    index = NgramIndex(min_n=2, max_n=4)
    assert index.propose([1, 2, 3, 4, 5, 6], 4) == []
    assert index.propose([1, 2, 3, 4, 5, 6, 9, 1], 4) == []  # (9, 1) never occurred; n=1 is below min
    assert NgramIndex(min_n=1, max_n=4).propose([1, 2, 3, 4, 5, 6, 9, 1], 2) == [2, 3]


def test_a_loop_keeps_its_period_past_the_end_of_the_context() -> None:
    index = NgramIndex(min_n=2, max_n=3)
    tokens = [9, 4, 5, 4, 5]  # (4, 5) recurs with period 2
    assert index.propose(tokens, 5) == [4, 5, 4, 5, 4]


def test_the_index_follows_a_growing_context() -> None:
    index = NgramIndex(min_n=2, max_n=2)
    tokens = [1, 2, 3]
    assert index.propose(tokens, 1) == []
    tokens += [4, 1, 2]  # grown by several tokens at once, as an accepted run grows it
    assert index.propose(tokens, 2) == [3, 4]
    tokens += [7, 1, 2]
    assert index.propose(tokens, 2) == [7, 1]  # now the later occurrence


def test_a_request_whose_guesses_are_rejected_pauses_then_tries_again() -> None:
    state = SpecState(NgramIndex(2, 4))
    state.record(WINDOW, 0)
    assert state.paused == PAUSE and state.acceptance == 0.0
    state.paused = 0
    state.record(WINDOW, 0)
    assert state.paused == 2 * PAUSE  # longer each time it still does not pay
    state.paused = 0
    state.record(WINDOW, WINDOW // 2)
    assert state.paused == 0 and state.pause == PAUSE
    assert state.acceptance == (WINDOW // 2) / (3 * WINDOW)
