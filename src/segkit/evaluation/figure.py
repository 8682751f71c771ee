"""The evaluation figure: per-region lesion-wise Dice and HD95 across cases (matplotlib, imported here only)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from segkit.evaluation.run import Evaluation


def render_png(evaluation: Evaluation) -> bytes:
    """Two panels (lesion-wise Dice, lesion-wise HD95), one box per region with every case as a dot.

    Uses matplotlib's object API with the Agg canvas (`segkit.viz.export.headless_figure`): no pyplot, no
    global backend change, no display.

    Returns:
        The PNG file's bytes.
    """
    from segkit.viz.export import headless_figure

    regions = list(evaluation.regions)
    scored = [c for c in evaluation.scored if c.lesion is not None]
    figure = headless_figure((max(6.0, 1.4 * len(regions) + 2.0), 6.5), dpi=110, layout="constrained")
    axes = figure.subplots(2, 1, sharex=True)
    panels = (
        ("LesionWise_Score_Dice", "lesion-wise Dice", (0.0, 1.02)),
        ("LesionWise_Score_HD95", "lesion-wise HD95 (mm)", None),
    )
    rng = np.random.default_rng(0)  # fixed jitter: the same inputs give the same picture
    for ax, (key, label, limits) in zip(axes, panels, strict=True):
        data = [[float(c.lesion.regions[r][key]) for c in scored if c.lesion is not None] for r in regions]
        positions = np.arange(1, len(regions) + 1)
        if any(data):
            ax.boxplot(data, positions=positions, widths=0.55, showfliers=False, medianprops={"color": "black"})
            for x, values in zip(positions, data, strict=True):
                jitter = rng.uniform(-0.15, 0.15, len(values))
                ax.scatter(x + jitter, values, s=14, alpha=0.6, color="tab:blue", zorder=3)
        ax.set_ylabel(label)
        if limits is not None:
            ax.set_ylim(*limits)
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(np.arange(1, len(regions) + 1), regions)
    penalties = ", ".join(f"{k} mm" for k in evaluation.penalties()) or "-"
    figure.suptitle(
        f"{evaluation.settings.protocol}: {len(scored)} cases, {evaluation.pred.name} (HD95 penalty {penalties})",
        fontsize=10,
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
