"""Convert an UltraGen checkpoint (torch pickle) to safetensors, loading it with weights_only=True.

    python -m ultragen_core.convert IN.ckpt OUT.safetensors             # the full DiT (base + extras)
    python -m ultragen_core.convert IN.ckpt OUT.safetensors --extras-only
    python -m ultragen_core.convert IN.ckpt OUT.safetensors --dtype bf16

The full DiT file loads with ComfyUI's Load Diffusion Model and with UltraGen Load Weights; an
extras-only file needs the base model from the same release (the published base may be fine-tuned).
"""
from __future__ import annotations

import argparse
import logging
import sys

import torch

from .checkpoint.io import check_finite, load_state_dict, save_safetensors
from .checkpoint.keys import check_extras, describe_width, split_checkpoint

DTYPES = {"keep": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
log = logging.getLogger("ultragen_core.convert")


def convert(src: str, dst: str, extras_only: bool = False, dtype: str = "keep") -> dict:
    """Write ``src``'s UltraGen checkpoint to ``dst`` (safetensors); returns a summary dict."""
    if not dst.lower().endswith(".safetensors"):
        raise ValueError(f"UltraGen: the output must be a .safetensors file, got {dst}.")
    split = split_checkpoint(load_state_dict(src))
    width = split.width
    num_blocks = 1 + max([int(k.split(".")[1]) for k in split.base if k.startswith("blocks.")] + list(split.extras))
    check_extras(split, width or 0, num_blocks, src)
    check_finite(split.named_tensors(), src)
    cast = DTYPES[dtype]
    out = {} if extras_only else dict(split.base)
    out.update({f"blocks.{b}.self_attn.{n}": t for b, ts in split.extras.items() for n, t in ts.items()})
    if cast is not None:
        out = {k: v.to(cast) if v.is_floating_point() else v for k, v in out.items()}
    meta = {"format": "pt", "ultragen": "extras" if extras_only else "full", "width": str(width),
            "lora_rank": str(split.rank), "blocks": ",".join(map(str, split.extras))}
    save_safetensors(out, dst, meta)
    return {"tensors": len(out), "extra_blocks": list(split.extras), "width": width, "model": describe_width(width),
            "extras_only": extras_only or not split.has_base}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ultragen_core.convert", description=__doc__.splitlines()[0])
    parser.add_argument("src", help="UltraGen checkpoint: .ckpt / .pt / .pth (loaded weights-only) or .safetensors")
    parser.add_argument("dst", help="output .safetensors file")
    parser.add_argument("--extras-only", action="store_true", help="write only the UltraGen extra weights")
    parser.add_argument("--dtype", choices=list(DTYPES), default="keep", help="cast floating-point tensors")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        info = convert(args.src, args.dst, args.extras_only, args.dtype)
    except (ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 1
    log.info("UltraGen: wrote %s: %d tensors, %s, UltraGen blocks %s%s.", args.dst, info["tensors"], info["model"],
             info["extra_blocks"], " (extras only)" if info["extras_only"] else " (full DiT)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
