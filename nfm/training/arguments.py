"""Recipe arguments: the data, model and run dataclasses (besides ``transformers.TrainingArguments``), the
nfm training defaults and the ``--config YAML`` + command-line parser.

Importing this module is light (no torch, no transformers), so a recipe answers ``--help`` and refuses a bad
argument in a fraction of a second: :func:`parse_args` checks the command line first with a plain ``argparse``
parser built from the dataclasses (:func:`light_parser`; the fields of ``transformers.TrainingArguments`` are
read from its source file with :mod:`ast`, without importing it) and only then imports transformers and parses
the same arguments into the real dataclasses with ``HfArgumentParser``.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import json
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

from nfm import resources
from nfm.cli import ArgumentParser, split_ids

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
    sessions_per_block: int = field(default=0, metadata={
        "help": "0: batches of all sessions shuffled together; S > 0: shuffled within blocks of S sessions, one "
                "block after the other (reads one block of sessions at a time from a dataset larger than memory)"})
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
        for name in ("sessions", "exclude_subjects", "synthetic_heldout_subjects", "exclude_sessions"):
            value = getattr(self, name)  # ids space- or comma-separated: --sessions a b == --sessions a,b
            if value is not None:
                setattr(self, name, split_ids(value))


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
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "train into an --output_dir that holds an earlier run (its model or checkpoint-N folders): that "
                "run's outputs are removed first (a synthetic dataset/ built there is kept). Without it (or "
                "--resume_from_checkpoint) such a folder is refused"})
    eval_budget_s: float | None = field(default=None, metadata={
        "help": "time bound of the final evaluation summary [s]. Default: 10% of the training time it follows or "
                "60 s, whichever is larger. Within it: the --eval_tasks list with the smoothing baseline from the "
                "cache of earlier runs on the same data, planned from a measured pilot on the first session: "
                "fewer trials, then fewer sessions when the estimate does not fit, a task that would not fit "
                "skipped; progress per task; the summary says what it cut and prints the recipes/evaluate.py "
                "command of the full evaluation. 0: no bound (every session and trial of --eval_split)"})
    precision: str = field(default="auto", metadata={
        "choices": ["auto", "fp32", "bf16"],
        "help": "training precision. auto: bf16 only where the hardware has it (CPU flags amx_bf16 or "
                "avx512_bf16 in /proc/cpuinfo; torch.cuda.is_bf16_supported() on a GPU) and a start-up probe "
                "(< 2 s: an MLP block at the model's hidden size, fp32 and bf16 alternating) measures bf16 >= "
                "1.1x faster; fp32 otherwise. bf16 (= --bf16, on CPU too): autocast of forward and loss, float32 "
                "master weights, optimizer state, likelihoods, log-rates and softmax statistics (on a CPU without "
                "bf16 hardware it runs emulated, slower: a warning says so). --fp16: CUDA only. The choice and its "
                "reason are printed and written to eval_summary.json (train.precision)"})
    #: the resolved precision (:meth:`nfm.training.precision.PrecisionChoice.record`), set by :func:`parse_args`
    precision_record: dict | None = field(default=None, init=False, repr=False)


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


#: stands for ``transformers.TrainingArguments`` in ``dataclass_types`` (resolved only when needed)
TRAINING_ARGUMENTS = "transformers.TrainingArguments"
DEFAULT_TYPES: tuple = ("DataArguments", "ModelArguments", "RunArguments", TRAINING_ARGUMENTS)


def _resolve(dataclass_types: Sequence, real: bool) -> list:
    """The dataclass types with the names above replaced by the classes (``real``: import TrainingArguments)."""
    out = []
    for dt in dataclass_types:
        if dt == TRAINING_ARGUMENTS:
            if real:
                from transformers import TrainingArguments

                dt = TrainingArguments
        elif isinstance(dt, str):
            dt = globals()[dt]
        out.append(dt)
    return out


def _is_training_arguments(dt) -> bool:
    return dt == TRAINING_ARGUMENTS or (isinstance(dt, type) and dt.__name__ == "TrainingArguments"
                                        and dt.__module__.startswith("transformers"))


def argument_names(dataclass_types: Sequence) -> set[str]:
    """Every argument name of ``dataclass_types`` (TrainingArguments' read from its source, not imported)."""
    names: set[str] = set()
    for dt in _resolve(dataclass_types, real=False):
        if _is_training_arguments(dt):
            names |= {f["name"] for f in training_argument_fields()}
        else:
            names |= {f.name for f in fields(dt) if f.init}
    return names


def load_yaml_config(path: str | os.PathLike, dataclass_types: Sequence = DEFAULT_TYPES) -> dict[str, Any]:
    """Read a recipe YAML (a flat mapping of argument names) and check every key is an argument."""
    import yaml

    p = resources.find_file(path, "configs")
    if p is None:
        raise FileNotFoundError(f"config {path} not found (nor among the configs shipped with nfm: "
                                f"{sorted(f.stem for f in resources.path('configs').glob('*.yaml'))})")
    values = yaml.safe_load(p.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{p}: a recipe config must be a mapping of argument names, got {type(values).__name__}")
    known = argument_names(dataclass_types)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{p}: unknown argument(s) {unknown}; see --help for the list")
    return values


def parse_args(
    argv: Sequence[str] | None = None,
    default_config: str | os.PathLike | None = None,
    dataclass_types: Sequence = DEFAULT_TYPES,
    defaults: dict[str, Any] | None = None,
    description: str | None = None,
    prog: str | None = None,
    check=None,
):
    """Parse ``--config YAML`` + command-line overrides into the given dataclasses.

    Precedence: command line > YAML config (``--config`` or ``default_config``)
    > ``defaults`` > :data:`TRAINING_DEFAULTS` > dataclass defaults.

    ``dataclass_types``: dataclasses, with :data:`TRAINING_ARGUMENTS` (or ``transformers.TrainingArguments``
    itself) for the Trainer's arguments.  The command line is checked first by :func:`light_parser` (``--help``
    and argument errors answer without importing transformers or torch), then parsed by ``HfArgumentParser``.
    ``check(namespace)``: called after the light check, before transformers is imported (a recipe's own fast
    checks, e.g. that ``--dataset`` exists).
    """
    argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    names = argument_names(dataclass_types)
    base = {k: v for k, v in TRAINING_DEFAULTS.items() if k in names}
    base.update(defaults or {})
    config_path = known.config or default_config
    if config_path:
        base.update(load_yaml_config(config_path, dataclass_types))
        if "config" in names:
            base["config"] = str(config_path)
    # 1. light check: --help, unknown options, wrong types, the nfm dataclasses' own checks
    light = light_parser(dataclass_types, description=description, prog=prog)
    light.set_defaults(**base)
    ns = light.parse_args(argv)
    for dt in _resolve(dataclass_types, real=False):
        if not _is_training_arguments(dt):
            dt(**{f.name: getattr(ns, f.name) for f in fields(dt) if f.init})
    if check is not None:
        check(ns)
    # precision (--precision, --bf16, --fp16): resolved before TrainingArguments exists (a CPU run in bf16 needs
    # use_cpu, a wrong combination is a one-line error); printed once, recorded on the RunArguments
    choice = None
    if "precision" in names and any(_is_training_arguments(dt) for dt in dataclass_types):
        from nfm.cli import is_main_process

        from .precision import resolve_from_namespace

        choice = resolve_from_namespace(ns)
        base.update(choice.training_arguments)
        if is_main_process():
            print(choice.line(), flush=True)
            if choice.warning:
                print(choice.warning, flush=True)
    # 2. the real parse (imports transformers when TrainingArguments is among the types)
    from transformers import HfArgumentParser

    parser = HfArgumentParser(_resolve(dataclass_types, real=True), prog=light.prog)
    parser.error = light.error  # one-line errors here too (e.g. a choice of a TrainingArguments field)
    parser.set_defaults(**base)
    parsed = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    if choice is not None:
        for obj in parsed:
            if hasattr(obj, "precision_record"):
                obj.precision_record = choice.record()
    return parsed


def given_arguments(argv: Sequence[str], dataclass_types: Sequence = DEFAULT_TYPES) -> set[str]:
    """Names of the arguments that the command line ``argv`` sets itself (not the YAML config, not a default):
    a command-line setting wins over the config, and a recipe refuses one it would not use."""
    parser = light_parser(dataclass_types)
    unset = object()
    parser.set_defaults(**{a.dest: unset for a in parser._actions if a.dest != "help"})
    ns, _ = parser.parse_known_args(list(argv))
    return {k for k, v in vars(ns).items() if v is not unset}


def reconcile_model_arguments(model_args: ModelArguments, given: set[str], config: str | None = None) -> list[str]:
    """Make the model arguments the command line set win over the YAML config's, or refuse what would not be used.

    ``given``: :func:`given_arguments` of the command line; ``config``: the YAML file (for the messages).
    Changes ``model_args`` in place and returns one-line notes to print:

    * ``--preset P`` on the command line, ``model_overrides`` from the config: the config's overrides of the
      fields the preset sets (``default``: the size fields of every preset, i.e. the NfmConfig defaults) are
      dropped, so ``--preset mtm`` trains the MtM size (noted, with the fields kept);
    * ``--model_overrides`` on the command line naming ``objectives`` / ``mask_modes``: they win over the
      config's ``objectives:`` / ``mask_modes:``;
    * ``--mask_modes`` on the command line, ``model_overrides.mask_mode_weights`` from the config: the config's
      mask mix is dropped (noted), the given modes are drawn uniformly;
    * ``--init_from`` (the pretrained model's own config is kept): ``--preset``, ``--objectives``,
      ``--mask_modes`` or ``--model_overrides`` on the command line would not be used -- a one-line
      :class:`~nfm.errors.UsageError`.
    """
    from nfm.errors import UsageError

    notes: list[str] = []
    where = f" ({config})" if config else ""
    if model_args.init_from:
        unused = [f"--{n}" for n in ("preset", "objectives", "mask_modes", "model_overrides") if n in given]
        if unused:
            raise UsageError(unused[0], f"not used with --init_from {model_args.init_from}: the pretrained model "
                                        "keeps its own config (size, objectives, masks); drop one of them")
        return notes
    overrides = dict(model_args.model_overrides or {})
    if "mask_modes" in given and "model_overrides" not in given and "mask_mode_weights" in overrides:
        # the config's mask mix weighs the config's modes: --mask_modes on the command line replaces both
        dropped = overrides.pop("mask_mode_weights")
        model_args.model_overrides = overrides
        notes.append(f"--mask_modes {' '.join(model_args.mask_modes or [])} (command line) replaces the config's "
                     f"mask mix mask_mode_weights={dropped}{where}: the given modes are drawn uniformly "
                     "(--model_overrides '{\"mask_mode_weights\": {...}}' weighs them)")
    if "model_overrides" in given:
        for name in ("objectives", "mask_modes"):
            if name in overrides and name not in given and getattr(model_args, name) is not None:
                setattr(model_args, name, None)  # the command line's model_overrides value is used
    elif "preset" in given and overrides:
        from nfm.models.configuration_nfm import PRESETS

        if model_args.preset not in PRESETS:
            raise UsageError("--preset", f"unknown preset {model_args.preset!r}; known: {sorted(PRESETS)}")
        fields_ = set(PRESETS[model_args.preset]) or {k for v in PRESETS.values() for k in v}
        dropped = {k: v for k, v in overrides.items() if k in fields_}
        if dropped:
            kept = {k: v for k, v in overrides.items() if k not in fields_}
            model_args.model_overrides = kept
            notes.append(f"--preset {model_args.preset} (command line) replaces the config's model_overrides "
                         + ", ".join(f"{k}={v}" for k, v in dropped.items()) + where + "; kept from it: "
                         + (", ".join(f"{k}={v}" for k, v in kept.items()) or "nothing")
                         + " (--model_overrides on the command line sets fields on top of the preset)")
    return notes


# --------------------------------------------------------------------------- the light parser
def light_parser(dataclass_types: Sequence = DEFAULT_TYPES, description: str | None = None,
                 prog: str | None = None) -> ArgumentParser:
    """An ``argparse`` parser with the options ``HfArgumentParser(dataclass_types)`` has (same names, ``nargs``,
    bool ``--no_*`` complements, numeric types), built without importing transformers or torch.

    Values it cannot check cheaply (enum choices of TrainingArguments, dict-typed fields) are taken as
    strings; :func:`parse_args` then parses the same command line with ``HfArgumentParser``.  One argument group
    per dataclass; ``--help`` lists every option with its help text and default.
    """
    parser = ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter,
                            usage="%(prog)s [--config YAML] [--OPTION VALUE ...]")
    for dt in _resolve(dataclass_types, real=False):
        if _is_training_arguments(dt):
            group = parser.add_argument_group(
                "transformers.TrainingArguments", "the Trainer's arguments (Accelerate: devices, precision, "
                "checkpoints, logging); see the transformers documentation")
            for f in training_argument_fields():
                _add_option(group, f)
            continue
        doc = (dt.__doc__ or "").strip().splitlines()
        group = parser.add_argument_group(dt.__name__, doc[0] if doc and not doc[0].startswith(dt.__name__ + "(")
                                          else None)
        hints = typing.get_type_hints(dt)
        for f in fields(dt):
            if not f.init:
                continue
            spec = {"name": f.name, "kinds": _kinds_of_type(hints[f.name]), "metadata": dict(f.metadata)}
            if f.default is not dataclasses.MISSING:
                spec["default"] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                spec["default"] = f.default_factory()
            _add_option(group, spec)
    return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The recipe's docstring as written, and each option's effective default (config values included)."""


def _str2bool(v) -> bool:
    """``HfArgumentParser``'s rule for bool values."""
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"truthy value expected: got {v!r} (use true or false)")


