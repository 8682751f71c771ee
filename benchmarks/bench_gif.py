"""GIF speed: segkit's numpy composition vs rendering every frame through matplotlib.

Both write the same animation: 155 axial frames of 240x240 voxels of a synthetic BraTS-like case (t2f),
windowed at the 0.5/99.5 percentiles, with the four labels overlaid at opacity 0.4, to a GIF with imageio.

* segkit: `render.indexed_sweep` composes all frames at once as palette indices, `export.write_gif`
  writes them with the fixed palette (what `segkit viz gif` does).
* matplotlib, figure re-used (the fast way to use it): one 240x240-pixel figure; per frame `set_data` on
  a grey image and an RGBA label image, `canvas.draw()`, copy the RGB buffer; then imageio writes the RGB
  frames (Pillow quantises each one).
* matplotlib, a figure per frame (how slice-sweep scripts are usually written, the old
  ``visualize_volumes.py`` included): the same, but a new figure with two ``imshow`` calls per frame.

Loading the case is not timed. Run: ``uv run python benchmarks/bench_gif.py [--repeats N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _case() -> tuple[np.ndarray, np.ndarray]:
    from segkit.data.synth import generate_case
    from segkit.viz.render import Orientation

    case = generate_case(1, shape=(240, 240, 155), seed=0)
    orientation = Orientation.from_affine(case.affine, case.labels.shape)
    return orientation.to_ras(case.images["t2f"]), orientation.to_ras(case.labels)


def run_segkit(image: np.ndarray, labels: np.ndarray, dest: Path) -> float:
    from segkit.viz.export import write_gif
    from segkit.viz.render import indexed_sweep, window_limits

    started = time.perf_counter()
    frames = indexed_sweep(image, "axial", limits=window_limits(image), labels_ras=labels, alpha=0.4)
    write_gif(dest, frames, frame_ms=80)
    return time.perf_counter() - started


def run_matplotlib(image: np.ndarray, labels: np.ndarray, dest: Path, *, reuse: bool = True) -> float:
    import imageio.v3 as iio
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from segkit.viz.render import BRATS_COLOURS, display_slice, window_limits

    started = time.perf_counter()
    low, high = window_limits(image)
    lut = np.zeros((5, 4), dtype=np.float32)
    for value, colour in BRATS_COLOURS.items():
        lut[value] = (*(c / 255 for c in colour), 0.4)

    def new_figure(z: int) -> tuple[FigureCanvasAgg, object, object]:
        fig = Figure(figsize=(2.4, 2.4), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        grey = ax.imshow(display_slice(image, "axial", z), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        over = ax.imshow(lut[display_slice(labels, "axial", z)], interpolation="nearest")
        return canvas, grey, over

    canvas, grey, over = new_figure(0)
    frames = []
    for z in range(image.shape[2]):
        if reuse:
            grey.set_data(display_slice(image, "axial", z))  # type: ignore[attr-defined]
            over.set_data(lut[display_slice(labels, "axial", z)])  # type: ignore[attr-defined]
        else:
            canvas, grey, over = new_figure(z)
        canvas.draw()
        frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    iio.imwrite(dest, np.stack(frames), extension=".gif", duration=80, loop=0)
    return time.perf_counter() - started


def machine() -> dict[str, object]:
    import imageio
    import matplotlib
    import PIL

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "imageio": imageio.__version__,
        "pillow": PIL.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each method (median reported)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    image, labels = _case()
    with tempfile.TemporaryDirectory() as tmp:
        run_segkit(image, labels, Path(tmp) / "warm.gif")  # first-call imports are not what we measure
        segkit = [run_segkit(image, labels, Path(tmp) / "segkit.gif") for _ in range(args.repeats)]
        mpl = [run_matplotlib(image, labels, Path(tmp) / "mpl.gif") for _ in range(args.repeats)]
        fresh = [run_matplotlib(image, labels, Path(tmp) / "mpl.gif", reuse=False) for _ in range(args.repeats)]
        sizes = {
            "segkit_bytes": (Path(tmp) / "segkit.gif").stat().st_size,
            "matplotlib_bytes": (Path(tmp) / "mpl.gif").stat().st_size,
        }
    result = {
        "frames": int(image.shape[2]),
        "frame_size": [int(image.shape[1]), int(image.shape[0])],
        "segkit_median_s": round(statistics.median(segkit), 3),
        "matplotlib_median_s": round(statistics.median(mpl), 3),
        "matplotlib_new_figure_median_s": round(statistics.median(fresh), 3),
        "ratio": round(statistics.median(mpl) / statistics.median(segkit), 1),
        "ratio_new_figure": round(statistics.median(fresh) / statistics.median(segkit), 1),
        "segkit_runs_s": [round(t, 3) for t in segkit],
        "matplotlib_runs_s": [round(t, 3) for t in mpl],
        "matplotlib_new_figure_runs_s": [round(t, 3) for t in fresh],
        **sizes,
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['frames']} frames of {result['frame_size'][0]}x{result['frame_size'][1]} with overlay")
    print(f"segkit (numpy + imageio):      median {result['segkit_median_s']:.3f} s over {args.repeats} runs")
    print(f"matplotlib, figure re-used:     median {result['matplotlib_median_s']:.3f} s  ({result['ratio']}x)")
    print(
        f"matplotlib, figure per frame:   median {result['matplotlib_new_figure_median_s']:.3f} s"
        f"  ({result['ratio_new_figure']}x)"
    )
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()
