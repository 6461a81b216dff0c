"""`python -m repro.plots <run frame> -o results/figures [--tasks ...] [--figure1]`: every
Figure 3 panel a run frame holds (and Figure 1), as PNG and PDF. A figure of the same name
already in the output directory is refused unless `--overwrite`.

File names: `figure3a_prompt_len`, `figure3b_init`, `figure3c_objective`,
`figure3d_lm_adapt_steps` (the panels present), `figure3` (the grid) and `figure1`, each `.png`
and `.pdf`. A frame holding runs of several backbone families (its `family` column: `t5`,
`causal`) gives one figure per family, never one mixing them: each name gets the family as a
suffix, `figure3a_prompt_len_t5.png` beside `figure3a_prompt_len_causal.png`, `figure3_t5`,
`figure3_causal`, `figure1_t5`, `figure1_causal` (`repro.plots.family`). A frame of one family
keeps the names above; a causal figure's title says "decoder-only (causal) backbones".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from repro.cli import first_line
from repro.collect.frame import load_frame
from repro.files import refuse_existing
from repro.plots.ablations import figure3, figure3_names, present_panels
from repro.plots.drawing import FIGURE_FORMATS
from repro.plots.reference import load_reference
from repro.plots.scale import figure1_by_family, figure1_names

# The columns of a run frame (`repro.collect`) that the figures read.
RUN_COLUMNS = ("size", "params", "seed", "task", "status", "score")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's options (`python -m repro.plots --help`); every option says what it does."""
    parser = argparse.ArgumentParser(
        prog="python -m repro.plots",
        description=main.__doc__,
        epilog="A frame of several backbone families (column family: t5, causal) gives one file "
        "per family and figure, named <figure>_<family>: figure3a_prompt_len_t5.png, "
        "figure3a_prompt_len_causal.png, figure3_causal.pdf, figure1_causal.png, ...; a frame "
        "of one family keeps the names figure3a_prompt_len, figure3, figure1.",
    )
    parser.add_argument("frame", help="a run frame written by python -m repro.collect")
    parser.add_argument(
        "-o",
        "--out-dir",
        default="results/figures",
        help="where every figure goes, as PNG and PDF (default %(default)s)",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        help="tasks averaged per point (default: SuperGLUE's 8; a toy or smoke frame names its "
        "own, e.g. --tasks toy_review toy_fact)",
    )
    parser.add_argument(
        "--figure1",
        action="store_true",
        help="also draw Figure 1 (a line per method vs size: prompt tuning at the paper's "
        "default setting, model tuning, multi-task model tuning)",
    )
    parser.add_argument(
        "--reference",
        default="results/paper/reference.csv",
        help="the paper's reported points drawn on Figure 1 (default %(default)s; see "
        "results/paper/README.md); drawn only beside T5.1.1 sizes, never beside toy models",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace figures of the same names already in the output directory",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m repro.plots results/<name>.csv -o results/figures [--tasks t1 t2] [--figure1]`."""
    args = build_parser().parse_args(argv)
    try:
        runs = load_frame(args.frame)
    except (OSError, ValueError) as err:
        print(f"error: cannot read the run frame {args.frame}: {first_line(err)}", file=sys.stderr)
        return 2
    missing = [c for c in RUN_COLUMNS if c not in runs.columns]
    if missing:
        print(
            f"error: {args.frame} lacks column(s) {missing}; the figures read {list(RUN_COLUMNS)}: "
            "write the frame with python -m repro.collect",
            file=sys.stderr,
        )
        return 2
    try:
        # A frame of one sweep over model size holds Figure 1 only: no Figure 3 panel to draw.
        drawn_alone = args.figure1 and not present_panels(runs)
        names = [
            *([] if drawn_alone else figure3_names(runs)),
            *(figure1_names(runs) if args.figure1 else []),
        ]
        out = Path(args.out_dir)
        refuse_existing([out / f"{n}.{x}" for n in names for x in FIGURE_FORMATS], args.overwrite)
        written = {} if drawn_alone else figure3(runs, args.out_dir, tasks=args.tasks)
        if args.figure1:
            reference = load_reference(args.reference)
            written |= figure1_by_family(runs, args.out_dir, reference, tasks=args.tasks)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, paths in written.items():
        print(f"{name}: {', '.join(str(p) for p in paths)}")
    return 0
