"""One Wan model call over several GPUs, split by windows, on ComfyUI's own multi-GPU clones and threads.

ComfyUI 0.33's multi-GPU engine keeps a deep clone of the model on every extra GPU and one worker thread
per GPU. Its sampler gives each GPU whole conditionings (CFG split). With the split on, the pack keeps the
conditionings together and gives each GPU a share of every model call instead (:class:`SplitRun`, made by
the node from ComfyUI's clones and thread pool):

- the call ComfyUI makes runs as rank 0; every other GPU's clone gets the same inputs and runs the same
  forward in its worker thread (rank r), through the model's own wrappers;
- patch embedding, time and text embeddings and the head run whole on every rank (little work); in every
  dual-branch block each rank computes the queries of its slot range (:func:`.attention.split.split_slots`:
  whole windows, cut at the ends so the shares are equal), a share of the global branch's queries, and
  the per-token work of the tokens owned there;
- after each block the ranks all-gather their rows (:class:`.attention.split.RowExchange`), so each holds
  the whole next input. The band fusion's pooled local output is summed over the ranks' parts.

Calls the split cannot share run on the first GPU alone (a log line says why): steps outside the patch's
sigma window (full attention), a reference frame or proxy tokens, ComfyUI's attn1 / attn2 patches, and
blocks another pack patched or this pack was not checked against.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch

from ...adapters.base import LOG_PREFIX, CallState, log_once, run_with_call
from ...attention.split import PeerFailed, RowExchange, Share


SPLIT_KEY = "ultragen_split"  # transformer_options: the SplitRun of this sampling run
RANK_KEY = "ultragen_rank"    # transformer_options of a helper rank's call: its RankCall
START_TIMEOUT = 60.0          # seconds a worker thread may take to pick up its part of a call


@dataclass
class SplitRun:
    """The GPUs a sampling run shares each model call over. Index 0 is the device ComfyUI calls on.

    models: the diffusion model each rank runs (index 0: None, it is the model being called);
    submit(rank, fn): run ``fn()`` in that rank's worker thread; result(rank): (value, exception) of it.
    """

    devices: list
    models: list
    submit: Callable[[int, Callable], None]
    result: Callable[[int], tuple]
    logged: set = field(default_factory=set)
    received: list = field(default_factory=list)  # bytes each rank received, per split call (for bench/)

    @property
    def ranks(self) -> int:
        return len(self.devices)


@dataclass
class RankCall:
    """One rank's part of a split call (CallState.split)."""

    rank: int
    ranks: int
    exchange: RowExchange
    token_cost: float  # per-token work of a block, in key-query pairs (see split.slot_costs)
    pending: int | None = None  # the block whose self-attention is to return the rank's rows only
    shares: list[Share] | None = None  # what that self-attention computed, for the block


def token_cost(dm) -> float:
    """A token's per-token work in one block in units of one key-query pair of attention: projections q, k, v,
    o and the cross-attention's q, o (6 dim^2), the feed-forward (2 dim ffn) multiply-adds, against 2 dim per
    key-query pair (q.k and p.v)."""
    dim = dm.dim
    ffn = getattr(dm.blocks[0], "ffn_dim", 4 * dim)
    return (6 * dim * dim + 2 * dim * ffn) / (2 * dim)


