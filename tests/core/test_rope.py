"""RoPE as a complex multiply against the 2 x 2 rotation-matrix form (float64 where exactness matters)."""
import pytest
import torch

from ultragen_core.attention.rope import apply_complex, complex_table


def rotation_table(n, half, dtype=torch.float64, batch=1):
    """(batch, n, 1, half, 2, 2) [[cos, -sin], [sin, cos]] as ComfyUI lays RoPE tables out."""
    angle = torch.rand(batch, n, 1, half, dtype=dtype) * 100
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def matrix_rope(x, freqs):
    """out[j] = M[j] @ (x[2j], x[2j+1]), spelled out."""
    pairs = x.to(freqs.dtype).unflatten(-1, (-1, 2))  # (..., half, 2)
    return torch.einsum("...jrc,...jc->...jr", freqs, pairs).flatten(-2)


@pytest.mark.parametrize("batch", [1, 2])
def test_complex_multiply_equals_the_rotation_matrices(batch):
    freqs = rotation_table(37, 8, batch=batch)
    x = torch.randn(batch, 37, 3, 16, dtype=torch.float64)
    table = complex_table(freqs)
    assert table.shape == (batch, 37, 1, 8) and table.dtype == torch.complex128
    torch.testing.assert_close(apply_complex(x, table), matrix_rope(x, freqs), rtol=1e-12, atol=1e-12)


def test_low_precision_input_is_rotated_in_the_table_precision_and_written_to_out():
    freqs = rotation_table(20, 4, dtype=torch.float32)
    x = torch.randn(1, 20, 2, 8).bfloat16()
    out = torch.empty_like(x)
    result = apply_complex(x, complex_table(freqs), out=out)
    assert result is out and out.dtype == torch.bfloat16
    expected = matrix_rope(x.double(), freqs.double()).bfloat16()
    assert (out.float() - expected.float()).abs().max() <= 2 ** -7 * expected.float().abs().max()


def test_tables_that_are_not_rotations_are_refused():
    freqs = rotation_table(5, 4)
    skewed = freqs.clone()
    skewed[..., 0, 1] *= 2
    assert complex_table(skewed) is None
    assert complex_table(torch.randn(5, 4)) is None  # not a (..., 2, 2) table


def test_the_input_is_not_modified():
    freqs = rotation_table(6, 4, dtype=torch.float32)
    x = torch.randn(1, 6, 2, 8)
    before = x.clone()
    apply_complex(x, complex_table(freqs))
    assert torch.equal(x, before)


def comfy_wan_freqs(grid, head_dim=128, theta=10000.0):
    """The table ``WanModel.rope_encode`` builds (no rope_options), re-spelled from ComfyUI 0.33
    (``comfy/ldm/wan/model.py`` rope_encode, ``comfy/ldm/flux/layers.py`` EmbedND,
    ``comfy/ldm/flux/math.py`` rope): linspace ids in float32, float64 frequencies, cast to float32."""
    T, H, W = grid
    ids = torch.zeros((T, H, W, 3), dtype=torch.float32)
    ids[..., 0] += torch.linspace(0, T - 1, steps=T, dtype=torch.float32).reshape(-1, 1, 1)
    ids[..., 1] += torch.linspace(0, H - 1, steps=H, dtype=torch.float32).reshape(1, -1, 1)
    ids[..., 2] += torch.linspace(0, W - 1, steps=W, dtype=torch.float32).reshape(1, 1, -1)
    ids = ids.reshape(1, -1, 3)

    def rope(pos, dim):
        scale = torch.linspace(0, (dim - 2) / dim, steps=dim // 2, dtype=torch.float64)
        omega = 1.0 / (theta ** scale)
        out = torch.einsum("...n,d->...nd", pos.to(dtype=torch.float32), omega)
        out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], dim=-1)
        return out.unflatten(-1, (2, 2)).to(torch.float32)  # "b n d (i j) -> b n d i j"

    d = head_dim
    axes_dim = [d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)]
    emb = torch.cat([rope(ids[..., i], axes_dim[i]) for i in range(3)], dim=-3).unsqueeze(1)
    return emb.movedim(1, 2)  # (1, N, 1, d/2, 2, 2)


def integer_positions(grid):
    t, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
    return torch.stack((t, h, w), -1).reshape(-1, 3)


@pytest.mark.parametrize("grid,head_dim", [((3, 9, 14), 128), ((2, 3, 240), 128), ((21, 2, 2), 128), ((2, 5, 4), 64)])
def test_rope_freqs_at_integer_positions_is_the_wan_table_bit_for_bit(grid, head_dim):
    from ultragen_core.attention.rope import rope_freqs, wan_axes_dim
    assert wan_axes_dim(128) == (44, 42, 42)
    ours = rope_freqs(integer_positions(grid), wan_axes_dim(head_dim))
    theirs = comfy_wan_freqs(grid, head_dim)
    assert ours.shape == theirs.shape == (1, grid[0] * grid[1] * grid[2], 1, head_dim // 2, 2, 2)
    assert ours.dtype == torch.float32 and torch.equal(ours, theirs)
    assert complex_table(ours) is not None  # a table of rotations: the complex-multiply RoPE applies


def test_rope_freqs_at_fractional_positions_rotate_by_the_offset():
    """Attention sees R(u)^-1 R(v) = R(v - u): fractional positions keep RoPE's relative form."""
    from ultragen_core.attention.rope import rope_freqs, wan_axes_dim
    g = torch.Generator().manual_seed(0)
    u = torch.rand(50, 3, generator=g, dtype=torch.float64) * 200
    v = torch.rand(50, 3, generator=g, dtype=torch.float64) * 200
    axes = wan_axes_dim(128)
    tu, tv, tuv = (complex_table(rope_freqs(p, axes, dtype=torch.float64)) for p in (u, v, v - u))
    torch.testing.assert_close(tu.conj() * tv, tuv, rtol=0, atol=1e-12)
    # position 0.5 sits halfway in angle between 0 and 1 (for every frequency)
    half = complex_table(rope_freqs(torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64), axes, dtype=torch.float64))
    one = complex_table(rope_freqs(torch.ones(1, 3, dtype=torch.float64), axes, dtype=torch.float64))
    torch.testing.assert_close(half * half, one, rtol=0, atol=1e-14)


def test_rope_freqs_refuses_mismatched_positions():
    from ultragen_core.attention.rope import rope_freqs, wan_axes_dim
    with pytest.raises(ValueError, match=r"positions of shape \(N, 3\)"):
        rope_freqs(torch.zeros(4, 2), (44, 42, 42))
    with pytest.raises(ValueError, match="even"):
        rope_freqs(torch.zeros(4, 3), (43, 42, 42))
    with pytest.raises(ValueError, match="even head_dim"):
        wan_axes_dim(127)
