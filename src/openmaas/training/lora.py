"""LoRA (low-rank adapters) for the causal language models we import: wrap the attention and MLP
projections of a torch model with a trainable `B @ A` beside the frozen weight, and save only
the adapter, in PEFT's layout (`adapter_model.safetensors` + `adapter_config.json`), so peft,
transformers and our engine all read it.

Our own small code rather than peft: a wrapper per `nn.Linear` and two functions are all that
LoRA on projections needs, and peft would bring accelerate with it. The weights follow peft's
naming (`base_model.model.<module>.lora_A.weight`, A: rank × in, B: out × rank) and its scaling
(`alpha / rank`); B starts at zero, so the adapted model starts equal to its base.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Every projection of a Llama / Qwen2 decoder layer: attention and MLP.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default=DEFAULT_TARGETS)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoraLinear(nn.Module):
    """`base(x) + scaling · B(A(dropout(x)))`, with `base` frozen."""

    def __init__(self, base: nn.Linear, spec: LoraSpec) -> None:
        super().__init__()
        self.base = base
        self.scaling = spec.scaling
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, spec.rank, bias=False, **factory)
        self.lora_B = nn.Linear(spec.rank, base.out_features, bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as peft does
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Scaled at rank width, not at the output's: the same sum, fewer multiplications.
        return self.base(x) + self.lora_B(self.lora_A(self.dropout(x)) * self.scaling)


def apply_lora(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Freeze `model` and wrap every `nn.Linear` whose name ends in a target; returns the wrapped
    modules' names. Raises ValueError when no module matches."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in spec.target_modules:
                setattr(module, child_name, LoraLinear(child, spec))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"no module of the model is named one of {', '.join(spec.target_modules)}")
    return wrapped


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights under peft's names (`base_model.model.<module>.lora_A.weight`)."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            for part in ("lora_A", "lora_B"):
                weight = getattr(module, part).weight
                state[f"base_model.model.{name}.{part}.weight"] = weight.detach().to("cpu").contiguous()
    return state


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put saved adapter weights (peft's names) back into a model `apply_lora` wrapped."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            for part in ("lora_A", "lora_B"):
                getattr(module, part).weight.data.copy_(state[f"base_model.model.{name}.{part}.weight"])


def save_adapter(model: nn.Module, spec: LoraSpec, folder: Path, *, base_model: str) -> None:
    """Write the adapter as peft does: weights as safetensors and `adapter_config.json`."""
    save_adapter_state(adapter_state_dict(model), spec, folder, base_model=base_model)


def save_adapter_state(
    state: dict[str, torch.Tensor], spec: LoraSpec, folder: Path, *, base_model: str
) -> None:
    """`save_adapter` for weights already taken out of the model (`adapter_state_dict`), such as a
    checkpoint's."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": sorted(spec.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))


def merge_lora(model: nn.Module) -> None:
    """Fold each adapter into its base weight (`W + scaling · B A`) and unwrap it, in place."""
    for _, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoraLinear):
                with torch.no_grad():
                    delta = child.lora_B.weight @ child.lora_A.weight
                    child.base.weight += delta * child.scaling
                setattr(module, child_name, child.base)
