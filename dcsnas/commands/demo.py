"""``dcsnas demo``: the whole pipeline on the synthetic data set in minutes on a CPU (see :mod:`dcsnas.demo`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="synthetic data → DCS-FB → DCS-DNAS search → retrain → compare, in minutes on a CPU",
        description="Generate the synthetic `small` data set (kept when it is already there), train DCS-FB "
                    "(MobileNetV2 + DCS-CSALR) and MobileNetV2 without attention, search a small space with "
                    "DCS-DNAS, retrain the derived network, and compare the three: about 12 minutes on 2 CPU "
                    "cores. Started again, it skips the finished steps and continues a stopped one.")
    parser.add_argument("--out", metavar="DIR",
                        help="one run directory per step, and compare/ (default: runs/demo; with --quick "
                             "runs/demo-quick)")
    parser.add_argument("--data", metavar="DIR",
                        help="the synthetic data set's folder (default: data/synthetic-small; with --quick "
                             "data/synthetic-tiny)")
    parser.add_argument("--quick", action="store_true",
                        help="the tiny preset and one epoch per step: under a minute (a smoke test; its "
                             "accuracies are noise)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from dcsnas.demo import Demo, demo_plan

    plan = demo_plan(args.quick)
    report = Demo(plan, args.out or plan.out, args.data or plan.data, show_progress=not args.no_progress).run()
    print()
    print(report["table"])
    print()
    for key, path in report["files"].items():
        print(f"{key}: {path}")
    seconds = report["seconds"]
    steps = ", ".join(f"{name} {s:.0f}s" for name, s in seconds.items() if name != "total")
    print(f"demo finished in {seconds['total']:.0f}s ({steps})")
    out = args.out or plan.out
    search = next(step.name for step in plan.steps if step.kind == "search")
    print("next:")
    print(f"  tensorboard --logdir {out}   (losses, learning rates, mAP per epoch; the search's choices)")
    print(f"  {out}/<step>/log.txt   (each run's console log: start-up summary, one line per epoch, results)")
    print(f"  {out}/{search}/alpha/   (the search's choice probabilities after each epoch, PNG)")
    if args.quick:
        print("  dcsnas demo   (the full demo, about 12 minutes: --quick trains one epoch per step on 174 images, "
              "so its accuracies are noise)")
