"""Fast paths of the event decoder (speed only: each computes what the plain path of
:mod:`nfm.models.modeling_nfm_generation` computes, up to float rounding; ``tests/test_speed_equivalence.py``).

* :func:`length_buckets` and :func:`decode_buckets` -- the teacher-forced training pass on groups of
  (trial, window) sequences of similar length (least padding).
* :class:`FastWindowDecoder` -- single-token decoding of one window in closed-loop generation, with every
  per-window constant precomputed.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .modeling_nfm import SessionTables, full_precision

if TYPE_CHECKING:
    from .modeling_nfm_generation import NfmEventDecoder

def length_buckets(lengths, n_buckets: int) -> list[int]:
    """Split points of sorted sequence lengths into at most ``n_buckets`` contiguous groups that minimise the
    padded area ``sum_g size_g * max_g`` (exact dynamic programme, O(n_buckets n^2) in numpy; n = a few hundred
    sequences per step).  ``lengths``: (n,) ascending.  Returns the end index of each group (the last is n)."""
    lens = np.asarray(lengths, dtype=np.int64)
    n = len(lens)
    k = max(1, min(int(n_buckets), n))
    i = np.arange(n)[:, None]  # group start
    j = np.arange(1, n + 1)[None, :]  # group end (exclusive)
    cost = np.where(i < j, (j - i) * lens[j - 1], np.iinfo(np.int64).max // 4)  # (n, n): group i .. j-1
    best = np.concatenate([[0], np.full(n, np.iinfo(np.int64).max // 4)])  # best[j]: first j lengths
    back = []
    for _ in range(k):
        total = best[:n, None] + cost  # (start i, end j)
        arg = total.argmin(0)
        best = np.concatenate([[0], total[arg, np.arange(n)]])
        back.append(arg)
    ends, end = [], n
    for arg in reversed(back):
        ends.append(end)
        end = int(arg[end - 1])
        if end == 0:
            break
    return sorted(ends)


def decode_buckets(decoder: NfmEventDecoder, x, memory, mem_mask, past_events, block: int, in_u, in_dt, tg_u, tg_dt,
                    tg_m, dt_target, is_event, tables: SessionTables, n_buckets: int):
    """Teacher-forced decoder pass on length buckets -> (dt_logits, id_logits, dt_loss, id_loss).

    The B * Kw (trial, window) sequences are sorted by their number of decoder positions (events + 1) and cut
    into at most ``n_buckets`` groups by :func:`length_buckets` (least padding); each group runs
    :meth:`NfmEventDecoder.run` padded to its own longest sequence, with memory columns: the fixed slots
    (prefix, bins, modality) plus, per past-event block of ``block`` slots, only the first ``max`` filled ones
    of the group (the rest are masked in every sequence of the group, so dropping them changes nothing).
    Inputs are permuted once and split (cheap backward); cross-entropies are summed per group and divided by
    the batch's target counts: the means of the unbucketed pass.

    Shapes: x (B, Kw, L, H); memory (B, Kw, M, H), mem_mask (B, Kw, M); past_events (B, Kw, J); token tensors
    (B, Kw, L).  Returned logits are (B, Kw, L, n_dt + 1) / (B, Kw, L, N) float32, 0 after each group's
    longest sequence.
    """
    B, Kw, L, H = x.shape
    BK, M, J = B * Kw, memory.shape[2], past_events.shape[-1]
    fixed = M - J * block
    n_dt, dev = decoder.n_dt, x.device
    N = tables.unit_embed.shape[1]
    lens = tg_m.reshape(BK, L).sum(-1)
    order = torch.argsort(lens, stable=True)

    def perm(t):  # (B, Kw, ...) -> (BK, ...) in length order
        return t.reshape(BK, *t.shape[2:])[order]

    lens_sorted = lens[order]
    ends = length_buckets(lens_sorted.tolist(), n_buckets)
    sizes = np.diff([0] + ends).tolist()
    xs, mems, masks = (torch.split(perm(t), sizes) for t in (x, memory, mem_mask))
    toks = [torch.split(perm(t), sizes) for t in (in_u, in_dt, tg_u, tg_dt, dt_target, is_event)]
    trials = torch.split(torch.div(order, Kw, rounding_mode="floor"), sizes)
    pe = past_events.reshape(BK, J)[order].cpu().numpy()
    lens_np = lens_sorted.cpu().numpy()
    dt_logits = torch.zeros(BK, L, n_dt + 1, device=dev)
    id_logits = torch.zeros(BK, L, N, device=dev)
    dt_sum = id_sum = 0.0
    start = 0
    for g, end in enumerate(ends):
        Lb = int(lens_np[end - 1])
        E = pe[start:end].max(0) if J else []
        cols = torch.cat([torch.arange(fixed, device=dev)]
                         + [fixed + j * block + torch.arange(int(e), device=dev) for j, e in enumerate(E)])
        states, _, _, _ = decoder.run(xs[g][:, :Lb], mems[g][:, cols], masks[g][:, cols])
        i_u, i_dt, t_u, t_dt, d_t, ev = (t[g][:, :Lb] for t in toks)
        dl = decoder.dt_logits(states, i_dt)
        il = decoder.id_logits(states.unsqueeze(1), t_dt.unsqueeze(1), i_u.unsqueeze(1), i_dt.unsqueeze(1), tables,
                               rows=trials[g])[:, 0]
        dt_sum = dt_sum + F.cross_entropy(dl.reshape(-1, n_dt + 1), d_t.reshape(-1), ignore_index=-100,
                                          reduction="sum")
        id_sum = id_sum + F.cross_entropy(il[ev], t_u[ev], reduction="sum")
        rows = order[start:end]
        dt_logits[rows, :Lb] = dl
        id_logits[rows, :Lb] = il
        start = end
    n_ev = int(is_event.sum())
    dt_loss = dt_sum / tg_m.sum()
    id_loss = id_sum / n_ev if n_ev else dt_sum * 0.0
    return dt_logits.view(B, Kw, L, -1), id_logits.view(B, Kw, L, N), dt_loss, id_loss


def _linear_params(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight (out, in), bias (out,)) of an affine module: a plain ``nn.Linear``'s own parameters, or the map of a
    wrapped one (e.g. a peft LoRA layer, in eval mode) read by applying it to the identity and to zero."""
    if type(module) is nn.Linear:
        return module.weight, module.bias
    ref = next(module.parameters())
    n_in = getattr(module, "in_features", None) or module.base_layer.in_features
    bias = module(torch.zeros(1, n_in, dtype=ref.dtype, device=ref.device))[0]
    weight = (module(torch.eye(n_in, dtype=ref.dtype, device=ref.device)) - bias).T.contiguous()
    return weight, bias


