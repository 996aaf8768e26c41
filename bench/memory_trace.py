"""What is alive at a call's peak of CUDA memory: the largest allocations and the lines that made them.

Used by ``bench/dit.py --peak-trace N``. Records PyTorch's allocator history during one call (CUDA only),
replays its allocations and frees, and reports the live set at the highest point, in units of one
sequence-size tensor (tokens x width x element size), with the pack's and ComfyUI's frames of each.
"""
from __future__ import annotations

import os

import torch

OURS = ("ultragen", "comfy", "bench")  # frames worth showing: the pack, ComfyUI, the bench


def _where(event, frames: int = 4) -> str:
    shown = [f for f in event.get("frames", []) if any(k in f["filename"] for k in OURS)]
    return " <- ".join(f"{os.path.basename(f['filename'])}:{f['line']} {f['name']}" for f in shown[:frames])


def peak_trace(fn, unit_bytes: int, rows: int = 10) -> list[str]:
    """Run ``fn`` once with the allocator's history on; lines describing the live set at its peak.
    unit_bytes: the size the report counts in (a sequence-size tensor)."""
    torch.cuda.synchronize()
    torch.cuda.memory._record_memory_history(max_entries=500_000, stacks="python")
    try:
        fn()
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    live, current, best, at_best = {}, 0, 0, {}
    for event in snapshot["device_traces"][torch.cuda.current_device()]:
        if event["action"] == "alloc":
            live[event["addr"]] = event
            current += event["size"]
            if current > best:
                best, at_best = current, dict(live)
        elif event["action"] == "free_completed" and event["addr"] in live:
            current -= live.pop(event["addr"])["size"]
    lines = [f"allocated during the call, live at its peak: {best / unit_bytes:.2f} sequence tensors "
             f"({best / 2**30:.1f} GiB)"]
    for event in sorted(at_best.values(), key=lambda e: -e["size"])[:rows]:
        lines.append(f"  {event['size'] / unit_bytes:5.2f}  {_where(event)}")
    return lines
