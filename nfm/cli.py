"""What every recipe shares on the command line: one-line user errors, list arguments and model arguments.

* :func:`run` calls a recipe's ``main(argv)``.  A user error (bad input: a wrong path, an unknown task or
  session, a corrupt file, a model that does not fit the dataset) prints **one line**
  ``error: <argument or file>: <what is wrong>; <what is available / did you mean>`` on stderr and exits with
  status 2, as argparse does for a malformed command line; anything else is a bug and keeps its traceback.
  ``--debug`` (or ``NFM_DEBUG=1``) shows the traceback of a user error too.  In a multi-process run
  (``accelerate launch``) only the main process prints the line; every process exits with 2.
* :func:`split_ids`: ids given space- or comma-separated (``--sessions a b``, ``--sessions a,b``).
* :func:`check_model_arg`: a ``--model`` value that looks like a path but is no model folder, or a Hub id
  that cannot be reached, is a one-line error before anything heavy is imported.
* :func:`did_you_mean` (numbers read without leading zeros: ``synth-4-00`` -> ``synth-04-00``) and
  :func:`check_session_ids`: the one "session ... is not in the dataset ...; did you mean" line of every recipe.
* :func:`check_output_dir`: a training recipe refuses an ``--output_dir`` that holds an earlier run's model or
  checkpoints unless ``--overwrite_output_dir`` or ``--resume_from_checkpoint`` (never a silent overwrite).
* :func:`recipe_command`: how a printed next-step command starts (``.venv/bin/python recipes/evaluate.py``).

Nothing here imports torch or transformers.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

from nfm.errors import UsageError, did_you_mean  # noqa: F401 (defined in the library; re-exported here)

DEBUG_ENV = "NFM_DEBUG"
EXIT_USAGE = 2
_PACKAGE_DIR = Path(__file__).resolve().parent


def split_ids(values: str | Sequence[str] | None) -> list[str]:
    """Ids given as ``"a,b"``, ``["a", "b"]`` or ``["a,b", "c"]`` -> ``["a", "b", "c"]`` (order kept, repeats
    and empty entries dropped).  None -> ``[]``."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for part in str(item).replace(",", " ").split():
            if part not in out:
                out.append(part)
    return out


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``error: <what>; did you mean ...``, exit 2)
    instead of the whole usage text, printed by the main process only."""

    def error(self, message: str):  # noqa: D401 - argparse API
        bad = re.match(r"unrecognized arguments: (\S+)", message)
        if bad:
            options = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            opt = bad.group(1).split("=", 1)[0]
            message += "; " + did_you_mean(opt, options, "options (see --help)")
        if is_main_process():
            print(f"error: {message}  (see {self.prog} --help)", file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)


# --------------------------------------------------------------------------- model arguments
def looks_like_path(value: str) -> bool:
    """True when ``value`` cannot be a Hugging Face Hub id (``namespace/name``): it is absolute, starts with
    ``.`` or ``~``, has no ``/`` or more than one, ends with ``/``, or its first part is a local folder
    (``outputs/run1`` while ``outputs/`` exists)."""
    v = str(value)
    if os.sep != "/" and os.sep in v:
        return True
    if v.startswith(("/", ".", "~")) or v.endswith("/") or v.count("/") != 1:
        return True
    return Path(v.split("/", 1)[0]).is_dir()


def check_model_arg(value: str, flag: str = "--model", *, check_hub: bool = True) -> None:
    """Raise :class:`UsageError` unless ``value`` is a saved model folder or a reachable Hub id.

    * an existing folder must hold ``config.json`` (a ``save_pretrained`` folder);
    * a value that looks like a path (:func:`looks_like_path`) and does not exist: ``no model folder at ...``;
    * a Hub id: its ``config.json`` is fetched (or read from the local Hugging Face cache); without network the
      error says so and mentions ``HF_HUB_OFFLINE``.
    """
    p = Path(value).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UsageError(flag, f"{value} is a folder without config.json, not a saved model "
                                   "(recipes/pretrain.py and save_pretrained write one)")
        check_model_config(p / "config.json")
        return
    if p.exists():
        raise UsageError(flag, f"{value} is a file; pass the model folder that holds config.json")
    if looks_like_path(value):
        parent = p.parent if str(p.parent) not in ("", ".") else Path(".")
        near = ""
        if parent.is_dir():
            folders = [c.name for c in parent.iterdir() if (c / "config.json").is_file()]
            if folders:
                near = f"; model folders in {parent}: {did_you_mean(p.name, folders)}"
        raise UsageError(flag, f"no model folder at {value}{near}")
    if check_hub:
        check_hub_id(value, flag)


def check_model_config(path: str | os.PathLike) -> None:
    """``config.json`` of a saved model must be a JSON object with ``model_type`` ``"nfm"``; otherwise a
    :class:`~nfm.data.schema.DataError` naming the file and the field."""
    import json

    from nfm.data.schema import DataError

    try:
        cfg = json.loads(Path(path).read_text())
    except ValueError as err:
        raise DataError(str(path), "<json>", f"not valid JSON: {err}") from None
    if not isinstance(cfg, dict):
        raise DataError(str(path), "<json>", f"must be a JSON object, got {type(cfg).__name__}")
    if cfg.get("model_type") != "nfm":
        raise DataError(str(path), "model_type", f"{cfg.get('model_type')!r} is not 'nfm': not an nfm model (or a "
                                                 "corrupt config.json)")


def check_dataset_arg(value: str, flag: str = "--dataset") -> None:
    """Raise :class:`UsageError` unless ``value`` is an nfm dataset folder (``nfm_meta.json`` inside)."""
    p = Path(value).expanduser()
    if not p.exists():
        raise UsageError(flag, f"no dataset folder at {value} (make one with recipes/prepare_data.py)")
    if not p.is_dir() or not (p / "nfm_meta.json").is_file():
        raise UsageError(flag, f"{value} is not an nfm dataset folder (no nfm_meta.json; make one with "
                               "recipes/prepare_data.py)")


def dataset_folder_of(meta) -> str:
    """The dataset folder of a :class:`~nfm.data.meta.DatasetMeta` (its ``path`` may name ``nfm_meta.json``)."""
    path = str(getattr(meta, "path", "") or "<memory>")
    return str(Path(path).parent) if path.endswith("nfm_meta.json") else path


def unknown_session_error(session_id: str, known: Iterable[str], where: str, flag: str = "--sessions") -> UsageError:
    """``--sessions: session 'synth-4-00' is not in the dataset <where>; did you mean 'synth-04-00'?`` -- the one
    message of every recipe for a session id the dataset does not have."""
    return UsageError(flag, f"session {session_id!r} is not in the dataset {where}; "
                            f"{did_you_mean(session_id, list(known), 'sessions')}")


def check_session_ids(ids: Iterable[str], known: Iterable[str], where: str, flag: str = "--sessions") -> None:
    """Raise :func:`unknown_session_error` for the first of ``ids`` that is not among ``known``."""
    known = list(known)
    have = set(known)
    for sid in ids:
        if sid not in have:
            raise unknown_session_error(sid, known, where, flag)


# --------------------------------------------------------------------------- output folders of training recipes
#: what a trained model leaves in its folder: the weights of a full model or of a PEFT adapter
MODEL_FILES = ("model.safetensors", "adapter_model.safetensors")


def previous_run(path: str | os.PathLike) -> list[str]:
    """What an earlier training run left in ``path``: its weights (:data:`MODEL_FILES`) and ``checkpoint-N``
    folders, in that order (checkpoints by step); ``[]`` for a missing or empty folder."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return []
    found = [name for name in MODEL_FILES if (p / name).is_file()]
    ckpts = [c.name for c in p.glob("checkpoint-*") if c.is_dir() and c.name[len("checkpoint-"):].isdigit()]
    return found + sorted(ckpts, key=lambda n: int(n.split("-", 1)[1]))


