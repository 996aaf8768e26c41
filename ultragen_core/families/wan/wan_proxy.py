"""Proxy guidance for Wan (AtlaVid-style, training-free): a native-size latent of the same video (a first
sampling pass) guides the high-resolution pass.

How it runs inside ComfyUI's own forward: the diffusion-model wrapper appends the proxy, re-noised to the
current sigma with a fixed seed, as one more in-context latent (ComfyUI 0.33's ``context_latents``: patch-
embedded, run through every block with the video, cut off at the end). Where WanModel has no in-context
latents (ComfyUI 0.3.64) the pack does the same itself: the first block's patch appends the embedded proxy
after the video's tokens and the head's patch cuts it off (:class:`ProxyHeadCut`). In each patched self-attention the
proxy tokens get RoPE positions aligned with the video grid (:func:`attention.proxy.proxy_positions`),
attend to each other only (full attention at native size, as the model was trained), and every video
window attends to its own tokens plus the proxy tokens of its neighbourhood
(:func:`attention.proxy.proxy_guided_attention`). The proxy never looks at the video.

Why re-noised per step rather than denoised jointly: ComfyUI's samplers step one latent; a jointly denoised
proxy would need a second latent in the sampler state. The proxy of a finished first pass, noised to each
step's sigma, is what the model saw in training at that noise level.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch

from ...adapters import apply_attention
from ...adapters.base import HOLDER_KEY, current_call, module_at
from ...attention.proxy import ProxyLayout, proxy_positions
from ...attention.rope import complex_table, rope_freqs, wan_axes_dim
from ...config import AttentionSettings
from ...tensor_checks import values_problem
from ..registry import Capability, diffusion_model_of, require

PROXY_KEY = "ultragen_proxy"  # transformer_options key of the ProxyHolder
MODES = ("neighbourhood", "all")


@dataclass(frozen=True)
class ProxySettings:
    """strength: 0..1 (0 leaves the model unchanged, see attention.proxy); mode: which proxy tokens a
    window sees; radius: neighbourhood margin in proxy cells (t, h, w); seed: of the re-noising."""

    strength: float = 1.0
    mode: str = "neighbourhood"
    radius: tuple[int, int, int] = (1, 4, 4)  # UltraGen Proxy Guidance's defaults (docs/FIDELITY.md, run 58)
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be within 0..1 (0 = no guidance), got {self.strength}.")
        if self.mode not in MODES:
            raise ValueError(f"neighbourhood must be one of {MODES}, got {self.mode!r}.")
        if any(r < 0 for r in self.radius):
            raise ValueError(f"radius must be >= 0 proxy cells, got {self.radius}.")


PROXY_MAX_ABS = 1e4  # a Wan latent's values stay within a few tens; far larger ones make every output NaN


def proxy_problem(samples: torch.Tensor, patch_size: tuple[int, int, int]) -> str | None:
    """Why a LATENT's samples (B, C, T', h', w') cannot guide a model of ``patch_size`` (t, h, w), or None."""
    problem = values_problem(samples, "proxy latent")
    if problem:
        return problem
    if samples.ndim != 5:
        return (f"the proxy latent must be a video latent (batch, channels, frames, height, width), got shape "
                f"{tuple(samples.shape)}.")
    t, h, w = samples.shape[2:]
    pt, ph, pw = patch_size
    if t % pt or h % ph or w % pw:
        return (f"the proxy latent is {t} x {h} x {w} latent cells (frames x height x width); the model embeds "
                f"patches of {pt} x {ph} x {pw}, so each must be a multiple of that. Sample the first pass at a size "
                "UltraGen Resolution gives (multiples of 16 px).")
    peak = float(samples.abs().max())
    if peak > PROXY_MAX_ABS:
        return (f"the proxy latent holds values up to {peak:.3g}, where a Wan latent's stay within a few tens (at "
                f"most {PROXY_MAX_ABS:g} is taken): every output would be NaN. Connect the LATENT of a first sampling "
                "pass with the same model.")
    return None


def batch_rule(proxy_items: int, video_items: int) -> str:
    return (f"UltraGen Proxy Guidance: the proxy latent has {proxy_items} items and the video {video_items}. A proxy "
            "of 1 item guides every item of the video; a proxy of as many items as the video guides item i by its "
            "item i. Connect such a proxy, or sample one video at a time.")


class ProxyHolder:
    """The proxy latent (model input space, (1 or B, C, T', h', w')) and its settings; shared by clones."""

    def __init__(self, latent: torch.Tensor, settings: ProxySettings):
        self.latent = latent.float()
        self.settings = settings
        # the same noise at every step (a fixed seed): drawn once
        self.noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(settings.seed))

    def __deepcopy__(self, memo):
        return self

    def noised(self, sigma: float, batch: int, like: torch.Tensor, video_items: int | None = None) -> torch.Tensor:
        """The proxy at noise level ``sigma`` (flow matching: (1 - s) x0 + s e), (batch, C, T', h', w').

        ``batch`` rows of a model call are the video's ``video_items`` items once per conditioning (ComfyUI
        batches cond and uncond one after the other): a proxy of one item serves every row, a proxy of
        ``video_items`` items is repeated per conditioning (row j gets item j % video_items)."""
        proxy = (1.0 - sigma) * self.latent + sigma * self.noise
        proxy = proxy.to(device=like.device, dtype=like.dtype)
        items = proxy.shape[0]
        if items == 1:
            return proxy.expand(batch, -1, -1, -1, -1)
        video_items = batch if video_items is None else video_items
        if items != video_items or batch % items:
            raise ValueError(batch_rule(items, video_items))
        return proxy.repeat(batch // items, 1, 1, 1, 1)  # (batch, C, T', h', w')


def apply_proxy_guidance(model, proxy_samples, settings: ProxySettings):
    """Clone ``model`` with proxy guidance from ``proxy_samples`` (a LATENT's samples, (B, C, T', h', w'));
    the UltraGen patch is added with automatic settings when the model has none."""
    dm = diffusion_model_of(model)
    require(dm, Capability.PROXY)
    channels = getattr(dm, "out_dim", None) or getattr(getattr(dm, "patch_embedding", None), "in_channels", None)
    if proxy_samples.ndim != 5 or proxy_samples.shape[1] != channels:
        raise ValueError(f"UltraGen proxy guidance: the proxy latent is {tuple(proxy_samples.shape)}, but this model "
                         f"takes video latents of {channels} channels (B, {channels}, frames, height, width). Connect "
                         "the LATENT of a first sampling pass with the same model (for image-to-video, the first "
                         "pass's own start-image condition is not needed: the video's is resized to the proxy).")
    options = model.model_options.get("transformer_options", {})
    patched = model.clone() if HOLDER_KEY in options else apply_attention(model, AttentionSettings())
    latent = model.model.process_latent_in(proxy_samples.float()).cpu()  # the model's input space, every item
    patched.model_options.setdefault("transformer_options", {})[PROXY_KEY] = ProxyHolder(latent, settings)
    return patched


@dataclass
class ProxyCall:
    """The proxy of one model call: its token grid and settings (tokens are the last of the sequence)."""

    grid: tuple[int, int, int]
    settings: ProxySettings
    latent: torch.Tensor | None = None  # to embed after the video's tokens (a Wan without in-context latents)

    @property
    def tokens(self) -> int:
        return math.prod(self.grid)

    def layout(self, layout, cache: dict) -> ProxyLayout:
        key = ("proxy layout", id(layout))
        if key not in cache:
            cache[key] = ProxyLayout(layout, self.grid, self.settings.mode, self.settings.radius)
        return cache[key]

    def rope(self, video_grid, head_dim: int, transformer_options: dict, device, complex_form: bool, cache: dict):
        """RoPE of the proxy tokens at their places on the video grid: complex table, or the model's freqs
        layout when ``complex_form`` is False (another pack's apply_rope1 runs)."""
        key = ("proxy rope", video_grid, head_dim, complex_form)
        if key not in cache:
            opts = transformer_options.get("rope_options") or {}
            scale = (opts.get("scale_t", 1.0), opts.get("scale_y", 1.0), opts.get("scale_x", 1.0))
            shift = (opts.get("shift_t", 0.0), opts.get("shift_y", 0.0), opts.get("shift_x", 0.0))
            freqs = rope_freqs(proxy_positions(video_grid, self.grid, scale=scale, shift=shift),
                               wan_axes_dim(head_dim)).to(device)
            cache[key] = complex_table(freqs) if complex_form else freqs
        return cache[key]


def supports_context_latents(dm) -> bool:
    """ComfyUI 0.33's WanModel appends in-context latents; 0.3.64 and the Wan subclasses with their own
    forward do not."""
    try:
        return "context_latents" in inspect.getsource(type(dm).forward_orig)
    except (OSError, TypeError):
        return False


def proxy_grid(dm, latent: torch.Tensor) -> tuple[int, int, int]:
    pt, ph, pw = dm.patch_size
    t, h, w = latent.shape[2:]
    return (math.ceil(t / pt), math.ceil(h / ph), math.ceil(w / pw))


def add_proxy(holder: ProxyHolder, dm, x: torch.Tensor, kwargs: dict, sigmas,
              cond_or_uncond=None) -> tuple[dict, ProxyCall | None]:
    """kwargs of the model call with the re-noised proxy appended as an in-context latent, and its ProxyCall
    (None with strength 0: the call stays the unguided one). ``cond_or_uncond``: the call's conditionings as
    ComfyUI lists them in transformer_options (x holds the video's items once per conditioning)."""
    if holder.settings.strength == 0.0:
        return kwargs, None
    sigma = float(sigmas.max()) if sigmas is not None else 1.0
    proxy = holder.noised(sigma, x.shape[0], x, video_items(x, cond_or_uncond))
    if x.shape[1] > proxy.shape[1]:  # image-to-video: the model's input carries the start image's condition
        proxy = torch.cat((proxy, condition_at(x[:, proxy.shape[1]:], proxy.shape[2:])), dim=1)
    if not supports_context_latents(dm):  # StreamedWanBlock 0 appends it, ProxyHeadCut cuts it
        return kwargs, ProxyCall(proxy_grid(dm, proxy), holder.settings, latent=proxy)
    latents = list(kwargs.get("context_latents") or []) + [proxy]
    return {**kwargs, "context_latents": latents}, ProxyCall(proxy_grid(dm, proxy), holder.settings)


def video_items(x: torch.Tensor, cond_or_uncond) -> int:
    """The video's batch in a model call of x (B * conditionings, ...)."""
    chunks = len(cond_or_uncond or ()) or 1
    return x.shape[0] // chunks if x.shape[0] % chunks == 0 else x.shape[0]


def proxy_tokens(dm, proxy: ProxyCall, x: torch.Tensor) -> torch.Tensor:
    """The proxy's tokens as the model embeds a video latent: (B, T'*H'*W', C) in x's dtype."""
    return dm.patch_embedding(proxy.latent.float()).to(x.dtype).flatten(2).transpose(1, 2)


def condition_at(condition: torch.Tensor, size) -> torch.Tensor:
    """The image-to-video condition of the video (mask and start-image latent, (B, Cc, T, h, w)) at the
    proxy's latent size (T', h', w'): latent frame 0 (the start frame) stays frame 0, later proxy frames take
    the nearest video frame on the same time span; each frame is area-averaged to the proxy's size."""
    T, (t, h, w) = condition.shape[2], size
    if t == 1:
        frames = torch.zeros(1, dtype=torch.long)
    else:
        frames = torch.round(torch.arange(t, dtype=torch.float64) * (T - 1) / (t - 1)).long()
    picked = condition.index_select(2, frames.to(condition.device))  # (B, Cc, t, h_video, w_video)
    b, c = picked.shape[:2]
    flat = picked.transpose(1, 2).reshape(b * t, c, *picked.shape[3:])  # (B*t, Cc, h_video, w_video)
    small = torch.nn.functional.interpolate(flat.float(), size=(h, w), mode="area").to(condition.dtype)
    return small.reshape(b, t, c, h, w).transpose(1, 2)  # (B, Cc, t, h, w)


class ProxyHeadCut:
    """Replacement for ``head.forward``: drops the proxy tokens the first block appended (a Wan without
    in-context latents), so the head and unpatchify see the video's tokens only."""

    path = ("head",)

    def __init__(self, previous=None):
        self.previous = previous

    def __call__(self, x, e, *args, **kwargs):
        call = current_call()
        head = module_at(call, self.path, "the patched Wan head")
        proxy = call.proxy
        if proxy is not None and proxy.latent is not None:
            x = x[:, :x.shape[1] - proxy.tokens]
        run = self.previous if self.previous is not None else (lambda *a, **k: type(head).forward(head, *a, **k))
        return run(x, e, *args, **kwargs)
