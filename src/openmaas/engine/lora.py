"""LoRA adapters served on their base model, many at once, per row of one step (S-LoRA / Punica).

An adapter is a peft folder (`adapter_model.safetensors` + `adapter_config.json`, as our fine-tuning
jobs write it). `AdapterSlots` keeps up to `max_loras` of them in GPU/CPU memory, in slots stacked
per projection: for each of a layer's fused projections (qkv, o, gate_up, down) one `a` of
[slots x R, in] and one `b` of [out, slots x R], where R is the projection's parts (3 for qkv, 2 for
gate_up) times `max_lora_rank`; a smaller rank is zero-padded and the scale `alpha / r` is folded
into `b`. A step that holds adapter rows computes, for each projection,

    y = x W^T + ((x a^T) * onehot(slot of the row)) b^T

two matmuls and a mask whatever the mix of adapters, so one step batches rows of every adapter and
the base (rows of the base have an all-zero mask row). Steps without adapter rows never touch any
of this. An adapter is loaded on first use and evicted least recently used, never while a sequence
holds it. The stacks are allocated on the first adapter request: an engine never asked for one
holds no memory for them.

Only bookkeeping and tensor math here: the scheduler acquires and releases slots, the model runner
sets each step's rows, `Linear` adds the delta.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from openmaas.errors import InvalidRequest

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Our fused projections and the peft target modules each holds, in its output's order.
FUSED_PARTS: dict[str, tuple[str, ...]] = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "o_proj": ("o_proj",),
    "gate_up_proj": ("gate_proj", "up_proj"),
    "down_proj": ("down_proj",),
}
_PART_OF = {part: (fused, i) for fused, parts in FUSED_PARTS.items() for i, part in enumerate(parts)}
_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.\w+)?\.weight$")


@dataclass(frozen=True)
class LoraRequest:
    """Which adapter a request runs with: `name` identifies it (slots and the prefix cache key on it:
    one name, one set of weights), `path` is its peft folder."""

    name: str
    path: Path


@dataclass
class ParsedAdapter:
    """An adapter's weights by (layer, fused projection): (part index, A [r, in], scale x B [out, r])."""

    rank: int
    weights: dict[tuple[int, str], list[tuple[int, torch.Tensor, torch.Tensor]]]


def _bad(adapter: LoraRequest, why: str) -> InvalidRequest:
    return InvalidRequest(f"The adapter {adapter.name!r} cannot be served: {why}.", param="model")