def resume_requested(value) -> bool:
    """True when ``--resume_from_checkpoint`` asks for a resume (a folder, ``true`` or ``last``)."""
    return value not in (None, False, "") and str(value).lower() not in ("false", "no", "none")


def check_output_dir(path: str | os.PathLike, *, overwrite: bool, resume=None, flag: str = "--output_dir") -> None:
    """A training recipe's ``--output_dir`` must not hold an earlier run (:func:`previous_run`) unless
    ``--overwrite_output_dir`` (replace it) or ``--resume_from_checkpoint`` (continue it) says so; giving both is
    an error too (overwriting removes the checkpoints a resume would continue from)."""
    if overwrite and resume_requested(resume):
        raise UsageError("--overwrite_output_dir", "give it or --resume_from_checkpoint, not both (overwriting "
                                                   "removes the checkpoints a resume continues from)")
    found = previous_run(path)
    if not found or overwrite or resume_requested(resume):
        return
    shown = ", ".join(found[:4]) + (f" ... ({len(found)} in all)" if len(found) > 4 else "")
    raise UsageError(flag, f"{path} already holds a trained model ({shown}); pass --overwrite_output_dir to "
                           f"replace it, --resume_from_checkpoint last to continue its training, or choose another "
                           f"{flag}")


def check_hub_id(repo_id: str, flag: str = "--model", filename: str = "config.json") -> None:
    """Fetch ``filename`` of a Hub repo (or find it in the local cache); one-line errors for the usual failures."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub import errors as hf_errors

    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        hf_hub_download(repo_id, filename)
    except hf_errors.RepositoryNotFoundError:
        raise UsageError(flag, f"{repo_id} is neither a local folder nor a Hub repository you can read (a private "
                               "repo needs `hf auth login`)") from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled, OSError) as err:
        # (LocalEntryNotFoundError, the "no network / not cached" case, is also an EntryNotFoundError)
        if offline:
            raise UsageError(flag, f"{repo_id} is not a local folder, and it is not in the local Hugging Face cache "
                                   "while HF_HUB_OFFLINE=1 is set (unset HF_HUB_OFFLINE to download it, or give the "
                                   "path of a local model folder)") from None
        raise UsageError(flag, f"{repo_id} is not a local folder, and huggingface.co could not be reached "
                               f"({type(err).__name__}); check the path, or set HF_HUB_OFFLINE=1 to use a copy in "
                               "the local Hugging Face cache") from None
    except hf_errors.EntryNotFoundError:
        raise UsageError(flag, f"Hub repository {repo_id} has no {filename}: not a saved model") from None


def _below_cwd(path: Path) -> str | None:
    try:
        return str(path.absolute().relative_to(Path.cwd().absolute()))
    except ValueError:
        return None


def python_command() -> str:
    """How to call this Python in a printed command: ``.venv/bin/python`` when it lies below the working
    directory (as the README writes it), else ``python``."""
    return _below_cwd(Path(sys.executable)) or "python"


def recipe_command(name: str, recipes_dir: str | os.PathLike) -> str:
    """A printed command line's start for the recipe ``name`` (e.g. ``evaluate.py``) in ``recipes_dir``:
    ``.venv/bin/python recipes/evaluate.py`` in the repository, the recipe's absolute path elsewhere."""
    recipe = Path(recipes_dir) / name
    return f"{python_command()} {_below_cwd(recipe) or recipe.absolute()}"


