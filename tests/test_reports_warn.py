"""Issue 21, "the first hour, again": reports that warn and cards that say only what is true.

Each test fails on the code before the issue: results.md, summary.png and the model card showed a model below
its null model or far below a baseline without a word; the summary figure drew every baseline in grey (the
2-photon dF/F decoder not at all), had no chance line and put the null bar's label into the title when the
values were negative; cards padded their tables with ``null/bps 0.0000`` rows, advertised spike generation for
an MtM-only model, and the dataset card named the absolute paths of its source files."""
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from matplotlib.colors import to_rgba
from transformers.utils import logging as hf_logging

from nfm.cards import adapter_card, base_hub_id, eval_table, pretrained_model_card
from nfm.evaluation import flags, plots
from nfm.evaluation.report import write_results
from nfm.evaluation.tasks import load_tasks

hf_logging.set_verbosity_error()

#: runner results of a briefly trained model (the shapes the runner writes; the issue's numbers)
RESULTS = {
    "co_smoothing": {"bps": -0.26, "bps_neuron_mean": -0.4, "null/bps": 0.0, "null/bps_neuron_mean": 0.0,
                     "smoothing/bps": 0.21, "smoothing/bps_neuron_mean": 0.1, "n_sessions": 2},
    "choice": {"chance": 0.8, "latents/accuracy": 0.8, "latents/balanced_accuracy": 0.875, "rates/accuracy": 0.6,
               "spikes/accuracy": 0.8, "decoder_protocol": "train_to_eval", "latents/best_C": 1.0,
               "n_sessions": 1},
    "forward_prediction": {"bps": -2.55, "null/bps": 0.0, "n_sessions": 1},
    "stimulus_direction": {"chance": 0.125, "latents/accuracy": 0.156, "rates/accuracy": 0.3,
                           "activity/accuracy": 0.426, "n_sessions": 1},
    "psth_r2": {"psth_r2": 0.3, "smoothing/psth_r2": 0.0066, "n_sessions": 1},
    "wheel_speed": {"not_applicable": "the dataset has no behaviour 'wheel_speed'"},
}
#: a 2-photon masking result: the task's primary (bps) is not there, its calcium metric r2 is
CALCIUM = {"co_smoothing": {"r2": -0.03, "null/r2": 0.0, "ridge/r2": 0.07, "psth/r2": 0.01, "n_sessions": 1}}


def _warnings(md: str) -> list[str]:
    block = md.split("### Warnings", 1)[1].split("\n## ", 1)[0]
    return [ln[len("- ⚠ "):] for ln in block.splitlines() if ln.startswith("- ⚠ ")]


def test_results_md_flags_every_score_below_null_or_best_baseline(tmp_path):
    write_results({**RESULTS, **CALCIUM, "co_smoothing": RESULTS["co_smoothing"]}, tmp_path / "results.json",
                  tasks=load_tasks(list(RESULTS)))
    md = (tmp_path / "results.md").read_text()
    lines = _warnings(md)
    assert ("co_smoothing: bps -0.26 is below the null model (0) by 0.26 and below the best baseline smoothing "
            "(0.21) by 0.47") in lines
    assert "forward_prediction: bps -2.55 is below the null model (0) by 2.55" in lines
    # decoders: against chance and the best baseline, every model feature scored on its own line
    assert ("choice: rates/accuracy 0.6 is below chance (0.8) by 0.2 and below the best baseline spikes (0.8) "
            "by 0.2") in lines
    assert "stimulus_direction: latents/accuracy 0.156 is below the best baseline activity (0.426) by 0.27" in lines
    assert "stimulus_direction: rates/accuracy 0.3 is below the best baseline activity (0.426) by 0.126" in lines
    assert not any(ln.startswith(("psth_r2", "wheel_speed")) or "latents/accuracy 0.8" in ln for ln in lines)
    assert len(lines) == 5, lines
    # the summary table names the best baseline (the dF/F decoder too) and marks the flagged rows
    row = next(ln for ln in md.splitlines() if ln.startswith("| stimulus_direction |"))
    assert "activity 0.426" in row and "chance 0.125" in row and "⚠" in row
    assert "⚠" not in next(ln for ln in md.splitlines() if ln.startswith("| psth_r2 |"))
    # a task section repeats its warning
    section = md.split("## forward_prediction", 1)[1].split("\n## ", 1)[0]
    assert "- ⚠ forward_prediction: bps -2.55 is below the null model" in section


