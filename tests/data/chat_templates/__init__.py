"""Real chat templates, vendored because nothing may be downloaded at test time: the
`chat_template` of Qwen/Qwen2.5-7B-Instruct's and meta-llama/Llama-3.1-8B-Instruct's
tokenizer_config.json (Hugging Face Hub), byte for byte. Both teach their model a tool-call format
(Qwen's `<tool_call>` blocks, Llama 3's JSON call), which serving/tools.py reads back."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
QWEN25 = (HERE / "qwen2.5-instruct.jinja").read_text()
LLAMA31 = (HERE / "llama-3.1-instruct.jinja").read_text()


def use_template(folder: Path, template: str, bos_token: str | None = None) -> Path:
    """Put `template` (and a bos token, as Llama's folders have) into a model folder's tokenizer_config."""
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = template
    if bos_token is not None:
        config["bos_token"] = bos_token
    config_file.write_text(json.dumps(config, indent=2))
    return folder
