"""Figures of an `Architecture`: a U-shaped overview and a detailed block diagram (matplotlib, Agg).

Both are built on a plain ``matplotlib.figure.Figure`` (no pyplot state) and saved with
`segkit.viz.export.save_figure`, so the format follows the file suffix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit.viz.arch import Architecture, PlansLocation, Stage
from segkit.viz.export import headless_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLOURS = {
    "encoder": "#8fb8de",
    "residual": "#5b8fc7",
    "bottleneck": "#9b7fcf",
    "mamba": "#f28e2b",
    "decoder": "#8cc98a",
    "head": "#c9c9c9",
    "norm": "#e8e8e8",
    "up": "#5fae5c",
    "concat": "#f1e0a6",
}


def _x(values: Any) -> str:
    return "×".join(str(v) for v in values)


def _subtitle(arch: Architecture) -> str:
    parts = [f"patch {_x(arch.patch_size)}"]
    if arch.spacing:
        parts.append(f"spacing {_x(f'{s:g}' for s in arch.spacing)} mm")
    if arch.batch_size is not None:
        parts.append(f"batch {arch.batch_size}")
    parts.append(f"{arch.conv} · {arch.norm} · {arch.nonlin}")
    if arch.input_channels is not None or arch.num_classes is not None:
        parts.append(f"{arch.input_channels or '?'} in → {arch.num_classes or '?'} out")
    return "   ".join(parts)


def _title(arch: Architecture) -> str:
    where = " · ".join(p for p in (arch.dataset, arch.plans_name, arch.configuration) if p)
    return f"{arch.class_short}  ({where})"


def _box(ax: Axes, x: float, y: float, w: float, h: float, colour: str, **kwargs: Any) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.0,rounding_size=0.04",
            facecolor=colour,
            edgecolor="#333333",
            linewidth=0.8,
            **kwargs,
        )
    )


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], **kwargs: Any) -> None:
    style = {"arrowstyle": "-|>", "color": "#444444", "lw": 1.0, "shrinkA": 0, "shrinkB": 0, **kwargs}
    ax.annotate("", xy=end, xytext=start, arrowprops=style)


def overview_figure(arch: Architecture) -> Figure:
    """The U-shaped overview: encoder down the left, decoder up the right, skips across, heads out.

    Box widths grow with the channel count and heights with the feature-map size; labels give both (the
    size once per level, left of the encoder box).
    """
    encoder = arch.encoder
    decoder = arch.decoder
    mamba = arch.mamba
    n = len(encoder)
    dx, dy = 1.45, 1.25
    shift = 1.0 if mamba else 0.0
    max_feat = max(s.features for s in arch.stages)
    max_vox = max(math.prod(s.size) if s.size else 1 for s in arch.stages)

    def width(stage: Stage) -> float:
        return 0.45 + 0.55 * math.sqrt(stage.features / max_feat)

    def height(stage: Stage) -> float:
        vox = math.prod(stage.size) if stage.size else 1
        return 0.35 + 0.45 * math.log(max(vox, 1) + 1) / math.log(max_vox + 1)

    span = 2 * (n - 1) + shift
    fig = headless_figure((max(9.0, 1.55 * (span + 2)), max(5.0, 1.3 * (n + 1.2))))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.86))
    ax.set_axis_off()
    positions: dict[int, tuple[float, float]] = {}
    for s in encoder:
        x, y = s.index * dx, -s.index * dy
        positions[s.index] = (x, y)
        colour = COLOURS["bottleneck"] if s.part == "bottleneck" else COLOURS["residual" if s.residual else "encoder"]
        _box(ax, x, y, width(s), height(s), colour)
        blocks = f"{s.blocks} res" if s.residual else f"{s.blocks} conv"
        ax.text(x, y, f"{s.features}\n{blocks}", ha="center", va="center", fontsize=8)
        ax.text(x - width(s) / 2 - 0.08, y, _x(s.size), ha="right", va="center", fontsize=7, color="#333")
        if s.index > 0:
            px, py = positions[s.index - 1]
            _arrow(ax, (px + 0.1, py - height(encoder[s.index - 1]) / 2), (x - 0.1, y + height(s) / 2))
            ax.text((px + x) / 2 - 0.08, (py + y) / 2, f"↓{_x(s.stride)}", ha="right", va="center", fontsize=7)
    bottom = positions[n - 1]
    if mamba is not None:
        mx, my = bottom[0] + dx * shift, bottom[1]
        h = height(encoder[-1])
        _box(ax, mx, my, 0.95, h, COLOURS["mamba"])
        tokens = math.prod(mamba.size) if mamba.size else 0
        ax.text(mx, my, f"Mamba2\n{tokens} tok × {mamba.features}", ha="center", va="center", fontsize=7.5)
        _arrow(ax, (bottom[0] + width(encoder[-1]) / 2, my), (mx - 0.475, my))
        bottom = (mx, my)
    previous = bottom
    previous_half_height = height(encoder[-1]) / 2
    for s in decoder:
        level = n - 2 - s.index
        x = (2 * (n - 1) - level) * dx + shift * dx
        y = -level * dy
        _box(ax, x, y, width(s), height(s), COLOURS["decoder"])
        ax.text(x, y, f"{s.features}\n{s.blocks} conv", ha="center", va="center", fontsize=8)
        _arrow(ax, (previous[0] + 0.1, previous[1] + previous_half_height), (x - 0.1, y - height(s) / 2))
        ax.text(
            (previous[0] + x) / 2 + 0.1, (previous[1] + y) / 2, f"↑{_x(s.stride)}", ha="left", va="center", fontsize=7
        )
        ex, ey = positions[level]
        _arrow(ax, (ex + width(encoder[level]) / 2, ey), (x - width(s) / 2, y), linestyle=(0, (4, 3)), color="#888")
        hx = x + width(s) / 2 + 0.45
        _box(ax, hx, y, 0.42, 0.3, COLOURS["head"])
        ax.text(hx, y, "seg", ha="center", va="center", fontsize=7)
        _arrow(ax, (x + width(s) / 2, y), (hx - 0.21, y), lw=0.8)
        previous, previous_half_height = (x, y), height(s) / 2
    ax.set_xlim(-2.0, span * dx + 1.6)
    ax.set_ylim(-(n - 1) * dy - 0.9, 0.7)
    ax.set_aspect("equal")
    fig.text(0.02, 0.965, _title(arch), fontsize=12, weight="bold", va="top")
    fig.text(0.02, 0.915, _subtitle(arch), fontsize=8.5, va="top", color="#333")
    legend = (
        "boxes: channels and blocks · left: feature-map size of the level · dashed: skip (concatenation) · "
        "seg: output head"
    )
    if len(decoder) > 1:
        legend += " (deep supervision at every decoder stage)"
    fig.text(0.98, 0.02, legend, fontsize=7, ha="right", color="#555")
    for warning in arch.warnings:
        fig.text(0.98, 0.965, f"⚠ {warning}", fontsize=7.5, ha="right", va="top", color="#a33")
    return fig


def detailed_figure(arch: Architecture) -> Figure:
    """A block diagram: one row per stage, one box per convolution or residual block, in order.

    Encoder rows read left to right (first block strided); the Mamba row shows LayerNorm and Mamba2 on
    the flattened bottleneck; decoder rows show the transposed convolution, the skip concatenation, the
    convolutions and the segmentation head.
    """
    rows: list[tuple[str, list[tuple[str, str, float]]]] = []
    for s in arch.encoder:
        label = f"{'bottleneck' if s.part == 'bottleneck' else 'encoder'} {s.index}\n{s.features} ch · {_x(s.size)}"
        items: list[tuple[str, str, float]] = []
        if s.residual and s.index == 0:
            # residual encoders start with a plain convolution ("stem") before the first residual block
            channels = f"{arch.input_channels or '?'}→{s.features}"
            items.append((f"stem conv {_x(s.kernel)}\n{channels}\n{arch.norm}", COLOURS["encoder"], 1.35))
        for b in range(s.blocks):
            stride = f" /{_x(s.stride)}" if b == 0 and any(v > 1 for v in s.stride) else ""
            if s.residual:
                items.append((f"ResBlock\n2× conv {_x(s.kernel)}{stride}\n+ skip", COLOURS["residual"], 1.35))
            else:
                items.append((f"conv {_x(s.kernel)}{stride}\n{arch.norm}\n{arch.nonlin}", COLOURS["encoder"], 1.35))
        rows.append((label, items))
    if arch.mamba is not None:
        m = arch.mamba
        tokens = math.prod(m.size) if m.size else 0
        rows.append(
            (
                f"Mamba bottleneck\n{m.features} ch · {tokens} tokens",
                [
                    (f"flatten\n{_x(m.size)} → {tokens}", COLOURS["norm"], 1.25),
                    ("LayerNorm", COLOURS["norm"], 1.1),
                    (f"Mamba2\n{tokens} tok × {m.features}", COLOURS["mamba"], 1.5),
                    (f"reshape\n→ {_x(m.size)}", COLOURS["norm"], 1.25),
                ],
            )
        )
    classes = arch.num_classes or "K"
    for s in arch.decoder:
        level = len(arch.encoder) - 2 - s.index
        items = [
            (f"ConvTranspose\n{_x(s.stride)}", COLOURS["up"], 1.3),
            (f"concat\nskip e{level}", COLOURS["concat"], 1.0),
        ]
        items += [(f"conv {_x(s.kernel)}\n{arch.norm}\n{arch.nonlin}", COLOURS["decoder"], 1.35)] * s.blocks
        items.append((f"seg 1×1\n→ {classes}", COLOURS["head"], 0.95))
        rows.append((f"decoder {s.index}\n{s.features} ch · {_x(s.size)}", items))
    widest = max(sum(w + 0.15 for *_, w in items) for _, items in rows)
    label_w = 2.3
    fig = headless_figure((max(10.0, 0.95 * (widest + label_w) + 0.5), 0.62 * len(rows) + 1.3))
    ax = fig.add_axes((0.01, 0.01, 0.98, 1 - 1.15 / (0.62 * len(rows) + 1.3)))
    ax.set_axis_off()
    for r, (label, items) in enumerate(rows):
        y = -r
        ax.text(0, y, label, ha="left", va="center", fontsize=7.5)
        x = label_w
        for text, colour, w in items:
            _box(ax, x + w / 2, y, w, 0.78, colour)
            ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=6.2)
            x += w + 0.15
    ax.set_xlim(-0.1, label_w + widest + 0.1)
    ax.set_ylim(-len(rows) + 0.45, 0.55)
    fig.text(0.01, 1 - 0.15 / fig.get_figheight(), _title(arch), fontsize=12, weight="bold", va="top")
    fig.text(0.01, 1 - 0.55 / fig.get_figheight(), _subtitle(arch), fontsize=8.5, va="top", color="#333")
    for warning in arch.warnings:
        fig.text(0.99, 1 - 0.15 / fig.get_figheight(), f"⚠ {warning}", fontsize=7.5, ha="right", va="top", color="#a33")
    return fig


@dataclass(frozen=True)
class ArchResult:
    """What `render_architecture` found and wrote.

    Attributes:
        architecture: The described network.
        location: Where the plans were found (and the other candidates).
        outputs: ``"overview"``, ``"detailed"``, ``"overview_vector"``, ``"detailed_vector"`` -> file.
    """

    architecture: Architecture
    location: PlansLocation
    outputs: dict[str, Path]


def render_architecture(
    target: str | Path,
    *,
    configuration: str = "3d_fullres",
    search_roots: Sequence[Path] = (),
    output: Path | None = None,
    detailed_output: Path | None = None,
    vector_output: Path | None = None,
    detailed_vector_output: Path | None = None,
    default_dir: Path = Path("outputs/figures/architecture"),
    dpi: int = 150,
    overwrite: bool = False,
) -> ArchResult:
    """Find the plans, describe one configuration and write the overview and detailed figures.

    Args:
        target: Plans file, folder, dataset id or name (see `segkit.viz.arch.locate_plans`).
        configuration: Configuration key.
        search_roots: nnUNet_results and nnUNet_preprocessed, searched for dataset ids and names.
        output: Overview figure (default ``<default_dir>/<plans>_<configuration>_overview.png``).
        detailed_output: Detailed diagram (default: ``<output stem>_detailed.png``).
        vector_output: Also write the overview as .svg or .pdf.
        detailed_vector_output: Also write the detailed diagram as .svg or .pdf.
        default_dir: Folder of the default overview file.
        dpi: Raster resolution.
        overwrite: Replace existing files.

    Raises:
        DataError: Plans not found or unreadable. ConfigError: Unknown configuration or bad suffix.
        OutputError: A file exists (without `overwrite`) or cannot be written.
    """
    from segkit.viz.arch import locate_plans, read_architecture
    from segkit.viz.export import VECTOR_SUFFIXES, check_new, check_suffix, save_figure

    location = locate_plans(target, configuration=configuration, search_roots=search_roots)
    arch = read_architecture(location.path, configuration)
    if output is None:
        output = Path(default_dir) / f"{arch.plans_name}_{configuration}_overview.png"
    if detailed_output is None:
        detailed_output = output.with_name(f"{output.stem}_detailed.png")
    planned = {"overview": check_suffix(output), "detailed": check_suffix(detailed_output)}
    if vector_output is not None:
        planned["overview_vector"] = check_suffix(vector_output, VECTOR_SUFFIXES, what="vector figure")
    if detailed_vector_output is not None:
        planned["detailed_vector"] = check_suffix(detailed_vector_output, VECTOR_SUFFIXES, what="vector figure")
    for path in planned.values():
        check_new(path, overwrite=overwrite)
    overview = overview_figure(arch)
    detailed = detailed_figure(arch)
    for key, path in planned.items():
        save_figure(overview if key.startswith("overview") else detailed, path, dpi=dpi)
    return ArchResult(arch, location, planned)