def test_results_md_judges_a_2p_masking_task_by_its_calcium_metric_and_says_when_nothing_is_below(tmp_path):
    write_results(CALCIUM, tmp_path / "a" / "results.json", tasks=load_tasks(["co_smoothing"]))
    lines = _warnings((tmp_path / "a" / "results.md").read_text())
    assert lines == ["co_smoothing: r2 -0.03 is below the null model (0) by 0.03 and below the best baseline "
                     "ridge (0.07) by 0.1"]
    good = {"co_smoothing": {"bps": 0.3, "null/bps": 0.0, "smoothing/bps": 0.2}}
    write_results(good, tmp_path / "b" / "results.json", tasks=load_tasks(["co_smoothing"]))
    md = (tmp_path / "b" / "results.md").read_text()
    assert "### Warnings" not in md and "No score is below its null model, chance or best baseline." in md


def test_lower_is_better_metrics_are_flagged_when_above():
    (f,) = flags.task_flags("t", {"isi_ks": 0.5, "glm/isi_ks": 0.2}, "isi_ks")
    assert f.reference == "glm" and f.margin == pytest.approx(0.3)
    assert "above the best baseline glm (0.2) by 0.3" in flags.flag_line([f])
    assert flags.task_flags("t", {"isi_ks": 0.1, "glm/isi_ks": 0.2}, "isi_ks") == []


@pytest.fixture
def captured(monkeypatch):
    got = {}
    original = plots._save

    def grab(fig, path):
        got["fig"] = fig
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", grab)
    return got


def _bbox(artist, renderer):
    return artist.get_window_extent(renderer)


