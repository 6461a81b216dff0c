"""``python -m repro.toyworld build|build-causal|report|efficiency|pilot`` (see docs/toy_world.md)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch


def main(argv: Sequence[str] | None = None) -> int:
    from repro.toyworld.build import DEFAULT_OUT, SIZES, BuildConfig, build

    parser = argparse.ArgumentParser(prog="python -m repro.toyworld", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="corpus → tokenizer → pre-training → LM adaptation → ckpts")
    b.add_argument("-o", "--out-dir", default=str(DEFAULT_OUT))
    b.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    b.add_argument("--pretrain-steps", type=int, default=BuildConfig.pretrain_steps)
    b.add_argument(
        "--lm-adapt-steps",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=BuildConfig.lm_adapt_steps,
        help="comma-separated, increasing (default 50,250,500)",
    )
    b.add_argument("--n-docs", type=int, default=BuildConfig.n_docs)
    b.add_argument("--n-lm-docs", type=int, default=BuildConfig.n_lm_docs)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--probe-items",
        type=int,
        default=BuildConfig.probe_items,
        help="zero-shot probe items per skill (default 200)",
    )
    b.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    r = sub.add_parser("report", help="panels, effects and invalid outputs of the toy sweeps")
    r.add_argument("frame", nargs="?", default="results/toy/runs.csv")
    r.add_argument("-o", "--out-dir", default="results/toy")
    e = sub.add_parser(
        "efficiency", help="polarity learned from span corruption vs from labelled examples"
    )
    e.add_argument("--tokenizer", default=str(DEFAULT_OUT / "toy_small" / "span_corruption"))
    e.add_argument("--size", default="toy_small", choices=list(SIZES))
    e.add_argument("--steps", type=int, default=600)
    e.add_argument("--every", type=int, default=100)
    from repro.toyworld.pilot import DEFAULT_TOKENIZER, PilotConfig

    p = sub.add_parser(
        "pilot",
        help="pre-train a candidate ladder briefly and probe it (docs/toy_world.md; ships nothing)",
    )
    p.add_argument("-o", "--out-dir", default="results/toy_pilot")
    p.add_argument(
        "--d-models", type=int, nargs="+", default=list(PilotConfig.d_models), help="the ladder"
    )
    p.add_argument("--steps", type=int, default=PilotConfig.steps)
    p.add_argument("--every", type=int, default=PilotConfig.every, help="probe every N steps")
    p.add_argument("--probe-items", type=int, default=PilotConfig.probe_items)
    p.add_argument(
        "--review-share",
        type=float,
        default=PilotConfig.review_share,
        help="share of review parts in the corpus (default the world's, 0.4)",
    )
    p.add_argument(
        "--qa-share",
        type=float,
        default=PilotConfig.qa_share,
        help="share of reading (question-answer) parts (default 0.4); stories take the rest",
    )
    p.add_argument("--n-docs", type=int, default=PilotConfig.n_docs)
    p.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER))
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    from repro.toyworld import causal_build

    causal_build.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "build-causal":
        command = "python -m repro.toyworld " + shlex.join(
            argv if argv is not None else sys.argv[1:]
        )
        return causal_build.main(args, command)
    if args.command in ("pilot", "build"):
        try:
            cfg = _settings(args)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.command == "pilot":
        from repro.toyworld.pilot import run as pilot

        torch.set_num_threads(args.threads)
        pilot(cfg, args.out_dir, args.tokenizer)
        print((Path(args.out_dir) / "pilot.md").read_text())
        return 0
    if args.command == "efficiency":
        from repro.toyworld.efficiency import run

        torch.set_num_threads(1)
        try:
            run(args.tokenizer, args.size, args.steps, args.every)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.command == "report":
        from repro.toyworld.report import report

        torch.set_num_threads(1)
        for e in report(args.frame, args.out_dir):
            print(f"{e['holds']}: {e['effect']} [{e['size']}] {e['measured']}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    command = "python -m repro.toyworld " + shlex.join(argv if argv is not None else sys.argv[1:])
    manifest = build(args.out_dir, cfg, command=command)
    for size, m in manifest["models"].items():
        print(
            f"{size}: {m['params']:,} parameters, span-corruption loss {m['pretrain']['final_loss']:.3f}"
        )
    return 0


def _settings(args: argparse.Namespace):
    """The pilot's or the build's settings from the command line; their checks raise a
    ValueError that names the bad value (one ``error:`` line, exit 2, before any work)."""
    from repro.toyworld.build import BuildConfig
    from repro.toyworld.pilot import PilotConfig

    if args.command == "pilot":
        return PilotConfig(
            d_models=tuple(args.d_models),
            steps=args.steps,
            every=args.every,
            probe_items=args.probe_items,
            review_share=args.review_share,
            qa_share=args.qa_share,
            n_docs=args.n_docs,
        )
    return BuildConfig(
        sizes=tuple(args.sizes),
        seed=args.seed,
        n_docs=args.n_docs,
        n_lm_docs=args.n_lm_docs,
        pretrain_steps=args.pretrain_steps,
        lm_adapt_steps=args.lm_adapt_steps,
        probe_items=args.probe_items,
    )


if __name__ == "__main__":
    sys.exit(main())
