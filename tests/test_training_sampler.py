"""SessionBatchSampler: one session per batch, disjoint rank shards covering every trial, epoch shuffles."""
import numpy as np
import pytest
import torch

from nfm.data.sampler import SessionBatchSampler


def _sessions():
    # 3 sessions of unequal size, rows interleaved as in a real split
    sids = ["a"] * 23 + ["b"] * 10 + ["c"] * 7
    rng = np.random.default_rng(0)
    return list(np.asarray(sids)[rng.permutation(len(sids))])


def test_batches_are_single_session_and_cover_every_row_once():
    sids = _sessions()
    s = SessionBatchSampler(sids, batch_size=4, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == 6 + 3 + 2
    for b in batches:
        assert len({sids[i] for i in b}) == 1
        assert 1 <= len(b) <= 4
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(sids)))


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_get_disjoint_shards_that_together_cover_the_epoch(world):
    sids = _sessions()
    per_rank = [list(SessionBatchSampler(sids, batch_size=4, num_replicas=world, rank=r, seed=5)) for r in range(world)]
    lengths = {len(p) for p in per_rank}
    assert lengths == {len(SessionBatchSampler(sids, 4, num_replicas=world, rank=0))}  # same step count on every rank
    seen = [tuple(b) for p in per_rank for b in p]
    total = SessionBatchSampler(sids, 4).total_batches
    n_pad = len(seen) - total
    assert 0 <= n_pad < world
    assert len(set(seen)) == total  # only padding batches repeat
    assert sorted(np.concatenate([b for b in map(list, set(seen))]).tolist()) == list(range(len(sids)))
    # every session is visited
    assert {sids[b[0]] for b in seen} == {"a", "b", "c"}
    # no batch shared between two ranks except padding repeats
    shared = set(map(tuple, per_rank[0])) & set(map(tuple, per_rank[1]))
    assert len(shared) <= n_pad


def test_epochs_differ_and_are_reproducible():
    sids = _sessions()
    s = SessionBatchSampler(sids, batch_size=4, seed=1)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0
    assert e1 != e0
    other = SessionBatchSampler(sids, batch_size=4, seed=1)
    other.set_epoch(1)
    assert list(other) == e1


def test_more_ranks_than_batches_still_gives_every_rank_a_batch():
    sids = ["a"] * 3
    out = [list(SessionBatchSampler(sids, batch_size=4, num_replicas=4, rank=r)) for r in range(4)]
    assert all(len(o) == 1 for o in out)
    assert all(sorted(o[0]) == [0, 1, 2] for o in out)


def test_drop_last_and_bad_arguments():
    sids = ["a"] * 9 + ["b"] * 3
    s = SessionBatchSampler(sids, batch_size=4, drop_last=True, shuffle=False)
    assert [len(b) for b in s] == [4, 4]
    with pytest.raises(ValueError, match="rank 2"):
        SessionBatchSampler(sids, batch_size=4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        SessionBatchSampler(sids, batch_size=0)
    with pytest.raises(ValueError, match="no session has"):
        SessionBatchSampler(["a"] * 3, batch_size=4, drop_last=True)


def test_works_as_a_dataloader_batch_sampler():
    sids = _sessions()
    data = torch.arange(len(sids))
    loader = torch.utils.data.DataLoader(data, batch_sampler=SessionBatchSampler(sids, batch_size=5, seed=0))
    got = torch.cat(list(loader)).sort().values
    assert torch.equal(got, data)