def test_summary_png_shows_best_baseline_chance_and_labels_clear_of_the_title(tmp_path, captured):
    write_results(RESULTS, tmp_path / "results.json", tasks=load_tasks(list(RESULTS)))
    assert (tmp_path / "figures" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    fig = captured["fig"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = {ax.get_title().split(":")[0]: ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {"co_smoothing", "choice", "forward_prediction", "stimulus_direction", "psth_r2"}

    ax = panels["stimulus_direction"]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[:2] == ["model", "activity (best)"]  # the best baseline beside the model ...
    model_c, best_c = (to_rgba(p.get_facecolor()) for p in ax.patches[:2])
    assert model_c != best_c and best_c != to_rgba(plots.OTHER_COLOR)  # ... in its own colour
    chance = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(0.125)  # the chance line
    assert "below activity by 0.27" in ax.get_title() and to_rgba(ax.title.get_color()) == to_rgba(plots.FLAG_COLOR)
    assert to_rgba(panels["psth_r2"].title.get_color()) == to_rgba("k")  # not below anything: not red

    for name, ax in panels.items():  # every value label inside its axes and clear of the title
        title = _bbox(ax.title, renderer)
        inside = _bbox(ax, renderer)
        labels = [t for t in ax.texts if t.get_text()]
        assert labels, name
        for t in labels:
            b = _bbox(t, renderer)
            assert not b.overlaps(title), (name, t.get_text())
            assert inside.y0 - 1 <= b.y0 and b.y1 <= inside.y1 + 1, (name, t.get_text())


def test_card_table_has_only_informative_rows_and_warns():
    text = eval_table({**{k: v for k, v in RESULTS.items()}, "generation": {"id_loss": 2.5, "dt_loss": 1.1}})
    assert "null/" not in text and "0.0000" not in text and "n_sessions" not in text and "best_C" not in text
    assert "| co_smoothing | bps | -0.26 ⚠ | smoothing 0.21 (best baseline) |" in text
    assert "| stimulus_direction | latents/accuracy | 0.156 ⚠ | chance 0.125, activity 0.426 (best baseline) |" in text
    assert "| psth_r2 | psth_r2 | 0.3 | smoothing 0.0066 (best baseline) |" in text
    assert ("- ⚠ co_smoothing: bps -0.26 is below the null model (0) by 0.26 and below the best baseline "
            "smoothing (0.21) by 0.47") in text
    assert "| generation / id_loss | 2.5000 |" in text and "Not applicable to this model or data: wheel_speed" in text
    assert eval_table({"wheel_speed": {"not_applicable": "x"}}).startswith("Not applicable")


@pytest.fixture(scope="module")
def tiny_meta():
    from nfm.data.hf import build_dataset
    from nfm.data.sources.synthetic import make_ibl_like_world

    sessions = make_ibl_like_world(n_animals=1, n_trials=8, units_per_region=(3, 4), seed=1)
    return build_dataset(sessions)


@pytest.mark.parametrize("objectives", [["mtm"], ["mtm", "generation"]])
def test_model_card_lists_the_capabilities_of_its_objectives(tiny_meta, tmp_path, objectives):
    from nfm.models import NfmConfig, NfmForPretraining

    _, meta = tiny_meta
    torch.manual_seed(0)
    cfg = NfmConfig.from_dataset_meta(meta, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32, decoder_layers=1, objectives=objectives)
    text = pretrained_model_card(NfmForPretraining(cfg), meta, train_sessions=meta.session_ids,
                                 dataset_name="synthetic", eval_summary={"co_smoothing": RESULTS["co_smoothing"]},
                                 repo_id=str(tmp_path / "run"))
    card = ModelCard(text)
    generates = "generation" in objectives
    assert ("Neuroformer-style autoregressive spike generation" in card.text) == generates
    assert ("masked read-out + event decoder" in card.text) == generates and "MtM multi-task masking" in card.text
    assert ("not: spike generation" in card.text) != generates
    assert str(tmp_path) not in text and 'from_pretrained("path/to/this/folder")' in text
    assert "- ⚠ co_smoothing: bps -0.26 is below the null model" in card.text


def test_adapter_card_base_model_is_a_hub_id_or_left_out(tmp_path):
    kw = dict(mode="lora", sessions=["s1"], trainable=10, total=1000, dataset_name="ds", base_fingerprint="ab" * 32)
    card = ModelCard(adapter_card(base_model="org/nfm-base", **kw))
    assert card.data.base_model == "org/nfm-base" and "`org/nfm-base`" in card.text
    snapshot = tmp_path / "hub" / "models--org--nfm-base" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)  # a base loaded from the Hub cache: its id is known
    assert base_hub_id(snapshot) == "org/nfm-base"
    assert ModelCard(adapter_card(base_model=str(snapshot), **kw)).data.base_model == "org/nfm-base"
    local = tmp_path / "outputs" / "pretrain"
    local.mkdir(parents=True)
    text = adapter_card(base_model=str(local), **kw)
    card = ModelCard(text)
    assert card.data.base_model is None and str(tmp_path) not in text
    assert "not a Hub id" in card.text and "abababababababab" in card.text


def test_dataset_card_names_no_absolute_path(tmp_path):
    from nfm.data.hf import build_dataset, render_card
    from nfm.data.sources.synthetic import make_ibl_like_world

    sessions = make_ibl_like_world(n_animals=1, n_trials=6, units_per_region=(2, 2), seed=2)
    src = tmp_path / "rig" / "suite2p" / "plane0" / "spks.npy"
    for s in sessions:
        s.source = str(src)
    dd, meta = build_dataset(sessions)
    text = render_card(dd, meta)
    assert str(tmp_path) not in text and ".../spks.npy" in text
