"""Key names and shapes of the published UltraGen checkpoint (Wan2.1-T2V-1.3B, 1080p).

The published file is a torch pickle of the full DiT state dict: the base Wan keys plus, for every
block l that does not keep full attention, extra parameters under ``blocks.{l}.self_attn.`` (names as
published, including the spelling ``hierachcal``). This module only names and checks them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

#: Blocks that keep full attention in the published 30-block model (they carry no extra keys).
PUBLISHED_FULL_BLOCKS = (0, 1, 2, 27, 28, 29)
PUBLISHED_RANK = 64
TIME_EMBED_DIM = 256

LORAS = tuple(f"{p}_lora_{n}" for n in (1, 2) for p in "qkv")
GATES = ("alpha_time_embedding", "alpha_time_embedding2")
PROJECTIONS = ("alpha_time_projection", "alpha_time_projection2")
CONVS = {  # name -> kernel size (depthwise: weight [C, 1, *kernel])
    "downsample_conv": (4, 4),
    "upsample_conv": (3, 3, 3),
    "downsample_conv_hierachcal": (2, 2),
    "upsample_conv_hierachcal": (3, 3, 3),
}

_BLOCK_KEY = re.compile(r"^(?P<prefix>.*?)blocks\.(?P<block>\d+)\.self_attn\.(?P<name>.+)$")
_BASE_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "dit.", "module.")


def expected_shapes(width: int, rank: int = PUBLISHED_RANK) -> dict[str, tuple[int, ...]]:
    """Extra parameter names of one block (relative to ``self_attn.``) and their shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    for lora in LORAS:
        shapes[f"{lora}.lora_A.weight"] = (rank, width)
        shapes[f"{lora}.lora_A.bias"] = (rank,)
        shapes[f"{lora}.lora_B.weight"] = (width, rank)
        shapes[f"{lora}.lora_B.bias"] = (width,)
    for gate in GATES:
        shapes[f"{gate}.0.weight"] = (width, TIME_EMBED_DIM)
        shapes[f"{gate}.0.bias"] = (width,)
        shapes[f"{gate}.2.weight"] = (width, width)
        shapes[f"{gate}.2.bias"] = (width,)
    for proj in PROJECTIONS:
        # Published: nn.Linear(dim, 1536) (1536 hard-coded); only out == dim is a working model.
        shapes[f"{proj}.1.weight"] = (width, width)
        shapes[f"{proj}.1.bias"] = (width,)
    for conv, kernel in CONVS.items():
        shapes[f"{conv}.weight"] = (width, 1, *kernel)
        shapes[f"{conv}.bias"] = (width,)
    return shapes


EXTRA_NAMES = frozenset(expected_shapes(1, 1))


def is_extra_name(name: str) -> bool:
    """``name`` relative to ``self_attn.``."""
    return name in EXTRA_NAMES


def is_extra_key(key: str) -> bool:
    """A full key (``blocks.{l}.self_attn.{name}``, possibly under a wrapper prefix) of an UltraGen weight."""
    m = _BLOCK_KEY.match(key)
    return bool(m) and m["prefix"] in ("", *_BASE_PREFIXES) and is_extra_name(m["name"])


def strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix common to every key (``model.diffusion_model.``, ``dit.``, ...)."""
    for prefix in _BASE_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


@dataclass
class SplitCheckpoint:
    """A checkpoint split into base Wan keys and UltraGen extras (``{block: {name: tensor}}``)."""

    base: dict[str, torch.Tensor]
    extras: dict[int, dict[str, torch.Tensor]]
    unknown: list[str] = field(default_factory=list)  # self_attn keys that are neither

    @property
    def has_base(self) -> bool:
        return any(k.startswith("blocks.") for k in self.base)

    @property
    def width(self) -> int | None:
        for tensors in self.extras.values():
            for name, t in tensors.items():
                if name.endswith("lora_A.weight"):
                    return int(t.shape[1])
        return None

    @property
    def rank(self) -> int | None:
        for tensors in self.extras.values():
            for name, t in tensors.items():
                if name.endswith("lora_A.weight"):
                    return int(t.shape[0])
        return None

    def named_tensors(self):
        """(key without a wrapper prefix, tensor) of every base weight and extra."""
        yield from self.base.items()
        for block, tensors in self.extras.items():
            for name, t in tensors.items():
                yield f"blocks.{block}.self_attn.{name}", t

    def count(self) -> int:
        return sum(t.numel() for b in self.extras.values() for t in b.values())


def split_checkpoint(sd: dict[str, torch.Tensor]) -> SplitCheckpoint:
    sd = strip_prefix(sd)
    base: dict[str, torch.Tensor] = {}
    extras: dict[int, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in sd.items():
        m = _BLOCK_KEY.match(key)
        if m and not m["prefix"] and is_extra_name(m["name"]):
            extras.setdefault(int(m["block"]), {})[m["name"]] = tensor
        elif m and not m["prefix"] and m["name"].split(".")[0] not in ("q", "k", "v", "o", "norm_q", "norm_k"):
            unknown.append(key)
        else:
            base[key] = tensor
    return SplitCheckpoint(base, dict(sorted(extras.items())), unknown)


def describe_width(width: int) -> str:
    return {1536: "Wan2.1-1.3B", 3072: "Wan2.2-TI2V-5B", 5120: "Wan 14B"}.get(width, f"width {width}")


def check_extras(split: SplitCheckpoint, width: int, num_blocks: int, source: str) -> list[str]:
    """Validate the extras against a model of ``width`` / ``num_blocks``; return plain-words notes.

    Raises ValueError (what was wrong, the value, the fix) when the weights cannot drive this model.
    """
    notes: list[str] = []
    if not split.extras:
        what = ("a Wan DiT without UltraGen weights" if split.has_base else
                f"{len(split.base)} tensors, none of them UltraGen weights")
        sample = ", ".join(list(split.base)[:3])
        raise ValueError(
            f"UltraGen: {source} holds {what} (first keys: {sample}). Expected keys like "
            "'blocks.3.self_attn.q_lora_1.lora_A.weight'. Select the UltraGen checkpoint "
            "(e.g. the published 1080p .ckpt, or a file written by 'python -m ultragen_core.convert').")
    file_width, rank = split.width, split.rank
    if file_width is None:
        raise ValueError(f"UltraGen: {source} has UltraGen keys but no LoRA weights "
                         "(q_lora_1.lora_A.weight); the file is incomplete. Download or convert it again.")
    if file_width != width:
        raise ValueError(
            f"UltraGen: {source} was made for a model of width {file_width} ({describe_width(file_width)}), "
            f"but the connected model has width {width} ({describe_width(width)}). Connect the model the "
            "weights belong to (the published checkpoint is for Wan2.1-T2V-1.3B).")
    beyond = [b for b in split.extras if b >= num_blocks]
    if beyond:
        raise ValueError(
            f"UltraGen: {source} has UltraGen weights for block(s) {beyond}, but the connected model has "
            f"only {num_blocks} blocks. Connect the model the weights belong to.")
    shapes = expected_shapes(width, rank)
    for block, tensors in split.extras.items():
        missing = sorted(set(shapes) - set(tensors))
        if missing:
            raise ValueError(
                f"UltraGen: {source} is missing {len(missing)} of the {len(shapes)} UltraGen weights of block "
                f"{block} (e.g. blocks.{block}.self_attn.{missing[0]}). The file is incomplete or from another "
                "release: download or convert it again.")
        for name, shape in shapes.items():
            if tuple(tensors[name].shape) != shape:
                raise ValueError(
                    f"UltraGen: blocks.{block}.self_attn.{name} in {source} has shape "
                    f"{tuple(tensors[name].shape)}, expected {shape} for width {width} and LoRA rank {rank}. "
                    "The file does not match the published UltraGen layout.")
    if split.unknown:
        notes.append(f"{len(split.unknown)} unexpected self-attention key(s) ignored "
                     f"(e.g. {split.unknown[0]})")
    full = [b for b in range(num_blocks) if b not in split.extras]
    if num_blocks == 30 and tuple(full) != PUBLISHED_FULL_BLOCKS:
        notes.append(f"full attention in blocks {full}; the published model uses {list(PUBLISHED_FULL_BLOCKS)}")
    if rank != PUBLISHED_RANK:
        notes.append(f"LoRA rank {rank} (published: {PUBLISHED_RANK})")
    return notes
