"""A naive, independent re-implementation of the published UltraGen self-attention (batch 1, float64).

Written from the published equations with loops and explicit sums (no einops, no F.interpolate, no
F.conv*, no SDPA), so it shares no code with ultragen_core. Used by the core and the ComfyUI tests.
"""
from __future__ import annotations

import math

import pytest
import torch

F64 = torch.float64


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of a bilinear, antialiased resize (triangle filter, half-pixel centres)."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    m = torch.zeros(n_out, n_in, dtype=F64)
    for o in range(n_out):
        centre = (o + 0.5) * scale
        for i in range(n_in):
            m[o, i] = max(0.0, 1.0 - abs((i + 0.5 - centre) / support))
        m[o] /= m[o].sum()
    return m


def resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """img (C, H, W) -> (C, h, w)."""
    if img.shape[1:] == (h, w):
        return img
    return resize_matrix(img.shape[1], h) @ img @ resize_matrix(img.shape[2], w).T


def nearest_multiple(n: int, k: int) -> int:
    lo = (n // k) * k
    return lo if n - lo <= lo + k - n else lo + k


def dw_conv2d(img, weight, bias, k):
    """Depthwise k x k conv, stride k, no padding: img (C, H, W) -> (C, H//k, W//k)."""
    C, H, W = img.shape
    out = torch.zeros(C, H // k, W // k, dtype=F64)
    for a in range(k):
        for b in range(k):
            out += weight[:, 0, a, b, None, None] * img[:, a:a + (H // k) * k:k, b:b + (W // k) * k:k]
    return out + bias[:, None, None]


def dw_conv3d(vol, weight, bias):
    """Depthwise 3x3x3 conv, zero padding 1: vol (C, T, H, W) -> same shape."""
    C, T, H, W = vol.shape
    p = torch.zeros(C, T + 2, H + 2, W + 2, dtype=F64)
    p[:, 1:-1, 1:-1, 1:-1] = vol
    out = torch.zeros_like(vol)
    for a in range(3):
        for b in range(3):
            for c in range(3):
                out += weight[:, 0, a, b, c, None, None, None] * p[:, a:a + T, b:b + H, c:c + W]
    return out + bias[:, None, None, None]


def rope_angles(head_dim: int, t: int, i: int, j: int, theta: float = 10000.0) -> torch.Tensor:
    """Angles (head_dim / 2,) of 3D RoPE at (t, i, j); axes split (d - 2 (d//3), d//3, d//3) as Wan."""
    dims = (head_dim - 2 * (head_dim // 3), head_dim // 3, head_dim // 3)
    parts = []
    for pos, d in zip((t, i, j), dims):
        parts += [pos * theta ** (-2 * n / d) for n in range(d // 2)]
    return torch.tensor(parts, dtype=F64)


def apply_rope(x: torch.Tensor, positions, heads: int) -> torch.Tensor:
    """x (L, C) with positions [(t, i, j)] * L: rotate pairs (2n, 2n+1) of each head by the angles."""
    L, C = x.shape
    d = C // heads
    xc = torch.view_as_complex(x.reshape(L, heads, d // 2, 2).contiguous())
    ang = torch.stack([rope_angles(d, *p) for p in positions])  # (L, d/2)
    return torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)[:, None, :]).reshape(L, C)


def rms(x, w, eps=1e-6):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def attention(q, k, v, heads):
    L, C = q.shape
    d = C // heads
    out = torch.empty_like(q)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        p = torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(d), dim=-1)
        out[:, s] = p @ v[:, s]
    return out


def lin(p, name, x):
    return x @ p[f"{name}.weight"].T + p[f"{name}.bias"]


def lora(e, name, x):
    return lin(e, f"{name}.lora_B", lin(e, f"{name}.lora_A", x))


def windowed(vol, n, proj, base, heads):
    """vol (C, T, h, w), h and w multiples of n: attention inside each of n x n windows over all frames."""
    C, T, h, w = vol.shape
    hs, ws = h // n, w // n
    out = torch.zeros_like(vol)
    for a in range(n):
        for b in range(n):
            tile = vol[:, :, a * hs:(a + 1) * hs, b * ws:(b + 1) * ws]
            tokens = tile.reshape(C, -1).T  # (T*hs*ws, C), row-major (t, i, j)
            pos = [(t, i, j) for t in range(T) for i in range(hs) for j in range(ws)]
            q, k, v = proj(tokens)
            o = attention(apply_rope(q, pos, heads), apply_rope(k, pos, heads), v, heads)
            out[:, :, a * hs:(a + 1) * hs, b * ws:(b + 1) * ws] = o.T.reshape(C, T, hs, ws)
    return out


def reference_block(x, grid, block, base, extras, timestep, heads):
    """The published self-attention output (after Wo) for one batch item.

    x (N, C); base: q/k/v/o weights and biases, norm_q/norm_k weights; extras: published names
    relative to ``self_attn.``; timestep: float.
    """
    x = x.to(F64)
    base = {k: v.to(F64) for k, v in base.items()}
    e = {k: v.to(F64) for k, v in extras.items()}
    T, H, W = grid
    C = x.shape[1]
    vol = x.T.reshape(C, T, H, W)

    def frames(fn):
        return torch.stack([fn(vol[:, t]) for t in range(T)], dim=1)

    def base_qkv(tok):
        return rms(lin(base, "q", tok), base["norm_q.weight"]), rms(lin(base, "k", tok), base["norm_k.weight"]), \
            lin(base, "v", tok)

    # local
    K = 4 + block % 2
    Hn, Wn = nearest_multiple(H, K), nearest_multiple(W, K)
    local = frames(lambda f: resize(f, Hn, Wn))
    local = windowed(local, K, base_qkv, base, heads)
    local = torch.stack([resize(local[:, t], H, W) for t in range(T)], dim=1)

    # hierarchical
    n = 2 + block % 2
    low = frames(lambda f: dw_conv2d(f, e["downsample_conv_hierachcal.weight"], e["downsample_conv_hierachcal.bias"], 2))
    hb, wb = nearest_multiple(low.shape[2], n), nearest_multiple(low.shape[3], n)
    low = torch.stack([resize(low[:, t], hb, wb) for t in range(T)], dim=1)

    def hier_qkv(tok):
        return (rms(lin(base, "q", tok) + lora(e, "q_lora_2", tok), base["norm_q.weight"]),
                rms(lin(base, "k", tok) + lora(e, "k_lora_2", tok), base["norm_k.weight"]),
                lin(base, "v", tok) + lora(e, "v_lora_2", tok))

    hier = windowed(low, n, hier_qkv, base, heads)
    hier = torch.stack([resize(hier[:, t], H, W) for t in range(T)], dim=1)
    hier = dw_conv3d(hier, e["upsample_conv_hierachcal.weight"], e["upsample_conv_hierachcal.bias"])

    # global: Wq for both q and k, as published
    glob = frames(lambda f: dw_conv2d(f, e["downsample_conv.weight"], e["downsample_conv.bias"], 4))
    h4, w4 = glob.shape[2:]
    tok = glob.reshape(C, -1).T
    pos = [(t, i, j) for t in range(T) for i in range(h4) for j in range(w4)]
    q = apply_rope(rms(lin(base, "q", tok) + lora(e, "q_lora_1", tok), base["norm_q.weight"]), pos, heads)
    k = apply_rope(rms(lin(base, "q", tok) + lora(e, "k_lora_1", tok), base["norm_k.weight"]), pos, heads)
    v = lin(base, "v", tok) + lora(e, "v_lora_1", tok)
    glob = attention(q, k, v, heads).T.reshape(C, T, h4, w4)
    glob = torch.stack([resize(glob[:, t], H, W) for t in range(T)], dim=1)
    glob = dw_conv3d(glob, e["upsample_conv.weight"], e["upsample_conv.bias"])

    # gates from a 256-dim sinusoidal embedding of the raw timestep, cos first
    freqs = torch.tensor([10000 ** (-i / 128) for i in range(128)], dtype=F64)
    emb = torch.cat([torch.cos(timestep * freqs), torch.sin(timestep * freqs)])
    silu = torch.nn.functional.silu

    def gate(sfx):
        h = lin(e, f"alpha_time_embedding{sfx}.2", silu(lin(e, f"alpha_time_embedding{sfx}.0", emb)))
        return torch.sigmoid(lin(e, f"alpha_time_projection{sfx}.1", silu(h)))[:, None, None, None]

    g1, g2 = gate(""), gate("2")
    fused = g1 * (g2 * local + (1 - g2) * hier) + (1 - g1) * glob  # (C, T, H, W)
    return lin(base, "o", fused.reshape(C, -1).T)


def random_extras(width: int, blocks, rank: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Extra UltraGen weights with the published names and shapes for ``width`` (keys blocks.{l}.self_attn.*)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {}
    for p in ("q", "k", "v"):
        for n in (1, 2):
            shapes.update({f"{p}_lora_{n}.lora_A.weight": (rank, width), f"{p}_lora_{n}.lora_A.bias": (rank,),
                           f"{p}_lora_{n}.lora_B.weight": (width, rank), f"{p}_lora_{n}.lora_B.bias": (width,)})
    for s in ("", "2"):
        shapes.update({f"alpha_time_embedding{s}.0.weight": (width, 256), f"alpha_time_embedding{s}.0.bias": (width,),
                       f"alpha_time_embedding{s}.2.weight": (width, width), f"alpha_time_embedding{s}.2.bias": (width,),
                       f"alpha_time_projection{s}.1.weight": (width, width), f"alpha_time_projection{s}.1.bias": (width,)})
    for name, kernel in (("downsample_conv", (4, 4)), ("upsample_conv", (3, 3, 3)),
                         ("downsample_conv_hierachcal", (2, 2)), ("upsample_conv_hierachcal", (3, 3, 3))):
        shapes.update({f"{name}.weight": (width, 1, *kernel), f"{name}.bias": (width,)})
    sd = {}
    for b in blocks:
        for name, shape in shapes.items():
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            scale = 0.05 if len(shape) == 1 else (2.0 if "alpha" in name else 1.0) / fan_in ** 0.5
            sd[f"blocks.{b}.self_attn.{name}"] = scale * torch.randn(shape, generator=gen)
    return sd


def block_tensors(sd: dict[str, torch.Tensor], block: int) -> tuple[dict, dict]:
    """(base q/k/v/o/norm weights, extras) of one block, names relative to ``self_attn.``."""
    prefix = f"blocks.{block}.self_attn."
    own = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    base_names = ("q", "k", "v", "o", "norm_q", "norm_k")
    base = {k: v for k, v in own.items() if k.split(".")[0] in base_names}
    return base, {k: v for k, v in own.items() if k.split(".")[0] not in base_names}


# --- the reference's own building blocks, checked against what the published code calls ---------------

def test_resize_matches_torchvision_resize():
    tv = pytest.importorskip("torchvision.transforms")
    img = torch.randn(3, 10, 13, dtype=torch.float32)
    for h, w in ((8, 12), (12, 15), (5, 6), (21, 29), (10, 13)):
        want = tv.Resize([h, w])(img)  # what the published code calls on tensors
        got = resize(img.to(F64), h, w)
        torch.testing.assert_close(got.float(), want, atol=2e-6, rtol=1e-5)


def test_nearest_multiple_ties_go_down():
    assert [nearest_multiple(n, 4) for n in (8, 10, 11, 68)] == [8, 8, 12, 68]
    assert [nearest_multiple(n, 5) for n in (68, 120, 13)] == [70, 120, 15]
    assert nearest_multiple(34, 3) == 33


def test_rope_is_a_rotation_with_wan_axes():
    x = torch.randn(1, 128, dtype=F64)
    y = apply_rope(x, [(3, 5, 7)], heads=1)
    torch.testing.assert_close(y.norm(), x.norm())
    assert torch.equal(apply_rope(x, [(0, 0, 0)], heads=1), x)
