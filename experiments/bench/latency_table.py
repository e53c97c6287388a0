"""How far a latency lookup table's sum is from the measured latency of whole networks (times in ms); prints JSON.

For each ``--batch``, measures the space's table (``dcsnas bench latency-table``: every part and option alone,
median of ``--repeats`` after ``--warmup``), or reads ``--table``, then times ``--archs`` random architectures of
the space built standalone (the derived Re-ID model, and its backbone alone) with the same timer, and reports
per architecture the table's sum, the measured ms and the relative error (table − measured) / measured
(:func:`dcsnas.bench.latency.check_table`; medians over ``--rounds`` interleaved rounds). One thread by default;
the 1-minute load average before and after the run tells whether other processes shared the cores.

    python experiments/bench/latency_table.py --space experiments/demo/space_mbv2_64x32.yaml --input-size 64 32 \\
        --batch 1 32 --threads 1 --archs 5
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from dcsnas.bench.latency import check_table
from dcsnas.engine.device import resolve_device
from dcsnas.nas.cost import measure_costs
from dcsnas.nas.latency import match_space, measure_table, read_table
from dcsnas.nas.space import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="experiments/demo/space_mbv2_64x32.yaml")
    parser.add_argument("--input-size", type=int, nargs=2, default=[64, 32], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="one table and check per batch size")
    parser.add_argument("--table", help="a table file (dcsnas bench latency-table) instead of measuring one; its "
                                        "batch is used")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--archs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the check, the median kept")
    args = parser.parse_args()
    torch.manual_seed(0)
    space, size, device = load_space(args.space), tuple(args.input_size), resolve_device(args.device)
    costs = measure_costs(space, size)
    header = {"space": args.space, "input_size": list(size), "threads": args.threads, "device": str(device),
              "load_average_before": os.getloadavg()[0]}
    print(json.dumps(header), flush=True)
    for batch in [None] if args.table else args.batch:
        start = time.perf_counter()
        if args.table:
            table, latency = read_table(args.table, space, size)
        else:
            table = measure_table(space, size, batch, device, args.threads, args.warmup, args.repeats)
            latency = match_space(table, space, "measured table")
        table_s = time.perf_counter() - start
        result = check_table(space, costs.with_latency(latency), table, args.archs, args.seed, device, args.threads,
                             args.warmup, args.repeats, rounds=args.rounds)
        print(json.dumps({"batch": table["batch"], "entries": len(table["entries"]), "table_s": round(table_s, 1),
                          **result, "load_average_after": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
