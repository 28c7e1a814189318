"""Position and cache primitives of the nfm attention layers: RoPE tables, continuous-time RoPE positions of
the [session, prompt, bins] sequence, rotation, and the pre-allocated KV cache of incremental decoding."""
from __future__ import annotations

import torch

N_PREFIX = 2  # session token, prompt token


def rope_cos_sin(n_pos: int, head_dim: int, theta: float, device, start: int = 0,
                 positions: torch.Tensor | None = None):
    """RoPE tables for positions ``start .. start + n_pos - 1`` (or the float ``positions`` (n_pos,)) -> cos, sin
    of shape (n_pos, head_dim), float32."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    pos = (torch.arange(start, start + n_pos, device=device, dtype=torch.float32) if positions is None
           else positions.to(device=device, dtype=torch.float32))
    freqs = torch.outer(pos, inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def time_positions(n_bins: int, bin_size: float, unit: float | None, device=None) -> torch.Tensor | None:
    """Continuous-time RoPE positions of [session, prompt, bin_1 .. bin_T] -> (2 + T,) float32, or None for
    bin-index positions (``unit`` None).

    Bin b (bin size ``bin_size`` [s]) sits at ``2 + ((b + 1/2) bin_size - unit / 2) / unit``: its centre in
    seconds from the window start, in units of ``unit`` [s], shifted so that ``bin_size == unit`` gives exactly
    the index positions ``2 + b`` (computed in float64).  The two prefix tokens stay at 0 and 1.
    """
    if unit is None:
        return None
    b = torch.arange(n_bins, dtype=torch.float64)
    bins = N_PREFIX + ((b + 0.5) * float(bin_size) - 0.5 * float(unit)) / float(unit)
    return torch.cat([torch.arange(N_PREFIX, dtype=torch.float64), bins]).to(device=device, dtype=torch.float32)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, L, d) by (L, d) tables."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class StaticKVCache:
    """Pre-allocated self-attention keys/values of one layer for incremental decoding (no re-allocation or
    concatenation per step): buffers (B, heads, max_len, d) allocated at the first write, ``length`` filled."""

    def __init__(self, max_len: int):
        self.max_len = int(max_len)
        self.k = self.v = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor):
        L = k.shape[2]
        if self.k is None:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        if self.length + L > self.max_len:
            raise ValueError(f"KV cache of {self.max_len} positions is full")
        self.k[:, :, self.length:self.length + L] = k
        self.v[:, :, self.length:self.length + L] = v
        self.length += L
        return self.k[:, :, :self.length], self.v[:, :, :self.length]
