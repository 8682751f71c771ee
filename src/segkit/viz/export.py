"""Writers: PNG bytes and files, GIFs, and matplotlib figures (titles, legends) saved by suffix.

imageio and matplotlib are imported inside the functions. Figures are built with the object-oriented
``matplotlib.figure.Figure`` and the Agg canvas, never through pyplot's global state, so rendering works
headless and in threads; only `show_figure` touches pyplot. Every file is written with `atomic_path`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segkit.errors import ConfigError, OutputError
from segkit.io import atomic_path, check_name_length

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from segkit.viz.render import RGB, IndexedFrames, RGBImage

FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
VECTOR_SUFFIXES = (".svg", ".pdf")


def check_suffix(path: Path, allowed: Sequence[str] = FIGURE_SUFFIXES, *, what: str = "figure") -> Path:
    """Return `path` if its suffix is one of `allowed` (case-insensitive).

    Raises:
        ConfigError: Naming the path and the allowed suffixes.
    """
    if Path(path).suffix.lower() not in allowed:
        msg = f"{path}: unsupported {what} format {Path(path).suffix or '(none)'}; use {', '.join(allowed)}"
        raise ConfigError(msg)
    return Path(path)


def check_new(path: Path, *, overwrite: bool) -> Path:
    """Return `path` unless it exists and `overwrite` is False.

    Raises:
        ConfigError: A name in `path` is longer than the file system allows.
        OutputError: The file exists (hint: --overwrite).
    """
    if check_name_length(Path(path)).exists() and not overwrite:
        msg = f"{path}: exists"
        raise OutputError(msg, hint="pass --overwrite to replace it, or choose another output")
    return Path(path)


def encode_png(rgb: RGBImage, *, compress_level: int = 1) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image (fast compression: these go straight to a browser)."""
    import imageio.v3 as iio

    data: bytes = iio.imwrite("<bytes>", np.ascontiguousarray(rgb), extension=".png", compress_level=compress_level)
    return data


def png_data_uri(rgb: RGBImage) -> str:
    """A ``data:image/png;base64,...`` URI of an (H, W, 3) uint8 image."""
    import base64

    return "data:image/png;base64," + base64.b64encode(encode_png(rgb)).decode("ascii")


def write_gif(dest: Path, frames: IndexedFrames, *, frame_ms: int = 80, loop: int = 0) -> Path:
    """Write palette-indexed frames as an animated GIF with imageio, atomically.

    Frames go to the writer as 8-bit indices with the fixed palette, so nothing is quantised per frame.

    Args:
        dest: ``.gif`` file.
        frames: From `segkit.viz.render.indexed_sweep`.
        frame_ms: Display time of each frame (GIF stores hundredths of a second).
        loop: Repeat count, 0 = forever.
    """
    import imageio.v3 as iio

    with atomic_path(Path(dest)) as tmp:
        # 2-D uint8 frames are written as "L" images; Pillow then takes `palette` as the colour table
        # as is (every entry distinct, see render.overlay_palette) instead of quantising each frame.
        iio.imwrite(
            tmp,
            frames.frames,
            extension=".gif",
            palette=frames.palette.tobytes(),
            duration=frame_ms,
            loop=loop,
            optimize=False,
        )
    return Path(dest)


@dataclass(frozen=True)
class Panel:
    """One image of a figure grid, with its title."""

    image: RGBImage
    title: str = ""


@dataclass(frozen=True)
class FigureSpec:
    """A grid of panels plus labels, drawn by `panel_figure` (no matplotlib objects inside).

    Attributes:
        rows: Panels row by row (rows may have different lengths).
        title: Figure title.
        row_titles: One label per row (drawn left of the row), or empty.
        legend: ``(name, colour)`` entries, or empty.
        legend_title: Title of the legend box.
    """

    rows: Sequence[Sequence[Panel]]
    title: str = ""
    row_titles: Sequence[str] = ()
    legend: Sequence[tuple[str, RGB]] = ()
    legend_title: str = ""