# --------------------------------------------------------------------------- running a recipe
def is_main_process() -> bool:
    """False on the non-main ranks of a multi-process launch (``RANK`` set by torchrun / accelerate)."""
    for var in ("RANK", "LOCAL_RANK"):
        v = os.environ.get(var)
        if v not in (None, "") and v.strip().lstrip("-").isdigit() and int(v) != 0:
            return False
    return True


def _raised_by_nfm(err: BaseException) -> bool:
    """True when the innermost frame of ``err``'s traceback is in nfm's own code or a recipe (a check of ours
    that refused the input), not in a library (where a ValueError may be a bug)."""
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    if last is None:
        return False
    path = Path(last).resolve()
    return _PACKAGE_DIR in path.parents or path.parent.name == "recipes"


def is_user_error(err: BaseException) -> bool:
    """Errors that describe bad input (printed as one line) rather than a bug (printed with its traceback)."""
    from nfm.data.schema import DataError

    if isinstance(err, (UsageError, DataError, FileNotFoundError, FileExistsError, NotADirectoryError,
                        IsADirectoryError, PermissionError)):
        return True
    name = type(err).__name__
    if name in ("TaskError", "ModelDatasetMismatch", "AdapterBaseMismatch", "NotApplicable"):
        return True
    if isinstance(err, (ValueError, KeyError, TypeError)) and _raised_by_nfm(err):
        return True
    module = type(err).__module__ or ""
    return module.startswith("huggingface_hub") or module.startswith("safetensors")


def error_line(err: BaseException) -> str:
    """The one-line message of a user error (``KeyError`` without its quotes, newlines folded)."""
    msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    msg = " ".join(str(msg).split())
    if not msg:
        msg = type(err).__name__
    return f"error: {msg}"


def debug_requested(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """``(debug, argv without our --debug)``.  A ``--debug`` followed by a value that is not an option is left
    alone (``transformers.TrainingArguments`` has a ``--debug OPTION`` of its own)."""
    argv = list(argv)
    debug = os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")
    out = []
    for i, a in enumerate(argv):
        if a == "--debug" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            debug = True
            continue
        out.append(a)
    return debug, out


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; a user error -> one line on stderr (main process only) and exit status 2."""
    debug, args = debug_requested(sys.argv[1:] if argv is None else argv)
    if debug:
        os.environ[DEBUG_ENV] = "1"
    try:
        return int(main(args) or 0)
    except KeyboardInterrupt:
        if is_main_process():
            print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs below
        if debug or not is_user_error(err):
            raise
        if is_main_process():
            print(error_line(err) + "  (--debug shows the traceback)", file=sys.stderr, flush=True)
        return EXIT_USAGE


__all__ = ["ArgumentParser", "UsageError", "did_you_mean", "split_ids", "looks_like_path", "check_model_arg", "check_model_config", "check_dataset_arg", "check_hub_id",
           "dataset_folder_of", "unknown_session_error", "check_session_ids", "MODEL_FILES", "previous_run",
           "resume_requested", "check_output_dir", "python_command", "recipe_command",
           "is_main_process", "is_user_error", "error_line", "debug_requested", "run", "EXIT_USAGE"]