def _bias(bias, n: int, like: torch.Tensor) -> torch.Tensor:
    return bias if bias is not None else torch.zeros(n, dtype=like.dtype, device=like.device)


def _addmm_params(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(bias (out,), weight transposed and contiguous (in, out)) for ``torch.addmm(bias, x, w_t)``: one kernel
    call, faster than ``F.linear`` for a single row on CPU."""
    return _bias(bias, weight.shape[0], weight), weight.T.contiguous()


class FastWindowDecoder:
    """Single-token decoding of one window with everything that is constant over the window precomputed.

    Eval mode only (no dropout).  Per layer and token: LayerNorm, one fused q/k/v matmul (``[W_q; W_k; W_v]``),
    RoPE of q and k (and identity on v) as one batched (d x d) matmul, one write into a preallocated K/V cache
    (B, 2, heads, L_max, d), single-query SDPA over its filled part; cross-attention to the memory's K/V and an
    additive memory mask computed once per window; MLP; every linear one ``addmm`` with a pre-transposed weight.
    Heads: the dt grammar mask and the dt bias are one table indexed by the current dt token; the next-dt
    embedding is folded through the id query (a table); unit keys pre-transposed and scaled by 1/sqrt(H) and
    the id bias with padding units at -inf in one ``baddbmm``.  About 50 tensor operations per token for 2
    decoder layers plus sampling (the generic cache path runs ~900).  It computes the function of
    :meth:`NfmEventDecoder.run` + :meth:`~NfmEventDecoder.dt_logits` + :meth:`~NfmEventDecoder.id_logits` up to
    float rounding (``tests/test_speed_equivalence.py``).

    Shapes: memory (B, M, H), mem_mask (B, M) bool, unit_tok (B, N, H); ``max_len`` token positions (SOS + events).
    """

    def __init__(self, decoder: NfmEventDecoder, memory, mem_mask, unit_tok, tables: SessionTables, max_len: int):
        cfg = decoder.config
        B, M, H = memory.shape
        dev, dt = memory.device, memory.dtype
        n_dt = decoder.n_dt
        self.B, self.H, self.n_dt = B, H, n_dt
        self.h = cfg.num_attention_heads
        self.d = H // self.h
        self.layers = []
        neg = torch.zeros(B, 1, 1, M, dtype=dt, device=dev).masked_fill(~mem_mask.view(B, 1, 1, M), float("-inf"))
        for layer in decoder.layers:
            sa, ca = layer.self_attn, layer.cross_attn
            (wq, bq), (wk, bk), (wv, bv) = (_linear_params(m) for m in (sa.q_proj, sa.k_proj, sa.v_proj))
            qkv = _addmm_params(torch.cat([wq, wk, wv], 0), torch.cat([_bias(b, H, wq) for b in (bq, bk, bv)]))
            self.layers.append(dict(
                ln1=(layer.ln1.weight, layer.ln1.bias, layer.ln1.eps), qkv=qkv,
                o=_addmm_params(*_linear_params(sa.o_proj)),
                ln2=(layer.ln2.weight, layer.ln2.bias, layer.ln2.eps), cq=_addmm_params(*_linear_params(ca.q_proj)),
                k_mem=ca._split(ca.k_proj(memory)), v_mem=ca._split(ca.v_proj(memory)),  # (B, h, M, d)
                mask=neg, co=_addmm_params(*_linear_params(ca.o_proj)),
                ln3=(layer.ln3.weight, layer.ln3.bias, layer.ln3.eps),
                fc1=_addmm_params(*_linear_params(layer.mlp.fc1)), fc2=_addmm_params(*_linear_params(layer.mlp.fc2)),
                kv=torch.zeros(B, 2, self.h, max_len, self.d, dtype=dt, device=dev)))
        # RoPE of position s as a matrix, x @ rot[s] == x * cos[s] + rotate_half(x) * sin[s]; identity for v
        cos, sin = decoder.rope(max_len, dev)
        half = self.d // 2
        eye = torch.eye(self.d, dtype=dt, device=dev)
        rot_half = torch.cat([eye[half:], -eye[:half]], 0)  # x @ rot_half == cat(-x2, x1)
        rot = torch.diag_embed(cos).to(dt) + rot_half.unsqueeze(0) * sin.to(dt).unsqueeze(1)  # (L, d, d)
        self.rot = torch.stack([rot, rot, eye.expand_as(rot)], 1).unsqueeze(2)  # (L, 3, 1, d, d): q, k, v
        self.norm = (decoder.norm.weight, decoder.norm.bias, decoder.norm.eps)
        # dt head: bias + grammar mask of each current dt token (classes below it -inf; specials allow all)
        w_dt, b_dt = _linear_params(decoder.dt_head)
        cur = torch.arange(n_dt + 3, device=dev)
        floor = cur.masked_fill(cur >= n_dt, 0)
        banned = torch.arange(n_dt + 1, device=dev) < floor.unsqueeze(1)
        self.dt_bias = _bias(b_dt, n_dt + 1, w_dt).float().expand(n_dt + 3, -1).masked_fill(banned, float("-inf"))
        self.dt_w = w_dt.T.contiguous()
        # id query of (state + next_dt_embed[dt]) = state @ W^T + (next_dt_embed[dt] @ W^T + b)
        w_q, b_q = _linear_params(decoder.id_query)
        self.id_w = w_q.T.contiguous()
        with full_precision(memory):  # the id head in float32 also under autocast (as NfmEventDecoder.id_logits)
            self.id_q0 = torch.addmm(_bias(b_q, H, w_q), decoder.next_dt_embed.weight.to(w_q.dtype), self.id_w)
        self.dt_embed = decoder.dt_embed.weight
        self.unit_tok = F.pad(unit_tok, (0, 0, 1, 0))  # (B, 1 + N, H): row 0 = no unit (specials)
        keys = tables.unit_embed.to(dt)
        self.keys_t = (keys.float() / math.sqrt(H)).transpose(1, 2).contiguous()  # (B, H, N)
        N = keys.shape[1]
        self.id_bias = tables.id_bias.float().masked_fill(~tables.unit_mask, float("-inf")).view(B, 1, N)
        self.units = torch.arange(N, device=dev)
        self.b_idx = torch.arange(B, device=dev)

    def step(self, s: int, u: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """Feed token ``s`` (units ``u`` (B,), dt tokens ``dt`` (B,)) -> decoder state (B, H) after the final norm."""
        B, H, h, d = self.B, self.H, self.h, self.d
        x = self.dt_embed[dt] + self.unit_tok[self.b_idx, u + 1]
        rot = self.rot[s]
        for L in self.layers:
            y = F.layer_norm(x, (H,), *L["ln1"][:2], L["ln1"][2])
            qkv = torch.addmm(L["qkv"][0], y, L["qkv"][1]).view(B, 3, h, 1, d) @ rot  # (B, 3, h, 1, d)
            kv = L["kv"]
            kv[:, :, :, s:s + 1] = qkv[:, 1:]
            a = F.scaled_dot_product_attention(qkv[:, 0], kv[:, 0, :, :s + 1], kv[:, 1, :, :s + 1])
            x = torch.addmm(L["o"][0], a.view(B, H), L["o"][1]).add_(x)
            y = F.layer_norm(x, (H,), *L["ln2"][:2], L["ln2"][2])
            q = torch.addmm(L["cq"][0], y, L["cq"][1]).view(B, h, 1, d)
            a = F.scaled_dot_product_attention(q, L["k_mem"], L["v_mem"], attn_mask=L["mask"])
            x = torch.addmm(L["co"][0], a.view(B, H), L["co"][1]).add_(x)
            y = F.layer_norm(x, (H,), *L["ln3"][:2], L["ln3"][2])
            y = F.gelu(torch.addmm(L["fc1"][0], y, L["fc1"][1]))
            x = torch.addmm(L["fc2"][0], y, L["fc2"][1]).add_(x)
        return F.layer_norm(x, (H,), *self.norm[:2], self.norm[2])

    def dt_logits(self, state: torch.Tensor, cur_dt: torch.Tensor) -> torch.Tensor:
        """As :meth:`NfmEventDecoder.dt_logits` for (B, H) states -> (B, n_dt + 1) float32 (also under autocast)."""
        with full_precision(state):
            return torch.addmm(self.dt_bias[cur_dt], state.float(), self.dt_w.float())

    def id_logits(self, state, nxt_dt, cur_u, cur_dt) -> torch.Tensor:
        """As :meth:`NfmEventDecoder.id_logits` for (B, H) states -> (B, N) float32 (also under autocast)."""
        with full_precision(state):
            q = torch.addmm(self.id_q0[nxt_dt.clamp(0, self.n_dt - 1)], state.to(self.id_w.dtype), self.id_w)
            logits = torch.baddbmm(self.id_bias, q.unsqueeze(1).float(), self.keys_t).squeeze(1)
        floor = (cur_u * (nxt_dt == cur_dt)).clamp_min(0)  # same dt class: units from the current one up
        return logits.masked_fill(self.units < floor.unsqueeze(-1), float("-inf"))
