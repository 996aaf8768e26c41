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
