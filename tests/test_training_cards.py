"""Model-card rendering: Hub-valid YAML metadata, every placeholder filled, clear error when one is missing."""
import pytest
from huggingface_hub import ModelCard

from nfm.cards import ADAPTER_TEMPLATE, MODEL_TEMPLATE, adapter_card, card_metadata, eval_table, load_template, render_card


def test_metadata_is_valid_hub_card_data():
    meta = card_metadata(model_name="nfm-x", tags=["mtm"], datasets=["synthetic"], base_model="org/base",
                         metrics={"co_smoothing_bits_per_spike": 0.123456789, "nan_metric": float("nan")})
    card = ModelCard(render_card("# $title\n", meta, {"title": "hello"}))
    assert card.data.library_name == "nfm" and card.data.base_model == "org/base"
    assert card.data.datasets == ["synthetic"] and card.data.metrics == ["co_smoothing_bits_per_spike"]
    assert card.data.tags.count("mtm") == 1 and "nfm" in card.data.tags
    result = card.data.eval_results[0]
    assert result.metric_type == "co_smoothing_bits_per_spike" and abs(result.metric_value - 0.123457) < 1e-9
    assert card.text.strip() == "# hello"


def test_missing_placeholder_raises():
    with pytest.raises(KeyError, match="title"):
        render_card("# $title\n", card_metadata(model_name="m"), {})


def test_templates_render_fully(tmp_path):
    base = tmp_path / "outputs" / "pretrain"  # a local base: no base_model (a Hub id only), no absolute path
    base.mkdir(parents=True)
    text = adapter_card(base_model=str(base), mode="lora", sessions=["s1", "s2"], trainable=10, total=1000,
                        dataset_name="ds", lora_settings="r=8", eval_summary={"masked_loss": {"neuron": 0.5}},
                        train_info={"steps": 3}, base_fingerprint="ab" * 32)
    card = ModelCard(text)
    assert "$" not in card.text and "1.00%" in card.text and "| masked_loss / neuron | 0.5000 |" in card.text
    assert card.data.base_model is None and "lora" in card.data.tags
    assert str(tmp_path) not in text and "`pretrain` (a local folder" in text and "abababab" in card.text
    for name in (MODEL_TEMPLATE, ADAPTER_TEMPLATE):
        assert "$title" in load_template(name)  # the repository's templates are used, not the fallback
    assert eval_table(None) == "No evaluation was run."
