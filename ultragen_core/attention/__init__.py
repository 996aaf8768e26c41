"""Dual-branch attention: window layouts, the pooled global branch, fusion, the batched op; proxy guidance."""
from .dual_branch import dual_branch_attention, fuse, windowed_attention
from .global_branch import pool_tokens, pooled_grid, pooled_positions, upsample_tokens
from .proxy import ProxyLayout, proxy_guided_attention, proxy_positions
from .windows import WindowLayout, make_layout, tile_axis

__all__ = ["dual_branch_attention", "fuse", "windowed_attention", "pool_tokens", "pooled_grid",
           "pooled_positions", "upsample_tokens", "ProxyLayout", "proxy_guided_attention", "proxy_positions",
           "WindowLayout", "make_layout", "tile_axis"]
