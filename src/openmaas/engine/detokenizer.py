"""Incremental detokenisation and stop-string matching for one streaming sequence.

Text is decoded over a small sliding window of token ids (the last few already-printed tokens plus
the new ones) and only the part past the printed text is emitted, so word-boundary spaces come out
right and a multi-byte character split across tokens is held back until it is complete (no U+FFFD
in the stream). While stop strings are set, the last `len(longest stop) - 1` characters are held
back too, so text that turns out to start a stop string is never sent.
"""

from __future__ import annotations

from openmaas.engine.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer: Tokenizer,
        prompt_token_ids: list[int],
        stop: list[str],
        skip_special_tokens: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.stop = stop
        self._holdback = max((len(s) for s in stop), default=1) - 1
        self._ids = list(prompt_token_ids[-6:])
        self._prefix_offset = max(len(self._ids) - 5, 0)
        self._read_offset = len(self._ids)
        self.text = ""
        self._emitted = 0

    def add_token(self, token_id: int) -> str | None:
        """Append a token; return the stop string hit (text is then cut before it), else None."""
        self._ids.append(token_id)
        decode = self.tokenizer.decode
        prefix = decode(self._ids[self._prefix_offset : self._read_offset], self.skip_special_tokens)
        full = decode(self._ids[self._prefix_offset :], self.skip_special_tokens)
        if len(full) <= len(prefix) or full.endswith(_REPLACEMENT):
            return None
        start = len(self.text)
        self.text += full[len(prefix) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return self._match_stop(start)

    def flush(self) -> None:
        """At the end, add whatever is still held back waiting for more bytes (as U+FFFD if invalid)."""
        decode = self.tokenizer.decode
        prefix = decode(self._ids[self._prefix_offset : self._read_offset], self.skip_special_tokens)
        full = decode(self._ids[self._prefix_offset :], self.skip_special_tokens)
        if len(full) > len(prefix):
            self.text += full[len(prefix) :]
        self._prefix_offset = self._read_offset = len(self._ids)

    def _match_stop(self, new_from: int) -> str | None:
        best: tuple[int, str] | None = None
        for s in self.stop:
            at = self.text.find(s, max(0, new_from - len(s) + 1))
            if at != -1 and (best is None or at < best[0]):
                best = (at, s)
        if best is None:
            return None
        self.text = self.text[: best[0]]
        return best[1]

    def take_delta(self, finished: bool) -> str:
        """Text not yet sent; while unfinished, keeps back what could still begin a stop string."""
        end = len(self.text) if finished else max(len(self.text) - self._holdback, self._emitted)
        delta = self.text[self._emitted : end]
        self._emitted = end
        return delta
