"""Benchmark segkit's start-up: ``--help``, ``eval --help`` and a one-case ``segkit eval``, beside ``import typer``.

Every row is a fresh process, timed wall-clock from start to exit; a row's figure is the median of N runs
(default 7) after one discarded warm-up run; the CPU time (user + system) is printed beside it,
because on a shared machine the wall clock also measures the neighbours. The warm-up also writes the bytecode caches
(``PYTHONDONTWRITEBYTECODE`` is removed from the children's environment), as an installed package has
them; without them every run would compile segkit, matplotlib and scipy from source and measure that.

Rows (issue 9 item 7's targets in brackets):

1. ``python -c "import typer"``: the floor every typer CLI pays;
2. ``python -c "import segkit.cli"``;
3. ``segkit --help`` [<= 0.3 s];
4. ``segkit eval --help`` [<= 0.3 s];
5. ``segkit eval GT PRED -o OUT`` of one synthetic 96x112x80 case with every report segkit writes
   (lesion-wise JSON and CSV, nnU-Net-layout voxel metrics, the manifest, the PNG figure) [<= 1.5 s].
   nnU-Net's own evaluator (the cross-check) is a separate program that starts a process pool (about 7 s
   for one case), so it is skipped here; ``--nnunet-check`` adds a row with it.

The reference is a `segkit.data.synth` label map; the prediction a copy shifted by one voxel, with one
tissue eroded.

Usage::

    uv run python benchmarks/bench_startup.py [--runs 7] [--nnunet-check] [--markdown table.md] [--json r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (96, 112, 80)


@dataclass
class Row:
    """One measured command."""

    name: str
    argv: list[str]
    target: float | None = None
    out_dir: Path | None = None  # removed before every run, so each eval writes fresh reports


def _segkit() -> list[str]:
    script = Path(sys.executable).with_name("segkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "segkit"]


def _write_case(folder: Path) -> tuple[Path, Path]:
    from scipy import ndimage

    from segkit.data.synth import generate_case
    from segkit.io import write_volume

    case = generate_case(0, shape=SHAPE, seed=0)
    pred = np.roll(case.labels, 1, axis=0)
    core = pred == 1
    pred[core & ~ndimage.binary_erosion(core)] = 2
    gt_path = write_volume(folder / "gt" / f"{case.case_id}.nii.gz", case.labels, case.affine)
    write_volume(folder / "pred" / f"{case.case_id}.nii.gz", pred.astype(np.uint8), case.affine)
    return gt_path.parent, folder / "pred"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(row: Row, env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, the process and its children) of one run."""
    if row.out_dir is not None:
        shutil.rmtree(row.out_dir, ignore_errors=True)
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(row.argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        msg = f"{' '.join(row.argv)} exited {done.returncode}:\n{done.stderr[-2000:]}"
        raise SystemExit(msg)
    return seconds, _children_cpu() - cpu


def measure(rows: Sequence[Row], runs: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of every run of every row; rows interleaved run by run, so drifting load hits all."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["COLUMNS"] = "100"
    for row in rows:
        _time(row, env)  # warm-up: file cache, bytecode caches, matplotlib's font cache
    seconds: dict[str, dict[str, list[float]]] = {row.name: {"wall": [], "cpu": []} for row in rows}
    for _ in range(runs):
        for row in rows:
            wall, cpu = _time(row, env)
            seconds[row.name]["wall"].append(wall)
            seconds[row.name]["cpu"].append(cpu)
    return seconds


def _table(rows: Sequence[Row], seconds: dict[str, dict[str, list[float]]]) -> list[list[str]]:
    table = [["command", "median s", "min s", "max s", "median CPU s", "target s", ""]]
    for row in rows:
        wall, cpu = seconds[row.name]["wall"], seconds[row.name]["cpu"]
        median = statistics.median(wall)
        verdict = "" if row.target is None else ("ok" if median <= row.target else "over")
        target = "-" if row.target is None else f"{row.target:.1f}"
        cells = [f"{median:.2f}", f"{min(wall):.2f}", f"{max(wall):.2f}", f"{statistics.median(cpu):.2f}"]
        table.append([f"`{row.name}`", *cells, target, verdict])
    return table


def _markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "|".join("---" for _ in table[0]) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table[1:]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command (default 7)")
    parser.add_argument("--nnunet-check", action="store_true", help="add eval with nnU-Net's cross-check")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's seconds here")
    args = parser.parse_args()

    segkit = _segkit()
    with tempfile.TemporaryDirectory(prefix="segkit-bench-startup-") as tmp:
        gt, pred = _write_case(Path(tmp))
        out = Path(tmp) / "reports"
        shape = "x".join(map(str, SHAPE))
        rows = [
            Row('python -c "import typer"', [sys.executable, "-c", "import typer"]),
            Row('python -c "import segkit.cli"', [sys.executable, "-c", "import segkit.cli"]),
            Row("segkit --help", [*segkit, "--help"], 0.3),
            Row("segkit eval --help", [*segkit, "eval", "--help"], 0.3),
            Row(
                f"segkit eval (1 case {shape}, every report)",
                [*segkit, "eval", str(gt), str(pred), "-o", str(out), "--skip-nnunet"],
                1.5,
                out,
            ),
        ]
        if args.nnunet_check:
            rows.append(
                Row(
                    f"segkit eval (1 case {shape}, + nnU-Net cross-check)",
                    [*segkit, "eval", str(gt), str(pred), "-o", str(out)],
                    None,
                    out,
                )
            )
        seconds = measure(rows, args.runs)

    table = _table(rows, seconds)
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{machine}; median of {args.runs} runs after one warm-up, each a fresh process\n")
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for cells in table:
        print(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        )
    if args.markdown is not None:
        args.markdown.write_text(_markdown(table))
    if args.json is not None:
        report: dict[str, Any] = {"machine": machine, "runs": args.runs, "seconds": seconds}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