def panel_figure(spec: FigureSpec, *, pyplot: bool = False, inches_per_panel: float = 3.2) -> Figure:
    """Draw a `FigureSpec` with matplotlib.

    Args:
        spec: What to draw.
        pyplot: Create the figure through pyplot (needed only to show it in a window).
        inches_per_panel: Width of one panel column.
    """
    from matplotlib.patches import Patch

    nrows = len(spec.rows)
    ncols = max(len(row) for row in spec.rows)
    # Lay the figure out in inches so that each row is exactly as tall as its tallest image drawn at the
    # panel width: no empty bands between the title, the images and the legend.
    cell = inches_per_panel
    rows_h = [cell * max(p.image.shape[0] / p.image.shape[1] for p in row) for row in spec.rows]
    title_h = 0.45 if spec.title else 0.05
    panel_title_h = 0.3
    legend_h = 0.45 if spec.legend else 0.05
    left_pad = 0.45 if spec.row_titles else 0.05
    gap_w, gap_h = 0.08, 0.35
    width = left_pad + ncols * cell + (ncols - 1) * gap_w + 0.05
    height = title_h + panel_title_h + sum(rows_h) + (nrows - 1) * gap_h + legend_h
    fig = _new_figure((width, height), pyplot=pyplot)
    grid = fig.add_gridspec(
        nrows,
        ncols,
        height_ratios=rows_h,
        left=left_pad / width,
        right=1 - 0.05 / width,
        top=1 - (title_h + panel_title_h) / height,
        bottom=legend_h / height,
        wspace=gap_w / cell,
        hspace=gap_h / (sum(rows_h) / nrows),
    )
    for r, row in enumerate(spec.rows):
        for c in range(ncols):
            ax = fig.add_subplot(grid[r, c])
            ax.set_axis_off()
            if c >= len(row):
                continue
            ax.imshow(row[c].image, interpolation="nearest", aspect="equal")
            ax.set_title(row[c].title, fontsize=9)
            if c == 0 and r < len(spec.row_titles) and spec.row_titles[r]:
                ax.text(
                    -0.04,
                    0.5,
                    spec.row_titles[r],
                    transform=ax.transAxes,
                    rotation=90,
                    ha="right",
                    va="center",
                    fontsize=10,
                )
    if spec.title:
        fig.suptitle(spec.title, fontsize=12, y=1 - 0.08 / height, va="top")
    if spec.legend:
        handles = [
            Patch(facecolor=(r / 255, g / 255, b / 255), edgecolor="black", label=name)
            for name, (r, g, b) in spec.legend
        ]
        fig.legend(
            handles=handles,
            loc="lower center",
            bbox_to_anchor=(0.5, 0.02 / height),
            ncol=min(len(handles), 8),
            frameon=False,
            fontsize=9,
            title=spec.legend_title or None,
            title_fontsize=9,
        )
    return fig


def headless_figure(size: tuple[float, float], **kwargs: Any) -> Figure:
    """A white matplotlib figure on its own Agg canvas: no pyplot state, no display, safe in threads.

    Args:
        size: Width and height in inches.
        kwargs: Further `matplotlib.figure.Figure` arguments (``dpi``, ``layout``, ...).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, **{"facecolor": "white", **kwargs})
    FigureCanvasAgg(fig)
    return fig


def _new_figure(size: tuple[float, float], *, pyplot: bool) -> Figure:
    if pyplot:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=size, facecolor="white")
    return headless_figure(size)


def save_figure(fig: Figure, dest: Path, *, dpi: int = 150, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically; the format follows the suffix (.png, .svg, .pdf).

    Raises:
        ConfigError: Unsupported suffix.
        OutputError: The folder cannot be written.
    """
    dest = check_suffix(Path(dest))
    try:
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, dpi=dpi, format=dest.suffix.lower().lstrip("."), **kwargs)
    except OSError as err:
        msg = f"{dest}: cannot write the figure ({err.strerror or err})"
        raise OutputError(msg) from err
    return dest


def show_figure(fig: Figure) -> None:
    """Show a pyplot-created figure in a window and block until it is closed."""
    import matplotlib.pyplot as plt

    plt.show()
    plt.close(fig)
