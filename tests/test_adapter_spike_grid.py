"""The time grid a new spike session gets when it is added to a base (nfm.adapters.new_sessions_spec): the base's
spike bin size, or -- for a base pretrained on 2-photon data only, which has a frame clock and no spike grid --
the dataset's own bins (nfm.adapters.spike_bin_size_of)."""
from __future__ import annotations

import pytest

from nfm.adapters import new_sessions_spec, spike_bin_size_of
from nfm.models import NfmConfig


@pytest.fixture(scope="module")
def metas():
    from nfm.data.hf import build_dataset
    from nfm.data.prepare import calcium_bin_size
    from nfm.data.sources.synthetic import make_two_modality_world

    sessions = make_two_modality_world(n_spike_animals=1, n_calcium_animals=1, n_trials=12, seed=0)
    spk = [s for s in sessions if s.modality == "spikes"]
    cal = [s for s in sessions if s.modality == "calcium"]
    window = (-0.5, 1.5)
    _, spk_meta = build_dataset(spk, align_event="stimOn_times", window=window, bin_size=0.02)
    _, cal_meta = build_dataset(cal, align_event="stimOn_times", window=window,
                                bin_size=calcium_bin_size(cal, window))
    return spk_meta, cal_meta


def test_a_2photon_base_reads_new_spike_sessions_at_their_own_bins(metas):
    spk_meta, cal_meta = metas
    cal_cfg = NfmConfig.from_dataset_meta(cal_meta)
    assert cal_cfg.modality == "calcium" and cal_cfg.bin_size > spk_meta.bin_size
    assert spike_bin_size_of(cal_cfg) is None
    spec = new_sessions_spec(spk_meta, spk_meta.session_ids, config=cal_cfg)
    assert {s["bin_size"] for s in spec.values()} == {spk_meta.bin_size}
    assert all(s["modality"] == "spikes" for s in spec.values())


def test_a_spike_or_mixed_base_rebins_new_spike_sessions_at_its_spike_bin_size(metas):
    spk_meta, cal_meta = metas
    coarse = NfmConfig.from_dataset_meta(spk_meta, bin_size=0.04)
    assert spike_bin_size_of(coarse) == pytest.approx(0.04)
    spec = new_sessions_spec(spk_meta, spk_meta.session_ids, config=coarse)
    assert [s["bin_size"] for s in spec.values()] == pytest.approx([0.04] * len(spec))
    mixed = NfmConfig.from_dataset_metas([cal_meta, spk_meta])  # primary: the spike dataset
    assert spike_bin_size_of(mixed) == pytest.approx(spk_meta.bin_size)
    # 2-photon sessions keep their frame clock whatever the base
    spec = new_sessions_spec(cal_meta, cal_meta.session_ids, config=coarse)
    assert {s["bin_size"] for s in spec.values()} == {cal_meta.bin_size}
    assert spike_bin_size_of(None) is None
