"""Benchmark ``segkit eval``'s per-case scoring against the official BraTS 2024 scorer's run times.

Three measurements, each in a fresh process, one core, no process pool:

1. the golden cases (``tests/metrics/golden/brats2024``): segkit's time per case (load + lesion-wise +
   voxel metrics) next to the official scorer's recorded ``official_seconds`` for the same pair;
2. a generated cohort on the 240x240x155 SRI grid;
3. a generated cohort on the 182x218x182 MNI grid (BraTS 2024 GLI).

Generated cohorts use `segkit.data.synth.generate_case` labels as reference and a perturbed copy as the
prediction (shifted by a voxel or two, one tissue eroded or dilated, a few spurious blobs, sometimes a
lesion removed), written as ``.nii.gz`` and read back like real files.

Usage::

    uv run python benchmarks/bench_eval.py [--cases 8] [--seed 0] [--json results.json]

Prints a table: median / 90th percentile / max seconds per case and the peak memory of the scoring
process (resident set size, and the largest numpy working set of one case from tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "metrics" / "golden" / "brats2024"
GRIDS = {"sri": (240, 240, 155), "mni": (182, 218, 182)}


def _perturb(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    pred = np.roll(labels, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 3)))
    tissue = int(rng.integers(1, 5))
    mask = pred == tissue
    if mask.any():
        if rng.random() < 0.5:
            pred[mask & ~ndimage.binary_erosion(mask)] = 2 if tissue != 2 else 0
        else:
            grown = ndimage.binary_dilation(mask, iterations=1) & (pred == 0)
            pred[grown] = tissue
    brain = np.argwhere(labels == 0)
    for _ in range(int(rng.integers(0, 7))):
        centre = brain[int(rng.integers(0, len(brain)))]
        radius = float(rng.uniform(1.5, 4.0))
        lo = np.maximum(centre - 5, 0)
        hi = np.minimum(centre + 6, pred.shape)
        grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        ball = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2
        region = pred[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        region[ball] = int(rng.integers(1, 5))
    return pred.astype(np.uint8)


def _write_cohort(folder: Path, shape: tuple[int, int, int], cases: int, seed: int) -> list[Any]:
    from segkit.data.synth import generate_case
    from segkit.evaluation.matching import CasePair
    from segkit.io import write_volume

    pairs = []
    for number in range(cases):
        case = generate_case(number, shape=shape, seed=seed)
        rng = np.random.default_rng([seed, number, 1])
        gt = write_volume(folder / "gt" / f"{case.case_id}.nii.gz", case.labels, case.affine)
        pred = write_volume(folder / "pred" / f"{case.case_id}.nii.gz", _perturb(case.labels, rng), case.affine)
        pairs.append(CasePair(case.case_id, gt, pred))
    return pairs


def _score_all(pairs: list[Any], penalty: float | None, queue: Any) -> None:
    """Child process: score every pair once (after one warm-up case) and report times and memory."""
    from segkit.config.models import EvalConfig
    from segkit.evaluation.cases import evaluate_case

    options = EvalConfig(hd95_penalty="auto" if penalty is None else penalty)
    evaluate_case(pairs[0], options)  # imports and caches, not timed
    seconds: dict[str, float] = {}
    lesions: dict[str, int] = {}
    peak_numpy = 0
    for pair in pairs:
        tracemalloc.start()
        start = time.perf_counter()
        result = evaluate_case(pair, options)
        seconds[pair.case_id] = time.perf_counter() - start
        peak_numpy = max(peak_numpy, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert result.status == "ok", result.reason
        assert result.lesion is not None
        lesions[pair.case_id] = sum(1 for row in result.lesion.lesions if row.region == "WT")
    # Timed again without tracemalloc (it slows allocation-heavy code); the faster run counts.
    for pair in pairs:
        start = time.perf_counter()
        evaluate_case(pair, options)
        seconds[pair.case_id] = min(seconds[pair.case_id], time.perf_counter() - start)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"seconds": seconds, "wt_lesions": lesions, "peak_rss_mb": rss_mb, "peak_numpy_mb": peak_numpy / 2**20})


def _run_isolated(pairs: list[Any], penalty: float | None) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_score_all, args=(pairs, penalty, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8, help="generated cases per grid (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from segkit.evaluation.matching import CasePair

    report: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}"}
    rows = []

    expected = {p.stem: json.loads(p.read_text()) for p in sorted((GOLDEN / "expected").glob("*.json"))}
    golden = [
        CasePair(name, GOLDEN / "cases" / f"{name}_gt.nii.gz", GOLDEN / "cases" / f"{name}_pred.nii.gz")
        for name in expected
        if name.startswith("c")  # the 240x240x155 cases (m1-m4 are 48^3 micro cases)
    ]
    measured = _run_isolated(golden, 337.0)
    official = [expected[p.case_id]["official_seconds"] for p in golden]
    ours = [measured["seconds"][p.case_id] for p in golden]
    speedups = [o / s for o, s in zip(official, ours, strict=True)]
    report["golden"] = {
        "cases": len(golden),
        "segkit": _stats(ours),
        "official": _stats(official),
        "speedup_median_of_ratios": statistics.median(speedups),
        "speedup_min": min(speedups),
        "per_case": {
            p.case_id: {"segkit": measured["seconds"][p.case_id], "official": o}
            for p, o in zip(golden, official, strict=True)
        },
        "peak_rss_mb": measured["peak_rss_mb"],
        "peak_numpy_mb": measured["peak_numpy_mb"],
    }
    rows.append(("golden 240x240x155", len(golden), _stats(ours), measured, _stats(official)["median"]))

    with tempfile.TemporaryDirectory(prefix="segkit-bench-") as tmp:
        for name, shape in GRIDS.items():
            pairs = _write_cohort(Path(tmp) / name, shape, args.cases, args.seed)
            measured = _run_isolated(pairs, None)
            times = list(measured["seconds"].values())
            report[name] = {
                "shape": shape,
                "cases": len(pairs),
                "segkit": _stats(times),
                "wt_lesions": measured["wt_lesions"],
                "peak_rss_mb": measured["peak_rss_mb"],
                "peak_numpy_mb": measured["peak_numpy_mb"],
            }
            rows.append((f"generated {'x'.join(map(str, shape))}", len(pairs), _stats(times), measured, None))

    print(f"machine: {report['machine']}; one process, one case at a time, times include reading both files")
    header = f"{'cohort':28s} {'cases':>5s} {'median s':>9s} {'p90 s':>7s} {'max s':>7s} {'RSS MB':>7s} "
    header += f"{'numpy MB':>9s} {'official median s':>18s}"
    print(header)
    for label, n, stats, measured, official_median in rows:
        official_text = f"{official_median:.1f}" if official_median is not None else "-"
        print(
            f"{label:28s} {n:5d} {stats['median']:9.3f} {stats['p90']:7.3f} {stats['max']:7.3f} "
            f"{measured['peak_rss_mb']:7.0f} {measured['peak_numpy_mb']:9.0f} {official_text:>18s}"
        )
    g = report["golden"]
    print(
        f"golden: official median {g['official']['median']:.1f} s vs segkit {g['segkit']['median']:.3f} s per case; "
        f"per-case speed-up median {g['speedup_median_of_ratios']:.0f}x, smallest {g['speedup_min']:.0f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