_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def _kinds_of_type(tp) -> list:
    """A type hint as a list of member kinds: ``"none"``, ``"bool"``, ``"int"``, ``"float"``, ``"str"``,
    ``("list", kind)``, ``("literal", values)`` or ``"other"`` (one member unless it is a union)."""
    import types as _types

    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(_types, "UnionType") and origin is _types.UnionType):
        return [_kinds_of_type(a)[0] for a in typing.get_args(tp)]
    if tp is type(None):
        return ["none"]
    if origin is typing.Literal:
        return [("literal", typing.get_args(tp))]
    if origin is list or tp is list:
        args = typing.get_args(tp)
        return [("list", _kinds_of_type(args[0])[0] if args else "str")]
    for name, t in _SCALARS.items():
        if tp is t:
            return [name]
    return ["other"]


def _kinds_of_ast(node, enums: dict | None = None) -> list:
    """The same as :func:`_kinds_of_type` for an annotation read from source (``ast``); ``enums``: enum class
    name -> member values (an enum becomes a ``literal`` of its values, as ``HfArgumentParser`` makes choices)."""
    enums = enums or {}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _kinds_of_ast(node.left, enums) + _kinds_of_ast(node.right, enums)
    if isinstance(node, ast.Constant) and node.value is None:
        return ["none"]
    if isinstance(node, ast.Name):
        if node.id in enums:
            return [("literal", tuple(enums[node.id]))]
        return [node.id if node.id in _SCALARS else ("none" if node.id == "None" else "other")]
    if isinstance(node, ast.Subscript):
        base = ast.unparse(node.value)
        inner = node.slice
        if base in ("Optional", "typing.Optional"):
            return _kinds_of_ast(inner, enums) + ["none"]
        if base in ("Union", "typing.Union"):
            elts = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            return [k for e in elts for k in _kinds_of_ast(e, enums)]
        if base in ("list", "List", "typing.List"):
            return [("list", _kinds_of_ast(inner, enums)[0])]
        if base in ("Literal", "typing.Literal"):
            elts = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            try:
                return [("literal", tuple(ast.literal_eval(e) for e in elts))]
            except ValueError:
                return ["other"]
    return ["other"]


