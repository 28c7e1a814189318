"""Raw recordings (or a synthetic world) -> an nfm Arrow dataset folder.

Examples:
    python recipes/prepare_data.py --source synthetic --output_dir outputs/data/synthetic
    python recipes/prepare_data.py --source ibl --one_cache_dir ~/ibl --output_dir outputs/data/ibl
    python recipes/prepare_data.py --source ibl --one_cache_dir ~/ibl --eids datasets/ibl_repeated_site/mtm_40_eids.txt --output_dir outputs/data/ibl
    python recipes/prepare_data.py --source nwb --input a.nwb b.nwb --align_event start_time --window 0 2 --output_dir outputs/data/nwb
    python recipes/prepare_data.py --source trials --input ../shared/data/steinmetz_2019/session*.npz --heldout_subjects Hench --output_dir outputs/data/steinmetz

``--source synthetic`` builds the world of ``make demo`` by default (``recipes/configs/synthetic.yaml``:
5 animals x 2 sessions x 120 trials, seed 0, animal synth-mouse-04 held out for the LoRA step); the summary
prints the held-out animals' session ids.  ``--source ibl --one_cache_dir DIR`` without ``--eid``/``--eids``
takes every session of that local cache.  ``--source trials`` reads trial-aligned binned counts (one .npz per
session: the nfm layout ``counts``/``bin_starts``/``unit_regions``, or the Steinmetz et al. 2019 files, told apart
by their keys; see datasets/README.md) at the files' own bins and window; --bin_size may be a whole multiple of
the file's bins.  The folder is written atomically (a killed run leaves no
half-written folder); an existing one is replaced only with ``--overwrite``.  ``--debug`` shows tracebacks
of input errors.
"""
from __future__ import annotations

import argparse
import sys

#: the synthetic world of the demo (recipes/configs/synthetic.yaml): the defaults of --source synthetic
_DEMO_KEYS = {"synthetic_animals": "animals", "synthetic_sessions_per_animal": "sessions_per_animal",
              "synthetic_trials": "trials", "synthetic_seed": "seed"}


def demo_world() -> dict:
    """``{"animals", "sessions_per_animal", "trials", "seed", "heldout_subjects"}`` of the default pretraining
    config (one source of truth for ``make demo`` and ``prepare_data.py --source synthetic``)."""
    import yaml

    from nfm import resources

    cfg = yaml.safe_load(resources.find_file("synthetic", "configs").read_text())
    out = {v: cfg[k] for k, v in _DEMO_KEYS.items()}
    out["heldout_subjects"] = list(cfg.get("synthetic_heldout_subjects") or [])
    return out


