"""Time `segkit demo` end to end and report the held-out whole-tumour Dice (the demo's target).

Targets: the MONAI demo under 6 minutes, the UMamba2 demo (``--backend umamba2``) at most 10 minutes, on
2 CPU cores, each with a held-out WT Dice of at least 0.7.

    uv run python benchmarks/bench_demo.py --repeats 3 --out /tmp/bench_demo
    uv run python benchmarks/bench_demo.py --backend umamba2 --repeats 3 --out /tmp/bench_demo_umamba2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_demo"))
    parser.add_argument("--fast", action="store_true", help="Benchmark `segkit demo --fast` instead.")
    parser.add_argument("--backend", default="monai", choices=("monai", "umamba2"), help="The demo's backend.")
    args = parser.parse_args()

    from segkit.config import load_config
    from segkit.demo import run_demo, train_step_name

    runs = []
    for i in range(args.repeats):
        cfg = load_config(
            flags={
                "demo.output_dir": args.out / f"run{i}",
                "demo.overwrite": True,
                "demo.fast": args.fast,
                "demo.device": "cpu",
                "demo.backend": args.backend,
            }
        )
        started = time.perf_counter()
        result = run_demo(cfg.demo)
        wall = time.perf_counter() - started
        runs.append(
            {
                "wall_s": round(wall, 1),
                "train_s": round(result.seconds[train_step_name(args.backend)], 1),
                "mean_wt_dice": round(result.mean_wt_dice, 4),
                "wt_dice": {k: round(v, 4) for k, v in result.wt_dice.items()},
                "tc_lesion_dice": round(result.regions["TC"]["lesion_dice"], 4),
                "et_lesion_dice": round(result.regions["ET"]["lesion_dice"], 4),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the end",
        "backend": args.backend,
        "repeats": args.repeats,
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "median_train_s": statistics.median(r["train_s"] for r in runs),
        "median_mean_wt_dice": statistics.median(r["mean_wt_dice"] for r in runs),
        "min_mean_wt_dice": min(r["mean_wt_dice"] for r in runs),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