def _add_option(group, spec: dict) -> None:
    """Add one field as ``HfArgumentParser._parse_dataclass_field`` does (same option names, nargs, bool
    handling and ``--no_*`` complement); ``spec``: name, kinds, metadata, default (absent = required)."""
    name, kinds = spec["name"], list(spec["kinds"])
    kwargs = dict(spec.get("metadata") or {})
    aliases = kwargs.pop("aliases", [])
    aliases = [aliases] if isinstance(aliases, str) else list(aliases)
    has_default = "default" in spec
    default = spec.get("default")
    if len(kinds) > 1:  # a union: HfArgumentParser's rules
        if "none" not in kinds:
            kinds = [kinds[0] if kinds[1] == "str" else kinds[1]]
        elif "bool" not in kinds:
            kinds = [kinds[0] if kinds[1] == "none" else kinds[1]]
    kind = kinds[0] if len(kinds) == 1 else ("bool" if "bool" in kinds else kinds[0])
    options = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    if "help" in kwargs:
        kwargs["help"] = str(kwargs["help"]).replace("%", "%%")
    complement = None
    if isinstance(kind, tuple) and kind[0] == "literal":
        kwargs["choices"] = list(kind[1])
        kwargs.setdefault("default", default) if has_default else kwargs.setdefault("required", True)
    elif kind == "bool":
        complement = dict(kwargs)
        kwargs["type"] = _str2bool
        if has_default and default is not None or len(kinds) == 1:
            kwargs["default"] = default if has_default else False
            kwargs["nargs"] = "?"
            kwargs["const"] = True
    elif isinstance(kind, tuple) and kind[0] == "list":
        kwargs["type"] = _SCALARS.get(kind[1], str) if kind[1] != "bool" else _str2bool
        kwargs.setdefault("nargs", "+")
        if has_default:
            kwargs["default"] = default
        else:
            kwargs["required"] = True
    else:
        if "nargs" not in kwargs:
            kwargs["type"] = _SCALARS.get(kind, str) if isinstance(kind, str) and kind != "bool" else str
        if has_default:
            kwargs["default"] = default
        else:
            kwargs["required"] = True
    group.add_argument(*options, *aliases, dest=name, **kwargs)
    if complement is not None and has_default and default is True:
        complement["default"] = False
        complement.pop("help", None)
        group.add_argument(f"--no_{name}", f"--no-{name.replace('_', '-')}", action="store_false", dest=name,
                           help=f"set {name} to false", **{k: v for k, v in complement.items()
                                                          if k not in ("nargs", "const", "type", "default")})