def to_device(value, device):
    """``value`` with every tensor in it (through dicts, lists, tuples) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(to_device(v, device) for v in value)
    return value


def why_not_split(call: CallState, dm, options: dict) -> str | None:
    """Why this call runs on one GPU, or None when it can be split."""
    from .wan_block import StreamedWanBlock, known_block
    if not call.changed:
        return "outside the patch's sigma window (or a grid the patch leaves unchanged) the model runs full attention"
    if call.prefix or call.proxy is not None:
        return "a reference frame or proxy-guidance tokens are in the sequence"
    patches = options.get("patches", {})
    if patches.get("attn1_patch") or patches.get("attn2_patch"):
        return "an attn1 / attn2 patch works on the whole sequence"
    block = dm.blocks[0]
    forward = block.__dict__.get("forward")
    if not isinstance(forward, StreamedWanBlock) or forward.previous is not None:
        return "another pack patched the Wan blocks"
    if not known_block(block):
        return "this ComfyUI's Wan block is not one the pack was checked against"
    return None


def split_call(split: SplitRun, call: CallState, dm, executor, args: list, kwargs: dict, options: dict):
    """Run one diffusion-model call as rank 0 of ``split``, the other ranks in their worker threads."""
    exchange = RowExchange(split.ranks)
    cost = token_cost(dm)
    call.split = RankCall(0, split.ranks, exchange, cost)
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    position = next((i for i in range(len(args) - 1, -1, -1) if args[i] is options), None)
    started: list[threading.Event] = []
    for rank in range(1, split.ranks):
        device = split.devices[rank]
        mine = to_device(options, device)
        mine[RANK_KEY] = RankCall(rank, split.ranks, exchange, cost)
        a, k = to_device(args, device), to_device(kwargs, device)
        if position is None:
            k["transformer_options"] = mine
        else:
            a[position] = mine
        started.append(threading.Event())
        split.submit(rank, _helper(split.models[rank], a, k, exchange, grad, inference, started[-1]))
    error = None
    try:
        for rank, event in enumerate(started, start=1):
            if not event.wait(START_TIMEOUT):  # a worker that cannot run would leave rank 0 waiting forever
                raise RuntimeError(f"UltraGen Split Video Across GPUs: the worker thread of {split.devices[rank]} did "
                                   f"not start within {START_TIMEOUT} s (see ComfyUI's log for its error). Remove the "
                                   "node to sample on one GPU.")
        out = run_with_call(call, executor, *args, **kwargs)
    except BaseException as e:
        exchange.abort()
        error, out = e, None
    for rank in range(1, split.ranks):
        if not started[rank - 1].is_set():
            continue  # never ran: no result to wait for
        _, helper_error = split.result(rank)
        if helper_error is not None and (error is None or isinstance(error, PeerFailed)):
            error = helper_error
    split.received.append(list(exchange.received))
    if error is not None:
        raise error
    return out


def _helper(model, args, kwargs, exchange: RowExchange, grad: bool, inference: bool, started: threading.Event):
    def run():
        started.set()
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                model(*args, **kwargs)  # through its wrappers: ours finds RANK_KEY
        except BaseException:
            exchange.abort()
            raise
    return run


def describe(split: SplitRun) -> str:
    names = ", ".join(str(d) for d in split.devices)
    return f"each model call shared out by windows over {split.ranks} devices ({names})"


def log_single(split: SplitRun, reason: str) -> None:
    log_once(split, ("single", reason), "%s this call runs on %s alone: %s.", LOG_PREFIX, split.devices[0], reason)


SETUP_KEY = "ultragen_split_setup"  # transformer_options: where a sampling run gets its SplitRun
CALC_COND_BATCH = "calc_cond_batch"  # comfy.patcher_extension.WrappersMP.CALC_COND_BATCH


class ComfyMultiGPU:
    """The split over the clones and worker threads ComfyUI's multi-GPU engine prepares for a sampling run
    (``model_options["multigpu_clones"]`` and ``["multigpu_thread_pool"]``, ComfyUI 0.33 and later).

    groups: how many groups of GPUs share the conditionings. 1: every call runs on all GPUs. G > 1 (CFG
    with 2G or more GPUs): ComfyUI's own scheduler gives each group's first GPU whole conditionings (its
    CFG split), and each call is split by windows inside its group. A step with fewer conditionings than
    groups (CFG 1) uses all GPUs for each call.

    Lives in transformer_options (deep-copied with the model: returns itself). One SplitRun per group and
    pool, so what it logged is logged once per sampling run."""

    def __init__(self, groups: int = 1):
        self.groups = groups
        self._runs: dict = {}

    def __deepcopy__(self, memo):
        return self

    @property
    def last_run(self) -> SplitRun | None:
        """The SplitRun of the latest sampling run's first group (bench/ reads its byte counts)."""
        return next(iter(self._runs.values()))[1][0] if self._runs else None

    def start(self, model_options: dict, conds: int = 1) -> tuple[SplitRun | dict | None, dict]:
        """For one batch of ``conds`` conditionings: the SplitRun (one group), or the SplitRuns by their first
        device (several groups), and the model options to run the cond loop with; or (None, unchanged)."""
        clones, pool = model_options.get("multigpu_clones"), model_options.get("multigpu_thread_pool")
        if not clones or len(clones) < 2 or pool is None:
            return None, model_options
        devices = list(clones)  # the first is the model's own device
        groups = max(1, min(self.groups, conds, len(devices)))
        key = (id(pool), groups)
        entry = self._runs.get(key)
        if entry is None or entry[0] is not pool:
            runs = [SplitRun(members, [None] + [clones[d].model.diffusion_model for d in members[1:]],
                             lambda r, fn, m=members: pool.submit(m[r], fn),
                             lambda r, m=members: pool.get_result(m[r]))
                    for members in device_groups(devices, groups)]
            self._runs = {k: v for k, v in self._runs.items() if v[0] is pool}  # this run's entries only
            entry = self._runs[key] = (pool, runs)
        runs = entry[1]
        if len(runs) == 1:
            return runs[0], {k: v for k, v in model_options.items() if k != "multigpu_clones"}
        rest = dict(model_options)
        rest["multigpu_clones"] = {run.devices[0]: clones[run.devices[0]] for run in runs}  # ComfyUI's CFG split
        return {run.devices[0]: run for run in runs}, rest


