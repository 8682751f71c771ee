"""Benchmark ``segkit eval``'s per-case scoring against the official BraTS 2024 scorer's run times.

Three measurements, each in a fresh process, one core, no process pool:

1. the golden cases (``tests/metrics/golden/brats2024``): segkit's time per case (load + lesion-wise +
   voxel metrics) next to the official scorer's recorded ``official_seconds`` for the same pair;
2. a generated cohort on the 240x240x155 SRI grid;
3. a generated cohort on the 182x218x182 MNI grid (BraTS 2024 GLI);
4. ``brats2025``: segkit's brats2025 protocol next to panoptica 2.1.7 (the package's engine, run in its own
   environment `tests/oracle_panoptica/`, timing inside it) on the golden 240x240x155 cases, both reading
   the two files and scoring the six ``gli`` regions, median of ``--repeat`` runs each;
5. ``worst2024``: the 2024 protocol on 0.8 Mvoxel predictions with 130-170 small components (what an
   undertrained model produces), median of ``--repeat`` runs per case.

Generated cohorts use `segkit.data.synth.generate_case` labels as reference and a perturbed copy as the
prediction (shifted by a voxel or two, one tissue eroded or dilated, a few spurious blobs, sometimes a
lesion removed), written as ``.nii.gz`` and read back like real files.

Usage::

    uv run python benchmarks/bench_eval.py [--cases 8] [--seed 0] [--repeat 5] [--json results.json]
        [--only golden,sri,mni,brats2025,worst2024]

The brats2025 section needs the oracle environment: ``uv sync --project tests/oracle_panoptica``.

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

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "metrics" / "golden" / "brats2024"
ORACLE = ROOT / "tests" / "oracle_panoptica"
SECTIONS = ("golden", "sri", "mni", "brats2025", "worst2024")
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


def _brats2025_segkit(pairs: list[Any], repeat: int, queue: Any) -> None:
    """Child process: read both files and score brats2025 (gli), `repeat` times per case after a warm-up."""
    from segkit.config.models import EvalConfig
    from segkit.evaluation.cases import prediction_spacing
    from segkit.io import read_labels
    from segkit.metrics.protocols import PROTOCOLS

    protocol = PROTOCOLS["brats2025"]
    cfg = EvalConfig(protocol=["brats2025"])
    regions = protocol.regions(cfg)

    def once(pair: Any) -> None:
        gt, pred = read_labels(pair.gt), read_labels(pair.pred)
        protocol.score(gt.data, pred.data, prediction_spacing(gt), cfg, regions, missing_prediction=False)

    once(pairs[0])
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for pair in pairs:
        runs, cpus = [], []
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            once(pair)
            runs.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
        wall[pair.case_id], cpu[pair.case_id] = statistics.median(runs), statistics.median(cpus)
    queue.put({"seconds": wall, "cpu_seconds": cpu})


def _brats2025(golden: list[Any], repeat: int) -> dict[str, Any]:
    """segkit and panoptica on the same cases, one after the other in the same run."""
    import subprocess

    python = ORACLE / ".venv" / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"brats2025 section: build the oracle first: uv sync --project {ORACLE}")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_brats2025_segkit, args=(golden, repeat, queue))
    process.start()
    ours = queue.get()
    process.join()
    jobs = [{"id": p.case_id, "gt": str(p.gt), "pred": str(p.pred), "task": "gli"} for p in golden]
    with tempfile.TemporaryDirectory() as tmp:
        job_file, out_file = Path(tmp) / "jobs.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(jobs))
        command = [str(python), str(ORACLE / "run_oracle.py"), str(job_file), str(out_file), "--time", str(repeat)]
        subprocess.run(command, check=True, capture_output=True)
        theirs = json.loads(out_file.read_text())
    per_case = {
        p.case_id: {
            "segkit": ours["seconds"][p.case_id],
            "panoptica": theirs[p.case_id]["seconds"],
            "segkit_cpu": ours["cpu_seconds"][p.case_id],
            "panoptica_cpu": theirs[p.case_id]["cpu_seconds"],
        }
        for p in golden
    }
    wall = [v["panoptica"] / v["segkit"] for v in per_case.values()]
    cpu = [v["panoptica_cpu"] / v["segkit_cpu"] for v in per_case.values()]
    return {
        "cases": len(golden),
        "repeat": repeat,
        "segkit": _stats([v["segkit"] for v in per_case.values()]),
        "panoptica": _stats([v["panoptica"] for v in per_case.values()]),
        "speedup_wall_median": statistics.median(wall),
        "speedup_wall_min": min(wall),
        "speedup_cpu_median": statistics.median(cpu),
        "speedup_cpu_min": min(cpu),
        "per_case": per_case,
    }


def _worst_case_pair(seed: int, number: int) -> tuple[np.ndarray, np.ndarray]:
    """A 96^3 case (0.88 Mvoxel) whose prediction adds 130-170 small spurious components to a copy of the GT."""
    import cc3d

    from segkit.data.synth import generate_case

    case = generate_case(number, shape=(96, 96, 96), seed=seed)
    rng = np.random.default_rng([seed, number, 2])
    target = int(rng.integers(130, 171))
    pred = case.labels.copy()
    background = np.argwhere(case.labels == 0)
    while True:
        centre = background[int(rng.integers(len(background)))]
        radius = int(rng.integers(1, 3))
        pred[tuple(slice(max(int(c) - radius, 0), int(c) + radius) for c in centre)] = int(rng.integers(1, 5))
        if cc3d.connected_components(pred > 0, connectivity=26, return_N=True)[1] >= target:
            return case.labels, pred


def _worst2024(cases: int, seed: int, repeat: int, queue: Any) -> None:
    """Child process: the 2024 protocol on the small-component worst case (scoring only; decoding timed apart)."""
    import cc3d

    from segkit.metrics.lesionwise import score_case

    pairs = [_worst_case_pair(seed, number) for number in range(cases)]
    score_case(*pairs[0], (1.0, 1.0, 1.0), penalty=374.0)
    seconds, components = [], []
    for gt, pred in pairs:
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            score_case(gt, pred, (1.0, 1.0, 1.0), penalty=374.0)
            runs.append(time.perf_counter() - start)
        seconds.append(statistics.median(runs))
        components.append(int(cc3d.connected_components(pred > 0, connectivity=26, return_N=True)[1]))
    queue.put({"seconds": seconds, "components": components})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8, help="generated cases per grid (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case of the brats2025/worst2024 sections")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run (of {', '.join(SECTIONS)})")
    args = parser.parse_args()
    only = set(args.only.split(","))

    from segkit.evaluation.matching import CasePair

    report: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}"}
    rows = []

    expected = {p.stem: json.loads(p.read_text()) for p in sorted((GOLDEN / "expected").glob("*.json"))}
    golden = [
        CasePair(name, GOLDEN / "cases" / f"{name}_gt.nii.gz", GOLDEN / "cases" / f"{name}_pred.nii.gz")
        for name in expected
        if name.startswith("c")  # the 240x240x155 cases (m1-m4 are 48^3 micro cases)
    ]
    if "golden" in only:
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
            if name not in only:
                continue
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
    if rows:
        header = f"{'cohort':28s} {'cases':>5s} {'median s':>9s} {'p90 s':>7s} {'max s':>7s} {'RSS MB':>7s} "
        header += f"{'numpy MB':>9s} {'official median s':>18s}"
        print(header)
    for label, n, stats, measured, official_median in rows:
        official_text = f"{official_median:.1f}" if official_median is not None else "-"
        print(
            f"{label:28s} {n:5d} {stats['median']:9.3f} {stats['p90']:7.3f} {stats['max']:7.3f} "
            f"{measured['peak_rss_mb']:7.0f} {measured['peak_numpy_mb']:9.0f} {official_text:>18s}"
        )
    if "golden" in report:
        g = report["golden"]
        print(
            f"golden: official median {g['official']['median']:.1f} s vs segkit {g['segkit']['median']:.3f} s per "
            f"case; per-case speed-up median {g['speedup_median_of_ratios']:.0f}x, smallest {g['speedup_min']:.0f}x"
        )
    if "brats2025" in only:
        b = report["brats2025"] = _brats2025(golden, args.repeat)
        print(f"brats2025 vs panoptica 2.1.7, {b['cases']} golden cases, median of {b['repeat']} runs (read + score):")
        print(f"{'case':28s} {'segkit s':>9s} {'panoptica s':>12s} {'x wall':>7s} {'x cpu':>6s}")
        for case, v in b["per_case"].items():
            print(
                f"{case:28s} {v['segkit']:9.3f} {v['panoptica']:12.3f} {v['panoptica'] / v['segkit']:7.1f} "
                f"{v['panoptica_cpu'] / v['segkit_cpu']:6.1f}"
            )
        print(
            f"brats2025: segkit median {b['segkit']['median']:.3f} s, panoptica {b['panoptica']['median']:.3f} s; "
            f"speed-up wall median {b['speedup_wall_median']:.1f}x (smallest {b['speedup_wall_min']:.1f}x), "
            f"CPU median {b['speedup_cpu_median']:.1f}x (smallest {b['speedup_cpu_min']:.1f}x)"
        )
    if "worst2024" in only:
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        process = context.Process(target=_worst2024, args=(args.cases, args.seed, args.repeat, queue))
        process.start()
        w = report["worst2024"] = queue.get()
        process.join()
        print(
            f"worst2024: {len(w['seconds'])} cases of 96^3 with {min(w['components'])}-{max(w['components'])} "
            f"predicted components: scoring median {statistics.median(w['seconds']):.3f} s, "
            f"max {max(w['seconds']):.3f} s per case"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