def read_adapter(adapter: LoraRequest, max_rank: int) -> ParsedAdapter:
    """Read and check a peft LoRA folder (plain LoRA on our projections; rank at most `max_rank`)."""
    from safetensors.torch import load_file

    try:
        config = json.loads((adapter.path / ADAPTER_CONFIG).read_text())
        tensors = load_file(str(adapter.path / ADAPTER_WEIGHTS))
    except (OSError, ValueError) as exc:
        raise _bad(adapter, f"its files are unreadable ({exc})") from None
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora") or config.get("fan_in_fan_out"):
        raise _bad(adapter, "only plain LoRA (no DoRA, no fan_in_fan_out) is supported")
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("modules_to_save"):
        raise _bad(adapter, "per-module ranks and saved modules are not supported")
    rank, alpha = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    if not 1 <= rank <= max_rank:
        raise _bad(adapter, f"its rank {rank} exceeds this deployment's max_lora_rank {max_rank}")
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.search(key)
        if match is None or match.group(2) not in _PART_OF:
            raise _bad(adapter, f"it adapts {key!r}, which is not an attention or MLP projection")
        pairs.setdefault((int(match.group(1)), match.group(2)), {})[match.group(3)] = tensor
    weights: dict[tuple[int, str], list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
    for (layer, part), ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"} or ab["A"].shape[0] != rank or ab["B"].shape[1] != rank:
            raise _bad(adapter, f"layer {layer} {part} has no matching lora_A/lora_B of rank {rank}")
        fused, index = _PART_OF[part]
        weights.setdefault((layer, fused), []).append((index, ab["A"].float(), ab["B"].float() * scale))
    return ParsedAdapter(rank, weights)


class LoraBatch:
    """The current step's adapter rows: a one-hot [rows, slots] mask, None when no row has one."""

    mask: torch.Tensor | None = None


class LoraWeights:
    """One fused projection's stacked adapter weights (see the module docstring)."""

    def __init__(self, linear: nn.Linear, parts: int, batch: LoraBatch, slots: int, rank: int) -> None:
        dtype, device = linear.weight.dtype, linear.weight.device
        self.batch = batch
        self.slots = slots
        self.width = parts * rank  # R: columns of one slot
        self.rank = rank
        self.a = torch.zeros((slots * self.width, linear.in_features), dtype=dtype, device=device)
        self.b = torch.zeros((linear.out_features, slots * self.width), dtype=dtype, device=device)
        self.part_sizes: list[int] = [linear.out_features]  # each part's outputs (q, k, v / gate, up)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.batch.mask
        assert mask is not None
        h = x @ self.a.t()
        h = (h.view(x.shape[0], self.slots, self.width) * mask[:, :, None]).view(x.shape[0], -1)
        return h @ self.b.t()

    def write(self, slot: int, parts: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        cols = slice(slot * self.width, (slot + 1) * self.width)
        self.a[cols].zero_()
        self.b[:, cols].zero_()
        offsets = [0]
        for size in self.part_sizes:
            offsets.append(offsets[-1] + size)
        for index, a, b in parts:
            r = a.shape[0]
            start = slot * self.width + index * self.rank
            lo, hi = offsets[index], offsets[index + 1]
            if a.shape[1] != self.a.shape[1] or b.shape[0] != hi - lo:
                raise ValueError(f"shape {tuple(a.shape)} x {tuple(b.shape)} does not fit this projection")
            self.a[start : start + r].copy_(a)
            self.b[lo:hi, start : start + r].copy_(b)


class AdapterSlots:
    """Up to `max_loras` adapters resident in the model's stacked slots, least recently used out."""

    def __init__(
        self, model: nn.Module, max_loras: int, max_rank: int, part_sizes: dict[str, list[int]]
    ) -> None:
        self.model = model
        self.max_loras = max_loras
        self.max_rank = max_rank
        self.part_sizes = part_sizes  # fused projection -> its parts' output sizes
        self.batch = LoraBatch()
        self._weights: dict[tuple[int, str], LoraWeights] | None = None  # made on first use
        self._slot_of: OrderedDict[str, int] = OrderedDict()  # resident adapters, least recent first
        self._refs = [0] * max_loras
        self._free = list(range(max_loras - 1, -1, -1))
        # Checked adapters not resident yet (read when their request was added), by name.
        self._staged: dict[str, ParsedAdapter] = {}
        self.loads = 0  # adapters loaded into a slot, for tests and metrics

    def check(self, adapter: LoraRequest) -> None:
        """Read and check an adapter before its request is queued (raises InvalidRequest naming
        `model`), unless it is resident already; it is loaded into a slot when first scheduled."""
        if adapter.name in self._slot_of or adapter.name in self._staged:
            return
        parsed = read_adapter(adapter, self.max_rank)
        layers = {layer for layer, _ in parsed.weights}
        if layers and max(layers) >= len(self.model.layers):  # type: ignore[arg-type]
            raise _bad(adapter, f"it adapts layer {max(layers)}, which this model does not have")
        if len(self._staged) >= 2 * self.max_loras:  # requests that ended unscheduled left these
            self._staged.pop(next(iter(self._staged)))
        self._staged[adapter.name] = parsed

    def acquire(self, adapter: LoraRequest) -> int | None:
        """The slot holding `adapter`, loading it (evicting the least recently used idle one) if
        needed; None while every slot is held by running sequences. Each call holds a reference
        until `release`."""
        slot = self._slot_of.get(adapter.name)
        if slot is None:
            slot = self._take_slot()
            if slot is None:
                return None
            parsed = self._staged.pop(adapter.name, None) or read_adapter(adapter, self.max_rank)
            self._load(slot, parsed)
            self._slot_of[adapter.name] = slot
        self._slot_of.move_to_end(adapter.name)
        self._refs[slot] += 1
        return slot

    def release(self, slot: int) -> None:
        self._refs[slot] -= 1

    def resident(self) -> list[str]:
        return list(self._slot_of)

    def set_rows(self, items: list[tuple[int, int]], device: torch.device) -> None:
        """This step's (slot, token rows) per sequence, in row order (slot -1: the base); the mask
        stays None when no sequence has an adapter."""
        if self._weights is None or all(slot < 0 for slot, _ in items):
            self.batch.mask = None
            return
        dtype = next(iter(self._weights.values())).a.dtype
        slots = torch.tensor([slot for slot, _ in items], device=device)
        index = slots.repeat_interleave(torch.tensor([n for _, n in items], device=device))
        rows = index.shape[0]
        mask = torch.zeros((rows, self.max_loras + 1), dtype=dtype, device=device)
        mask[torch.arange(rows, device=device), index] = 1  # -1 lands in the spare last column
        self.batch.mask = mask[:, : self.max_loras]

    def _take_slot(self) -> int | None:
        if self._free:
            return self._free.pop()
        for name, slot in self._slot_of.items():  # least recently used first
            if self._refs[slot] == 0:
                del self._slot_of[name]
                return slot
        return None

    def _load(self, slot: int, parsed: ParsedAdapter) -> None:
        weights = self._stacks()
        for key, stack in weights.items():
            stack.write(slot, parsed.weights.get(key, []))
        self.loads += 1

    def _stacks(self) -> dict[tuple[int, str], LoraWeights]:
        if self._weights is None:
            self._weights = {}
            for i, layer in enumerate(self.model.layers):  # type: ignore[arg-type]
                for owner in (layer.self_attn, layer.mlp):
                    for fused, parts in FUSED_PARTS.items():
                        linear = getattr(owner, fused, None)
                        if linear is None:
                            continue
                        stack = LoraWeights(linear, len(parts), self.batch, self.max_loras, self.max_rank)
                        stack.part_sizes = self.part_sizes[fused]
                        linear.lora = stack
                        self._weights[(i, fused)] = stack
        return self._weights
