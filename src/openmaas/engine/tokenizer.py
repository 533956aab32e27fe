"""Tokenizer: a Hugging Face `tokenizer.json` (via `tokenizers`) plus the model's chat template.

The chat template comes from `chat_template.jinja` or `tokenizer_config.json` and is rendered in a
sandboxed jinja2 environment the way `transformers` renders it (trim_blocks, lstrip_blocks,
`raise_exception`, `tojson`). Special-token facts (bos, eos) come from the same config files.

A prompt is encoded as `transformers`' AutoTokenizer encodes it by default: never padded, never
truncated, whatever padding or truncation the folder's tokenizer.json stores (sentence-transformers
folders store both). A prompt longer than the model's context is refused by the engine, not cut here.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

from openmaas.errors import InvalidRequest


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' `tojson`: no HTML escaping (unlike jinja's), and its options (Llama 3.1's tool
    list is `tojson(indent=4)`)."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise InvalidRequest(f"chat template error: {message}", param="messages")


class Tokenizer:
    def __init__(
        self,
        tokenizer: HFTokenizer,
        chat_template: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
    ) -> None:
        # tokenizer.json may store padding (e.g. to 128) and truncation; AutoTokenizer switches both
        # off for a plain call, and so must we, or a short prompt grows and a long one is cut.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tok = tokenizer
        self.chat_template = chat_template
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.eos_token_id = tokenizer.token_to_id(eos_token) if eos_token else None
        self.vocab_size = tokenizer.get_vocab_size()
        self._template: jinja2.Template | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Tokenizer:
        folder = Path(path)
        tok = HFTokenizer.from_file(str(folder / "tokenizer.json"))
        config_file = folder / "tokenizer_config.json"
        config: dict[str, Any] = json.loads(config_file.read_text()) if config_file.exists() else {}
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: use the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        jinja_file = folder / "chat_template.jinja"
        if template is None and jinja_file.exists():
            template = jinja_file.read_text()
        return cls(tok, template, _token_text(config.get("bos_token")), _token_text(config.get("eos_token")))

    def to_json(self) -> str:
        """The tokenizer.json text (padding and truncation off), for the grammar engine."""
        return str(self._tok.to_str())

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self._tok.decode(token_ids, skip_special_tokens=skip_special_tokens))

    def token_id(self, text: str) -> int | None:
        """The id of the token that is exactly `text` (an added token such as `<tool_call>`), if any."""
        found = self._tok.token_to_id(text)
        return int(found) if found is not None else None

    def token_text(self, token_id: int) -> str:
        """One token's text, special tokens included (for logprobs' `token` fields)."""
        return str(self._tok.decode([token_id], skip_special_tokens=False))

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """The prompt as transformers' `apply_chat_template(messages, tools=tools, ...)` renders it:
        `tools` (OpenAI's `{"type": "function", "function": {...}}` objects) and `documents` are
        always defined, None when absent, as templates that test `is defined` expect."""
        if self.chat_template is None:
            raise InvalidRequest("this model has no chat template; use the completions API", param="messages")
        if self._template is None:
            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.chat_template)
        return self._template.render(
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
            **kwargs,
        )

    def encode_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> list[int]:
        """Token ids of the rendered chat prompt (the template itself places any bos token)."""
        return self.encode(
            self.apply_chat_template(messages, tools=tools, **kwargs), add_special_tokens=False
        )
