"""The evaluation figure: per protocol and region, lesion-wise Dice and HD95 across cases (matplotlib only here)."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from segkit.evaluation.run import Evaluation


def render_png(evaluation: Evaluation) -> bytes:
    """Two panels per protocol (its headline overlap and distance columns), one box per region, every case a dot.

    Uses matplotlib's object API with the Agg canvas (`segkit.viz.export.headless_figure`): no pyplot, no
    global backend change, no display.

    Returns:
        The PNG file's bytes.
    """
    from segkit.viz.export import headless_figure

    protocols = evaluation.protocols
    width = max(len(evaluation.regions_for(p)) for p in protocols)
    figure = headless_figure((max(6.0, 1.4 * width + 2.0), 6.5 * len(protocols)), dpi=110, layout="constrained")
    axes = np.atleast_1d(figure.subplots(2 * len(protocols), 1))
    rng = np.random.default_rng(0)  # fixed jitter: the same inputs give the same picture
    for index, protocol in enumerate(protocols):
        regions = list(evaluation.regions_for(protocol))
        scored = [c.scores[protocol.name] for c in evaluation.scored if protocol.name in c.scores]
        overlap, distance = protocol.headline()
        panels = (
            (overlap, f"{protocol.name} lesion-wise Dice", (0.0, 1.02)),
            (distance, "lesion-wise HD95 (mm)", None),
        )
        for ax, (stem, label, limits) in zip(axes[2 * index : 2 * index + 2], panels, strict=True):
            data = [
                [v for v in (float(s.table[protocol.column(stem, r)]) for s in scored) if math.isfinite(v)]
                for r in regions
            ]
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
            ax.set_xticks(positions, regions)
    penalties = ", ".join(f"{k} mm" for k in evaluation.penalties()) or "-"
    names = " + ".join(p.name for p in protocols)
    figure.suptitle(
        f"{names}: {len(evaluation.scored)} cases, {evaluation.pred.name} (HD95 penalty {penalties})", fontsize=10
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