def device_groups(devices: list, groups: int) -> list[list]:
    """``devices`` cut into ``groups`` contiguous groups of (nearly) equal size, the first device first."""
    size, extra = divmod(len(devices), groups)
    out, start = [], 0
    for g in range(groups):
        stop = start + size + (1 if g < extra else 0)
        out.append(devices[start:stop])
        start = stop
    return out


def run_for(split, device) -> SplitRun | None:
    """The SplitRun a call on ``device`` uses: ``split`` itself, or its entry for that device (groups)."""
    return split.get(device) if isinstance(split, dict) else split


class OneDevice:
    """The split with every rank on one device: the threads, the exchange and the result without a second
    GPU (the tests on the CPU, bench/ and tests/gpu on one GPU).

    clones: deep copies of the model on ``device`` (ComfyUI's ``deepclone_multigpu``), loaded with the model;
    make_pool(device): a worker pool for one extra rank (ComfyUI's ``MultiGPUThreadPool([device])``; passed
    in, the core imports no ComfyUI)."""

    def __init__(self, clones: list, device, make_pool):
        self.pools = [make_pool(device) for _ in clones]
        self.last_run = SplitRun([device] * (len(clones) + 1), [None] + [c.model.diffusion_model for c in clones],
                                 lambda r, fn: self.pools[r - 1].submit(device, fn),
                                 lambda r: self.pools[r - 1].get_result(device))

    def __deepcopy__(self, memo):
        return self

    def start(self, model_options: dict, conds: int = 1) -> tuple[SplitRun, dict]:
        return self.last_run, model_options

    def shutdown(self) -> None:
        for pool in self.pools:
            pool.shutdown()


class _Notes:
    logged: set = set()


def calc_cond_batch_wrapper(executor, model, conds, x_in, timestep, model_options):
    """CALC_COND_BATCH wrapper: keep the conditionings on one device (or one per group of devices, see
    :class:`ComfyMultiGPU`) and share each call out instead."""
    options = model_options.get("transformer_options", {})
    setup = options.get(SETUP_KEY)
    if setup is None:
        return executor(model, conds, x_in, timestep, model_options)
    from ...adapters.base import HOLDER_KEY
    if HOLDER_KEY not in options:
        log_once(_Notes, "no-holder", "%s Split Video Across GPUs: the model has no UltraGen attention (add UltraGen "
                 "Apply), so ComfyUI's own multi-GPU engine splits the conditionings instead.", LOG_PREFIX,
                 level=logging.WARNING)
        return executor(model, conds, x_in, timestep, model_options)
    if any(c.get("hooks") is not None for group in conds if group for c in group):
        log_once(_Notes, "hooks", "%s Split Video Across GPUs: conditionings with hooks (e.g. hook LoRAs) need "
                 "ComfyUI's per-device hook patches: ComfyUI's multi-GPU engine splits the conditionings "
                 "instead.", LOG_PREFIX, level=logging.WARNING)
        return executor(model, conds, x_in, timestep, model_options)
    conds_in_batch = sum(1 for group in conds if group)
    run, rest = setup.start(model_options, conds_in_batch)
    if run is None:
        return executor(model, conds, x_in, timestep, model_options)
    rest = dict(rest)
    rest["transformer_options"] = {**options, SPLIT_KEY: run}
    return executor(model, conds, x_in, timestep, rest)


def enable_split(model, setup, wrapper_key: str = "ultragen"):
    """A clone of the ModelPatcher ``model`` whose sampling runs share each call out by ``setup``."""
    patched = model.clone()
    patched.model_options.setdefault("transformer_options", {})[SETUP_KEY] = setup
    patched.remove_wrappers_with_key(CALC_COND_BATCH, wrapper_key)
    patched.add_wrapper_with_key(CALC_COND_BATCH, wrapper_key, calc_cond_batch_wrapper)
    return patched
