"""Recipe arguments: the data, model and run dataclasses (besides ``transformers.TrainingArguments``), the
nfm training defaults and the ``--config YAML`` + command-line parser."""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, Sequence

from transformers import HfArgumentParser, TrainingArguments

from nfm import resources

RANK_INFO_ENV = "NFM_RANK_INFO_DIR"

@dataclass
class DataArguments:
    """Which data to train on."""

    dataset: list[str] | None = field(default=None, metadata={
        "help": "nfm dataset folder(s) (recipes/prepare_data.py). Several (--dataset A B ...; YAML 'datasets:') "
                "train one model on all of them: spikes and 2-photon, each at its own time grid (mixed "
                "pretraining). Default: build the synthetic world into <output_dir>/dataset (reused when it "
                "exists)."})
    datasets: list[str] | None = field(default=None, metadata={
        "help": "YAML spelling of several datasets (added after --dataset)"})
    dataset_weights: list[float] | None = field(default=None, metadata={
        "help": "several datasets: share of the training batches drawn from each (positive numbers, one per "
                "dataset, normalised). Default: natural shares (every training trial once per epoch)"})
    synthetic_animals: int = field(default=5, metadata={"help": "synthetic default: number of animals"})
    synthetic_sessions_per_animal: int = field(default=2, metadata={"help": "synthetic default: sessions per animal"})
    synthetic_trials: int = field(default=120, metadata={"help": "synthetic default: trials per session"})
    synthetic_seed: int = field(default=0, metadata={"help": "synthetic default: world seed"})
    sessions: list[str] | None = field(default=None, metadata={
        "help": "train on these session ids only (default: every session of the dataset)"})
    sessions_file: str | None = field(default=None, metadata={
        "help": "file with session ids (one per line, # comments), added to --sessions"})
    exclude_subjects: list[str] | None = field(default=None, metadata={
        "help": "animals (subject ids) left out of training, e.g. kept for LoRA adaptation"})
    synthetic_heldout_subjects: list[str] | None = field(default=None, metadata={
        "help": "synthetic worlds only: animals left out of training (kept for the LoRA demo); ignored for "
                "datasets from other sources, so a config made for the synthetic default works on real data"})
    exclude_sessions: list[str] | None = field(default=None, metadata={"help": "session ids left out of training"})
    exclude_sessions_file: str | None = field(default=None, metadata={
        "help": "file with session ids left out (e.g. datasets/ibl_repeated_site/mtm_heldout_5_eids.txt)"})
    train_fraction: float = field(default=1.0, metadata={
        "help": "share of each session's training trials used (few-shot runs); at least one trial per session"})
    train_fraction_seed: int = field(default=0, metadata={"help": "seed of the --train_fraction subset"})
    modality_map: list[str] | None = field(default=None, metadata={
        "help": "fine-tuning on a dataset that names the base model's stimulus/behaviour variables differently: "
                "BASE_NAME=DATASET_NAME pairs, e.g. --modality_map signed_contrast=contrast wheel_speed=wheel. "
                "Variables the dataset lacks are fed as missing (masked), never as observed zeros"})
    bin_size: float | None = field(default=None, metadata={
        "help": "bin size [s] of the model: spike data are re-binned at it (it must divide the window); it goes "
                "into the model config, which the collator and the evaluation read. Default: the dataset's (or, "
                "with --init_from, the pretrained model's)"})

    def __post_init__(self):
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train_fraction {self.train_fraction!r} must be in (0, 1]")
        paths = [self.dataset] if isinstance(self.dataset, str) else list(self.dataset or [])
        paths += [self.datasets] if isinstance(self.datasets, str) else list(self.datasets or [])
        dup = sorted({p for p in paths if paths.count(p) > 1})
        if dup:
            raise ValueError(f"--dataset {dup[0]} is given twice")
        #: every dataset folder, in order; ``dataset`` stays the one path (a str) when there is one
        self.dataset_paths = paths
        self.dataset = paths[0] if len(paths) == 1 else (paths or None)
        self.modality_map = parse_modality_map(self.modality_map)
        if self.dataset_weights is not None and len(self.dataset_weights) != len(paths):
            raise ValueError(f"--dataset_weights has {len(self.dataset_weights)} values for {len(paths)} datasets")


@dataclass
class ModelArguments:
    """Which model to build (config fields of :class:`nfm.models.NfmConfig`)."""

    preset: str = field(default="default", metadata={"help": "NfmConfig size preset: default | mtm | neuroformer"})
    objectives: list[str] | None = field(default=None, metadata={
        "help": "objectives of NfmForPretraining: mtm and/or generation (default: the config's)"})
    mask_modes: list[str] | None = field(default=None, metadata={
        "help": "MtM mask modes sampled per batch (all | neuron causal temporal intra_region inter_region random_token)"})
    model_overrides: dict | str | None = field(default=None, metadata={
        "help": "any other NfmConfig fields, as a YAML mapping in the config file or a JSON string, "
                "e.g. '{\"hidden_size\": 64, \"num_hidden_layers\": 2}'"})
    init_from: str | None = field(default=None, metadata={
        "help": "start from this pretrained model (folder or Hub id) instead of a random init"})

    def __post_init__(self):
        if isinstance(self.model_overrides, str):
            try:
                self.model_overrides = json.loads(self.model_overrides)
            except json.JSONDecodeError as err:
                raise ValueError(f"--model_overrides {self.model_overrides!r} is not a JSON object: {err}") from None
        if self.model_overrides is not None and not isinstance(self.model_overrides, dict):
            raise ValueError(f"--model_overrides must be a mapping, got {self.model_overrides!r}")

    def config_overrides(self) -> dict[str, Any]:
        out = dict(self.model_overrides or {})
        if self.objectives is not None:
            out["objectives"] = list(self.objectives)
        if self.mask_modes is not None:
            out["mask_modes"] = list(self.mask_modes)
        return out


