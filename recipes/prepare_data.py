"""Raw recordings (or a synthetic world) -> an nfm Arrow dataset folder.

Examples:
    python recipes/prepare_data.py --source synthetic --output_dir data/synthetic
    python recipes/prepare_data.py --source ibl --one_cache_dir ~/ibl --eids datasets/ibl_repeated_site/mtm_40_eids.txt --output_dir data/ibl
    python recipes/prepare_data.py --source nwb --input a.nwb b.nwb --align_event start_time --window 0 2 --output_dir data/nwb
"""
from __future__ import annotations

import argparse
import sys

from nfm.data.prepare import SOURCES, WORLDS, format_summary, prepare, read_eids


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--one_cache_dir", help="local ALF tree / ONE cache (IBL sources); omit for the public remote ONE")
    p.add_argument("--eids", help="file with one experiment id per line (IBL sources)")
    p.add_argument("--eid", nargs="+", default=[], help="experiment ids (IBL sources)")
    p.add_argument("--input", nargs="+", default=[], help="NWB files, suite2p folders or binned-count .npz files")
    p.add_argument("--world", default="ibl_like", choices=WORLDS, help="synthetic world")
    p.add_argument("--seed", type=int, default=0, help="synthetic world seed")
    p.add_argument("--bin_size", type=float, help="seconds (default per source; 2-photon: the imaging frame period "
                   "x --frames_per_bin, never finer unless --calcium_interpolate)")
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
    args = p.parse_args(argv)
    eids = list(args.eid) + (read_eids(args.eids) if args.eids else [])
    summary = prepare(
        args.source, args.output_dir, eids=eids, inputs=args.input, one_cache_dir=args.one_cache_dir,
        world=args.world, seed=args.seed, align_event=args.align_event,
        window=tuple(args.window) if args.window else None, bin_size=args.bin_size,
        split=tuple(args.split), split_seed=args.split_seed, split_mode=args.split_mode, overwrite=args.overwrite,
        frames_per_bin=args.frames_per_bin, calcium_interpolate=args.calcium_interpolate,
    )
    print(format_summary(summary, args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
