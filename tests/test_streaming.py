"""Streaming sessions: the sampler's session blocks (one block of sessions read at a time) keep per-session
batches and the once-per-epoch coverage of every trial."""
import numpy as np
import pytest

from nfm.data.sampler import SessionBatchSampler


def _sessions(n_sessions=7, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 30, n_sessions)
    ids = np.repeat([f"s{i}" for i in range(n_sessions)], sizes)
    return list(rng.permutation(ids))  # rows of a session scattered over the dataset


@pytest.mark.parametrize("block", [1, 3, 7])
def test_session_blocks_cover_every_trial_once_and_read_one_block_at_a_time(block):
    sids = _sessions()
    sampler = SessionBatchSampler(sids, batch_size=4, seed=1, sessions_per_block=block)
    sampler.set_epoch(2)
    batches = list(sampler)
    rows = [r for b in batches for r in b]
    assert sorted(rows) == list(range(len(sids)))  # every trial exactly once
    seq = [sids[b[0]] for b in batches]
    assert all(len({sids[r] for r in b}) == 1 for b in batches)  # one session per batch
    # blocks: once a block's sessions are done, none of them comes back
    blocks, seen = [], set()
    for s in seq:
        if s not in seen and (not blocks or len(blocks[-1]) == block):
            blocks.append(set())
        blocks[-1].add(s)
        seen.add(s)
    assert all(len(b) <= block for b in blocks) and len(blocks) == -(-7 // block)
    first = {s: seq.index(s) for s in set(seq)}
    last = {s: len(seq) - 1 - seq[::-1].index(s) for s in set(seq)}
    for b in blocks:
        lo, hi = min(first[s] for s in b), max(last[s] for s in b)
        assert {seq[i] for i in range(lo, hi + 1)} == b  # the block's batches are contiguous
    if block > 1:  # and shuffled within the block, not session after session
        assert any(seq[i] != seq[i + 1] and seq[i] in seq[i + 2:] for i in range(len(seq) - 2))


def test_session_blocks_shard_across_ranks_and_change_per_epoch():
    sids = _sessions(seed=3)
    ranks = [SessionBatchSampler(sids, 3, num_replicas=2, rank=r, seed=0, sessions_per_block=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(0)
    a, b = (list(r) for r in ranks)
    assert len(a) == len(b)
    assert set(map(tuple, a)).isdisjoint(map(tuple, b)) or len(a) * 2 > ranks[0].total_batches
    epoch0 = list(ranks[0])
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != epoch0
    with pytest.raises(ValueError, match="sessions_per_block"):
        SessionBatchSampler(sids, 3, sessions_per_block=-1)