@dataclass
class RunArguments:
    """Recipe-level switches."""

    config: str | None = field(default=None, metadata={
        "help": "YAML file whose keys are any of these arguments (command-line values override it)"})
    rank_info_dir: str | None = field(default=None, metadata={
        "help": f"write DIR/rank<r>.json per process (batches seen, parameter hashes); also env {RANK_INFO_ENV}"})
    eval_batch_size: int = field(default=16, metadata={"help": "trials per batch in the final evaluation"})
    eval_max_trials: int = field(default=0, metadata={
        "help": "cap of evaluated trials per session in the final evaluation (0 = the whole split)"})
    eval_split: str = field(default="validation", metadata={"help": "split of the final evaluation summary"})
    eval_tasks: str = field(default="co_smoothing,forward_prediction,intra_region,inter_region", metadata={
        "help": "tasks of the final evaluation (the evaluation runner's, as recipes/evaluate.py --tasks)"})
    skip_eval: bool = field(default=False, metadata={"help": "skip the final evaluation summary"})


#: TrainingArguments defaults of the nfm recipes (a YAML config or the command line overrides them).
TRAINING_DEFAULTS: dict[str, Any] = dict(
    output_dir="outputs/pretrain",
    per_device_train_batch_size=16,
    per_device_eval_batch_size=16,
    learning_rate=1e-3,
    weight_decay=0.01,
    warmup_steps=0.05,
    lr_scheduler_type="cosine",
    max_steps=300,
    logging_steps=10,
    logging_first_step=True,
    save_strategy="steps",
    save_steps=100,
    save_total_limit=2,
    report_to=["tensorboard"],
    remove_unused_columns=False,
    dataloader_num_workers=0,
    ddp_find_unused_parameters=True,
    seed=42,
    max_grad_norm=1.0,
)


def parse_modality_map(value) -> dict[str, str]:
    """``--modality_map`` ``["BASE=DATASET", ...]`` (or a YAML mapping) -> ``{base name: dataset name}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in ([value] if isinstance(value, str) else value):
        base, sep, name = str(item).partition("=")
        if not sep or not base.strip() or not name.strip():
            raise ValueError(f"--modality_map {item!r}: expected BASE_NAME=DATASET_NAME")
        if base.strip() in out:
            raise ValueError(f"--modality_map names {base.strip()!r} twice")
        out[base.strip()] = name.strip()
    return out


def read_id_file(path: str | os.PathLike) -> list[str]:
    """Ids from a manifest: one per line; ``#`` comments and blank lines ignored.  A path that does not exist
    relative to the working directory is looked up among the manifests shipped with nfm (configs name them as
    the repository shows them, e.g. ``datasets/ibl_repeated_site/mtm_heldout_5_eids.txt``)."""
    p = resources.find_file(path, "manifests")
    if p is None:
        raise FileNotFoundError(f"session id file {path} does not exist (nor among the manifests shipped with "
                                f"nfm in {resources.path('manifests')})")
    out = []
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def load_yaml_config(path: str | os.PathLike, dataclass_types: Sequence[type]) -> dict[str, Any]:
    """Read a recipe YAML (a flat mapping of argument names) and check every key is an argument."""
    import yaml

    p = resources.find_file(path, "configs")
    if p is None:
        raise FileNotFoundError(f"config {path} not found (nor among the configs shipped with nfm: "
                                f"{sorted(f.stem for f in resources.path('configs').glob('*.yaml'))})")
    values = yaml.safe_load(p.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{p}: a recipe config must be a mapping of argument names, got {type(values).__name__}")
    known = {f.name for dt in dataclass_types for f in fields(dt)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{p}: unknown argument(s) {unknown}; see --help for the list")
    return values


def parse_args(
    argv: Sequence[str] | None = None,
    default_config: str | os.PathLike | None = None,
    dataclass_types: Sequence[type] = (DataArguments, ModelArguments, RunArguments, TrainingArguments),
    defaults: dict[str, Any] | None = None,
):
    """Parse ``--config YAML`` + command-line overrides into the given dataclasses.

    Precedence: command line > YAML config (``--config`` or ``default_config``)
    > ``defaults`` > :data:`TRAINING_DEFAULTS` > dataclass defaults.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    parser = HfArgumentParser(list(dataclass_types))
    names = {f.name for dt in dataclass_types for f in fields(dt)}
    base = {k: v for k, v in TRAINING_DEFAULTS.items() if k in names}
    base.update(defaults or {})
    config_path = known.config or default_config
    if config_path:
        base.update(load_yaml_config(config_path, dataclass_types))
        if "config" in names:
            base["config"] = str(config_path)
    parser.set_defaults(**base)
    return parser.parse_args_into_dataclasses(args=list(argv) if argv is not None else None,
                                              look_for_args_file=False)