def build_parser() -> argparse.ArgumentParser:
    from nfm.cli import ArgumentParser
    from nfm.data.prepare import SOURCES, WORLDS  # light: the data libraries load when prepare() runs
    p = ArgumentParser(prog="prepare_data.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--one_cache_dir", help="local ALF tree / ONE cache (IBL sources); without --eid/--eids every "
                                           "session of it; omit for the public remote ONE")
    p.add_argument("--eids", help="file with one experiment id per line (IBL sources)")
    p.add_argument("--eid", nargs="+", default=[], help="experiment ids (IBL sources), space- or comma-separated")
    p.add_argument("--input", nargs="+", default=[], help="NWB files, suite2p folders, binned-count .npz files (--source binned) or "
                                                         "trial-binned count .npz files (--source trials)")
    p.add_argument("--world", default="ibl_like", choices=WORLDS, help="synthetic world")
    g = p.add_argument_group("synthetic ibl_like / calcium world (defaults: the demo's, recipes/configs/synthetic.yaml)")
    g.add_argument("--animals", type=int, default=None, help="animals (default 5)")
    g.add_argument("--sessions_per_animal", type=int, default=None, help="sessions per animal (default 2; ibl_like)")
    g.add_argument("--trials", type=int, default=None, help="trials per session (default 120)")
    g.add_argument("--seed", type=int, default=None, help="world seed (default 0)")
    p.add_argument("--heldout_subjects", nargs="+", default=None,
                   help="animals kept out of pretraining (recipes/pretrain.py leaves them out, recipes/finetune_lora.py "
                        "adapts to them); default: synth-mouse-04 for the synthetic ibl_like world, none otherwise; "
                        "'none' to keep none")
    p.add_argument("--bin_size", type=float, help="seconds (default per source; 2-photon: the imaging frame period "
                   "x --frames_per_bin, never finer unless --calcium_interpolate; binned/trials: the file's bins, "
                   "trials: only whole multiples of them)")
    p.add_argument("--frames_per_bin", type=int, default=1, help="2-photon: frames averaged per bin (default 1)")
    p.add_argument("--calcium_interpolate", action="store_true",
                   help="2-photon: allow bins finer than the frame period by interpolating between frames "
                        "(temporally masked bins then leak their neighbours' frames)")
    p.add_argument("--align_event", help="trials column to align on (default per source)")
    p.add_argument("--window", type=float, nargs=2, metavar=("START", "END"), help="seconds around the align event")
    p.add_argument("--split", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--split_seed", type=int, default=42)
    p.add_argument("--split_mode", choices=("random", "contiguous"),
                   help="default: random for trials, contiguous for back-to-back windows")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return p


def main(argv=None) -> int:
    from pathlib import Path

    from nfm.cli import UsageError, split_ids

    args = build_parser().parse_args(argv)
    out = Path(args.output_dir)
    if out.exists() and not args.overwrite:
        raise UsageError("--output_dir", f"{out} exists; pass --overwrite to replace it")
    for path in args.input:
        if not Path(path).exists():
            raise UsageError("--input", f"no such file or folder: {path}")
    if args.one_cache_dir and not Path(args.one_cache_dir).expanduser().is_dir():
        raise UsageError("--one_cache_dir", f"no folder at {args.one_cache_dir}")
    if args.eids and not Path(args.eids).is_file():
        from nfm import resources

        if resources.find_file(args.eids, "manifests") is None:
            raise UsageError("--eids", f"no such file: {args.eids}")
    synthetic = args.source == "synthetic"
    given = {k: getattr(args, k) for k in ("animals", "sessions_per_animal", "trials")}
    if not synthetic and any(v is not None for v in [*given.values(), args.seed]):
        raise UsageError("--animals/--sessions_per_animal/--trials/--seed", "only for --source synthetic")
    heldout = split_ids(args.heldout_subjects)
    source_options, seed = {}, args.seed if args.seed is not None else 0
    if synthetic and args.world in ("ibl_like", "calcium"):
        demo = demo_world()
        seed = args.seed if args.seed is not None else demo["seed"]
        if args.world == "ibl_like":
            source_options = {"n_animals": given["animals"] or demo["animals"],
                              "sessions_per_animal": given["sessions_per_animal"] or demo["sessions_per_animal"],
                              "n_trials": given["trials"] or demo["trials"]}
            if args.heldout_subjects is None:  # the demo's held-out animal, if the world has it
                n = source_options["n_animals"]
                heldout = [s for s in demo["heldout_subjects"] if s in {f"synth-mouse-{a:02d}" for a in range(n)}]
        else:
            source_options = {k: v for k, v in (("n_animals", given["animals"]), ("n_trials", given["trials"]))
                              if v is not None}
            if given["sessions_per_animal"] is not None:
                raise UsageError("--sessions_per_animal", "the calcium world has one session per animal")
    if heldout == ["none"]:
        heldout = []

    from nfm.data.prepare import format_summary, prepare, read_eids

    eids = split_ids(args.eid)
    if args.eids:
        from nfm import resources

        eids += read_eids(resources.find_file(args.eids, "manifests") or args.eids)
    summary = prepare(
        args.source, args.output_dir, eids=eids, inputs=args.input, one_cache_dir=args.one_cache_dir,
        world=args.world, seed=seed, align_event=args.align_event,
        window=tuple(args.window) if args.window else None, bin_size=args.bin_size,
        split=tuple(args.split), split_seed=args.split_seed, split_mode=args.split_mode, overwrite=args.overwrite,
        frames_per_bin=args.frames_per_bin, calcium_interpolate=args.calcium_interpolate,
        source_options=source_options or None, heldout_subjects=heldout,
    )
    print(format_summary(summary, args.output_dir))
    return 0


if __name__ == "__main__":
    from nfm.cli import run

    sys.exit(run(main))
