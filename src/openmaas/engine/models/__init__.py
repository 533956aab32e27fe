"""Model definitions the engine can run, and loading them from Hugging Face folders."""

from openmaas.engine.models.config import ModelConfig
from openmaas.engine.models.llama import LlamaForCausalLM
from openmaas.engine.models.loader import load_model

__all__ = ["LlamaForCausalLM", "ModelConfig", "load_model"]