_TA_FIELDS: list[dict] | None = None


def training_argument_fields() -> list[dict]:
    """The fields of ``transformers.TrainingArguments`` (name, kinds, metadata, default), read from the source
    file of the installed transformers with :mod:`ast` (about 0.1 s, nothing imported).

    A field whose default is not a literal gets no default here (the real parse fills it in).  If the source
    cannot be read, the fields come from the imported class (slow, but the same options).
    """
    global _TA_FIELDS
    if _TA_FIELDS is not None:
        return _TA_FIELDS
    try:
        spec = importlib.util.find_spec("transformers")
        root = Path(spec.origin).parent
        tree = ast.parse((root / "training_args.py").read_text())
        enums = {**_enums_of(ast.parse((root / "trainer_utils.py").read_text())), **_enums_of(tree)}
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainingArguments")
        out = []
        for st in cls.body:
            if not (isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)):
                continue
            f = {"name": st.target.id, "kinds": _kinds_of_ast(st.annotation, enums), "metadata": {}}
            v = st.value
            if isinstance(v, ast.Call) and getattr(v.func, "id", None) == "field":
                kw = {k.arg: k.value for k in v.keywords}
                if "init" in kw and isinstance(kw["init"], ast.Constant) and kw["init"].value is False:
                    continue
                if isinstance(kw.get("metadata"), ast.Dict):
                    for k, val in zip(kw["metadata"].keys, kw["metadata"].values):
                        try:  # a non-literal entry (e.g. choices=some_dict.keys()) is left to the real parse
                            f["metadata"][ast.literal_eval(k)] = ast.literal_eval(val)
                        except ValueError:
                            pass
                if "default" in kw:
                    try:
                        f["default"] = ast.literal_eval(kw["default"])
                    except ValueError:
                        f["default"] = None
                elif "default_factory" in kw:
                    f["default"] = None
            elif v is not None:
                try:
                    f["default"] = ast.literal_eval(v)
                except ValueError:
                    f["default"] = None
            out.append(f)
        if not out:
            raise ValueError("no field found")
    except Exception:  # noqa: BLE001 - an unexpected transformers layout: take the fields from the class
        out = _fields_from_class()
    _TA_FIELDS = out
    return out


def _enums_of(tree) -> dict[str, list]:
    """``{class name: [member values]}`` of the enum classes (string members) of a parsed module."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any("Enum" in ast.unparse(b) for b in node.bases):
            values = [st.value.value for st in node.body if isinstance(st, ast.Assign)
                      and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str)]
            if values:
                out[node.name] = values
    return out


def _fields_from_class() -> list[dict]:
    from transformers import TrainingArguments

    hints = typing.get_type_hints(TrainingArguments)
    out = []
    for f in fields(TrainingArguments):
        if not f.init:
            continue
        spec = {"name": f.name, "kinds": _kinds_of_type(hints[f.name]), "metadata": dict(f.metadata)}
        if f.default is not dataclasses.MISSING:
            spec["default"] = f.default if isinstance(f.default, (bool, int, float, str, type(None))) else None
        elif f.default_factory is not dataclasses.MISSING:
            spec["default"] = None
        out.append(spec)
    return out
