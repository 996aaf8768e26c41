"""Window layouts: every token owned exactly once, windows inside the grid, odd sizes."""
import pytest
import torch

from ultragen_core.attention.windows import auto_count, balanced_window, make_layout, tile_axis


@pytest.mark.parametrize("size,window,shift", [(67, 34, 0), (67, 34, 17), (135, 45, 0), (135, 45, 22),
                                               (13, 4, 2), (7, 7, 3), (5, 9, 0), (1, 1, 0), (97, 10, 5)])
def test_axis_segments_cover_once_and_sit_inside_their_window(size, window, shift):
    tiling = tile_axis(size, window, shift)
    owner, offset = tiling.owner_and_offset()
    assert len(owner) == size  # every position owned exactly once
    for x, (o, off) in enumerate(zip(owner, offset)):
        start, length = tiling.window_starts[o], tiling.window_lengths[o]
        assert 0 <= start and start + length <= size and length <= window  # window inside the axis
        assert start + off == x and 0 <= off < length
    if not shift or window >= size:  # unshifted: equal windows, clamped inward
        assert set(tiling.window_lengths) == {min(window, size)}


def test_shift_moves_borders_by_half_a_window():
    assert tile_axis(135, 45, 0).segment_bounds == (0, 45, 90, 135)
    assert tile_axis(135, 45, 22).segment_bounds == (0, 22, 67, 112, 135)
    shifted = tile_axis(135, 45, 22)
    assert shifted.window_starts == (0, 22, 67, 112)  # exact segments, half windows at the borders
    assert shifted.window_lengths == (22, 45, 45, 23)
    assert tile_axis(67, 34, 0).window_starts == (0, 33)  # clamped: the last window overlaps by one
    assert tile_axis(40, 45, 22).window_starts == (0,)  # one window: nothing to shift


@pytest.mark.parametrize("grid,window,shifted", [((3, 67, 13), (2, 34, 5), True), ((2, 9, 11), (2, 4, 4), False),
                                                 ((1, 5, 5), (1, 5, 5), True)])
def test_gather_and_scatter_are_consistent(grid, window, shifted):
    layout = make_layout(grid, window, shifted)
    n = grid[0] * grid[1] * grid[2]
    gather, scatter = torch.cat(layout.gather_indices()), layout.scatter_index()
    assert gather.shape == (layout.computed_tokens,)
    assert scatter.shape == (n,)
    assert torch.equal(gather[scatter], torch.arange(n))  # each token's own slot holds that token
    assert int(gather.max()) < n and int(gather.min()) >= 0


def test_device_copies_of_the_indices_are_made_once():
    layout = make_layout((3, 9, 11), (2, 4, 4), True)
    first, again = layout.gather_indices("cpu"), layout.gather_indices(torch.device("cpu"))
    assert all(a is b for a, b in zip(first, again))  # no new copy (a host-to-GPU copy per call would sync)
    assert layout.scatter_index("cpu") is layout.scatter_index("cpu")
    assert torch.equal(layout.scatter_index(), layout._indices[1])


def test_shifted_layouts_group_windows_by_shape_without_overlap():
    layout = make_layout((21, 68, 120), (21, 34, 60), shifted=True)
    shapes = {shape: len(w) for shape, w in layout.groups}
    assert shapes == {(21, 34, 60): 1, (21, 34, 30): 2, (21, 17, 60): 2, (21, 17, 30): 4}
    assert layout.computed_tokens == 21 * 68 * 120  # no query computed twice
    plain = make_layout((21, 68, 120), (21, 34, 60), shifted=False)
    assert plain.count == 4 and plain.key_tokens() == 21 * 68 * 120 * 21 * 34 * 60


def test_auto_counts_keep_windows_near_native():
    assert auto_count(45, 45) == 1 and auto_count(51, 45) == 1 and auto_count(68, 45) == 2
    assert auto_count(135, 45) == 3 and auto_count(240, 80) == 3
    assert balanced_window(67, 2) == 34 and balanced_window(135, 3) == 45


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="size >= 1"):
        tile_axis(0, 4)
