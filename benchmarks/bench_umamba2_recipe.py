"""UMamba2: the stsr2025 recipe (pretrain -> consistency -> pseudolabel) vs supervised-only training.

A synthetic cohort of 4 labelled and 12 unlabelled training cases plus held-out test cases. Arm
"recipe" trains ``--recipe stsr2025`` on all 16 training cases (``--fold all``: 4 labelled cases leave
no cross-validation folds); arm "supervised" trains the plain UMamba2 trainer on the 4 labelled cases
only (a dataset without the unlabelled cases: supervised training refuses placeholders), for as many
iterations as the recipe's three stages together. Both predict the test cases; the figures are the
held-out WT, TC and ET Dice (mean over test cases; an empty region in both is 1), median over repeats
(nnU-Net training is not seeded, so repeats differ by its sampling and initialisation). Every command
is the installed ``segkit``, on the CPU by default.

    uv run python benchmarks/bench_umamba2_recipe.py --out /tmp/bench_recipe
    uv run python benchmarks/bench_umamba2_recipe.py --repeats 1 --epochs 1 --iterations 4   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
BIN = Path(sys.executable).parent


def segkit(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    done = subprocess.run([str(BIN / "segkit"), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"segkit {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def nnunet_paths(root: Path) -> list[str]:
    return ["--nnunet-raw", str(root / "raw"), "--nnunet-preprocessed", str(root / "pre"),
            "--nnunet-results", str(root / "res")]  # fmt: skip


def dice(pred, truth) -> float:  # type: ignore[no-untyped-def]
    import numpy as np

    inter = float(np.logical_and(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    return 1.0 if total == 0 else 2 * inter / total


def score(pred_dir: Path, test_root: Path) -> dict[str, float]:
    """Mean held-out Dice per region over the test cases."""
    import numpy as np

    from segkit.io import read_volume

    per: dict[str, list[float]] = {r: [] for r in REGIONS}
    for case in sorted(p for p in test_root.iterdir() if p.is_dir()):
        truth = read_volume(next(case.glob("*-seg.nii.gz"))).data
        pred = read_volume(pred_dir / f"{case.name}.nii.gz").data
        for region, labels in REGIONS.items():
            per[region].append(dice(np.isin(pred, labels), np.isin(truth, labels)))
    return {r: round(statistics.fmean(v), 4) for r, v in per.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_umamba2_recipe"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", type=int, default=32, help="Edge of the synthetic volumes.")
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of each recipe stage.")
    parser.add_argument("--iterations", type=int, default=20, help="Iterations per epoch (every stage and arm).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the synthetic cohort.")
    args = parser.parse_args()

    from segkit.data.synth import write_cohort

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shape = (args.shape,) * 3
    write_cohort(out / "train", cases=4, shape=shape, seed=args.seed, unlabelled=12)
    write_cohort(out / "test", cases=args.test_cases, shape=shape, seed=args.seed, start=60)
    tiny = ["--set", "backends.umamba2.headdim=32", "--set", "backends.umamba2.features_per_stage=[8,16,32]"]
    plan = ["--backend", "umamba2", "-d", "501", "-j", "1", "--batch-size", "2", *tiny]
    arms = {"recipe": out / "recipe", "supervised": out / "supervised"}
    started = time.perf_counter()
    segkit(out, "data", "prepare", "--nnunet-raw", str(arms["recipe"] / "raw"), "--train-sources", "train",
           "--unlabelled-sources", "train/unlabelled", "--test-sources", "test")  # fmt: skip
    segkit(out, "data", "prepare", "--nnunet-raw", str(arms["supervised"] / "raw"), "--train-sources", "train",
           "--test-sources", "test")  # fmt: skip
    for root in arms.values():
        segkit(out, "data", "plan", *plan, *nnunet_paths(root))
    common = ["--backend", "umamba2", "-d", "501", "--fold", "all", "--device", args.device, "-j", "1",
              "--da-processes", "0"]  # fmt: skip
    iters = ["--iterations-per-epoch", str(args.iterations)]
    runs = []
    for repeat in range(args.repeats):
        row: dict[str, object] = {"repeat": repeat}
        for arm, root in arms.items():
            res = root / "res"
            if res.exists():
                shutil.rmtree(res)
            t0 = time.perf_counter()
            if arm == "recipe":
                train = ["--recipe", "stsr2025", "--epochs", str(args.epochs)]
            else:
                train = ["--epochs", str(3 * args.epochs)]
            segkit(out, "train", *common, *nnunet_paths(root), *train, *iters, "--no-final-validation")
            pred = root / f"pred{repeat}"
            which = ["--recipe", "stsr2025"] if arm == "recipe" else []
            segkit(out, "infer", "--backend", "umamba2", "-d", "501", "-i", "test", "-o", str(pred), "--fold", "all",
                   "--device", args.device, "-j", "1", *which, *nnunet_paths(root))  # fmt: skip
            row[arm] = {**score(pred, out / "test"), "seconds": round(time.perf_counter() - t0, 1)}
        runs.append(row)
        print(json.dumps(row), flush=True)
    median = {
        arm: {r: round(statistics.median(float(run[arm][r]) for run in runs), 4) for r in REGIONS}  # type: ignore[index]
        for arm in arms
    }
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the end",
        "cohort": f"4 labelled + 12 unlabelled training cases, {args.test_cases} test cases, {args.shape}^3",
        "schedule": (
            f"recipe: 3 stages x {args.epochs} epochs x {args.iterations} iterations; supervised: "
            f"{3 * args.epochs} epochs x {args.iterations} iterations; batch 2, network 8-16-32 features"
        ),
        "repeats": args.repeats,
        "median_dice": median,
        "runs": runs,
        "total_s": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
