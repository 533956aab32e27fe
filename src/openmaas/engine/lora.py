"""LoRA adapters served on their base model, many at once, per row of one step (S-LoRA / Punica).

An adapter is a peft folder (`adapter_model.safetensors` + `adapter_config.json`, as our fine-tuning
jobs write it). `AdapterSlots` keeps up to `max_loras` of them in GPU/CPU memory, in slots stacked
per projection: for each of a layer's fused projections (qkv, o, gate_up, down) one `a` of
[slots x R, in] and one `b` of [out, slots x R] (kept transposed), where R is the projection's parts
(3 for qkv, 2 for gate_up) times the largest rank loaded (at most `max_lora_rank`); a smaller rank is
zero-padded and the scale `alpha / r` is folded into `b`. A step that holds adapter rows computes,
for each projection, over the slots up to the highest one the step uses,

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
    """The current step's adapter rows. Decode rows (the first `decode_rows`, one per sequence) use a
    one-hot [decode_rows, slots] `mask` over the slots in use (handed out lowest first, so `slots` is
    one past the highest); each prefill chunk, whose rows share one adapter, is a `segment`
    (start, end, slot) computed on its own slot only. `active` is False when no row has an adapter."""

    active = False
    mask: torch.Tensor | None = None
    slots = 0
    decode_rows = 0
    segments: list[tuple[int, int, int]] = []


class LoraWeights:
    """One fused projection's stacked adapter weights (see the module docstring): `a` [slots x R, in]
    and `bt` (b transposed) [slots x R, out], so the first k slots are one contiguous slice of each."""

    def __init__(
        self, linear: nn.Linear, part_sizes: list[int], batch: LoraBatch, slots: int, rank: int
    ) -> None:
        dtype, device = linear.weight.dtype, linear.weight.device
        self.batch = batch
        self.part_sizes = part_sizes  # each part's outputs (q, k, v / gate, up)
        self.width = len(part_sizes) * rank  # R: rows of one slot
        self.rank = rank
        self.a = torch.zeros((slots * self.width, linear.in_features), dtype=dtype, device=device)
        self.bt = torch.zeros((slots * self.width, linear.out_features), dtype=dtype, device=device)

    def add_delta(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y (a fresh tensor) plus this step's adapter deltas of x, row by row, in place."""
        batch = self.batch
        mask = batch.mask
        if mask is not None:
            d, used = batch.decode_rows, batch.slots * self.width
            h = x[:d] @ self.a[:used].t()
            h = (h.view(d, batch.slots, self.width) * mask[:, :, None]).view(d, used)
            y[:d].addmm_(h, self.bt[:used])
        width = self.width
        for start, end, slot in batch.segments:
            rows = slice(slot * width, (slot + 1) * width)
            y[start:end].addmm_(x[start:end] @ self.a[rows].t(), self.bt[rows])
        return y

    def write(self, slot: int, parts: list[tuple[int, torch.Tensor, torch.Tensor]]) -> None:
        rows = slice(slot * self.width, (slot + 1) * self.width)
        self.a[rows].zero_()
        self.bt[rows].zero_()
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
            self.bt[start : start + r, lo:hi].copy_(b.t())


class AdapterSlots:
    """Up to `max_loras` adapters resident in the model's stacked slots, least recently used out.

    The stacks are as wide as the largest rank loaded so far (at most `max_rank`): adapters of rank 8
    on an engine allowing 16 cost what rank 8 costs. A larger one widens them, reloading the others."""

    def __init__(
        self, model: nn.Module, max_loras: int, max_rank: int, part_sizes: dict[str, list[int]]
    ) -> None:
        self.model = model
        self.max_loras = max_loras
        self.max_rank = max_rank
        self.part_sizes = part_sizes  # fused projection -> its parts' output sizes
        self.batch = LoraBatch()
        self._weights: dict[tuple[int, str], LoraWeights] | None = None  # made on first use
        self._rank = 0  # the stacks' rank
        self._slot_of: OrderedDict[str, int] = OrderedDict()  # resident adapters, least recent first
        self._resident: dict[str, LoraRequest] = {}
        self._refs = [0] * max_loras
        self._free = list(range(max_loras - 1, -1, -1))  # popped lowest first
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
            if parsed.rank > self._rank:
                self._widen(parsed.rank)
            self._load(slot, parsed)
            self._slot_of[adapter.name] = slot
            self._resident[adapter.name] = adapter
        self._slot_of.move_to_end(adapter.name)
        self._refs[slot] += 1
        return slot

    def release(self, slot: int) -> None:
        self._refs[slot] -= 1

    def resident(self) -> list[str]:
        return list(self._slot_of)

    def set_rows(self, items: list[tuple[int, int]], device: torch.device) -> None:
        """This step's (slot, token rows) per sequence, in row order, single-token (decode) items
        first as the runner orders them (slot -1: the base)."""
        batch = self.batch
        batch.active = self._weights is not None and any(slot >= 0 for slot, _ in items)
        if not batch.active:
            return
        assert self._weights is not None
        decode = [slot for slot, n in items if n == 1]
        batch.segments, row = [], len(decode)
        for slot, n in items[len(decode) :]:
            if slot >= 0:
                batch.segments.append((row, row + n, slot))
            row += n
        batch.mask, batch.decode_rows = None, len(decode)
        if max(decode, default=-1) >= 0:
            dtype = next(iter(self._weights.values())).a.dtype
            used = max(decode) + 1
            index = torch.tensor([slot if slot >= 0 else used for slot in decode], device=device)
            mask = torch.zeros((len(decode), used + 1), dtype=dtype, device=device)
            mask[torch.arange(len(decode), device=device), index] = 1  # the base: the spare last column
            batch.mask, batch.slots = mask[:, :used], used

    def _take_slot(self) -> int | None:
        if self._free:
            return self._free.pop()
        for name, slot in self._slot_of.items():  # least recently used first
            if self._refs[slot] == 0:
                del self._slot_of[name]
                del self._resident[name]
                return slot
        return None

    def _load(self, slot: int, parsed: ParsedAdapter) -> None:
        assert self._weights is not None
        for key, stack in self._weights.items():
            stack.write(slot, parsed.weights.get(key, []))
        self.loads += 1

    def _widen(self, rank: int) -> None:
        """(Re)make the stacks at `rank` and reload the resident adapters into their slots."""
        self._rank = rank
        self._weights = {}
        for i, layer in enumerate(self.model.layers):  # type: ignore[arg-type]
            for owner in (layer.self_attn, layer.mlp):
                for fused in FUSED_PARTS:
                    linear = getattr(owner, fused, None)
                    if linear is None:
                        continue
                    stack = LoraWeights(linear, self.part_sizes[fused], self.batch, self.max_loras, rank)
                    linear.lora = stack
                    self._weights[(i, fused)] = stack
        for name, slot in self._slot_of.items():
            self._load(slot, read_adapter(self._resident[name], self.max_rank))
