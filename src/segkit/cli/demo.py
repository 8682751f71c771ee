"""``segkit demo``: the whole loop on a synthetic cohort, in minutes on a CPU."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from segkit.cli._common import ConfigOpt, JsonOpt, SetOpt, print_json, progress_sink, relpath, resolve, stdout
from segkit.config.models import DemoConfig
from segkit.config.models import field_description as _d


def demo(
    ctx: typer.Context,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help=_d(DemoConfig, "output_dir"))] = None,
    fast: Annotated[bool | None, typer.Option("--fast", help=_d(DemoConfig, "fast"))] = None,
    overwrite: Annotated[bool | None, typer.Option("--overwrite", help=_d(DemoConfig, "overwrite"))] = None,
    cases: Annotated[int | None, typer.Option(help=_d(DemoConfig, "cases"))] = None,
    test_cases: Annotated[int | None, typer.Option(help=_d(DemoConfig, "test_cases"))] = None,
    shape: Annotated[int | None, typer.Option(help=_d(DemoConfig, "shape"))] = None,
    stage1_epochs: Annotated[int | None, typer.Option(help=_d(DemoConfig, "stage1_epochs"))] = None,
    stage2_epochs: Annotated[int | None, typer.Option(help=_d(DemoConfig, "stage2_epochs"))] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help=_d(DemoConfig, "backend"))] = None,
    epochs: Annotated[int | None, typer.Option(help=_d(DemoConfig, "epochs"))] = None,
    device: Annotated[str | None, typer.Option(help=_d(DemoConfig, "device"))] = None,
    seed: Annotated[int | None, typer.Option(help=_d(DemoConfig, "seed"))] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Synthesise a cohort, train MONAI (or UMamba2) on it, predict held-out cases, score them and draw them.

    Everything lands in outputs/demo/; timings and scores measured on 2 CPU cores are in docs/benchmarks.md.
    Example: segkit demo --backend umamba2
    """
    from segkit.demo import run_demo

    cfg = resolve(
        config,
        sets,
        demo__output_dir=output_dir,
        demo__fast=fast,
        demo__overwrite=overwrite,
        demo__cases=cases,
        demo__test_cases=test_cases,
        demo__shape=shape,
        demo__stage1_epochs=stage1_epochs,
        demo__stage2_epochs=stage2_epochs,
        demo__backend=backend,
        demo__epochs=epochs,
        demo__device=device,
        demo__seed=seed,
    )
    with progress_sink(ctx) as sink:
        result = run_demo(cfg.demo, progress=sink)
    if json_out:
        print_json(
            {
                "output_dir": str(result.output_dir),
                "paths": {k: str(v) for k, v in result.paths.items()},
                "seconds": result.seconds,
                "regions": result.regions,
                "wt_dice": result.wt_dice,
                "mean_wt_dice": result.mean_wt_dice,
            }
        )
        return
    console = stdout()
    scores = Table(title=f"held-out cases ({len(result.wt_dice)}): BraTS 2024 lesion-wise and voxel metrics")
    for column in ("region", "lesion-wise Dice", "lesion-wise HD95 (mm)", "voxel Dice"):
        scores.add_column(column, justify="left" if column == "region" else "right")
    for region, values in result.regions.items():
        scores.add_row(
            region,
            _fmt(values["lesion_dice"]),
            _fmt(values["lesion_hd95"], 1),
            _fmt(values["voxel_dice"]),
        )
    console.print(scores)
    per_case = ", ".join(f"{case} {dice:.3f}" for case, dice in result.wt_dice.items())
    console.print(f"whole-tumour Dice per held-out case: {per_case} (mean {result.mean_wt_dice:.3f})")
    steps = Table(title=f"steps ({sum(result.seconds.values()):.0f} s)")
    steps.add_column("step")
    steps.add_column("seconds", justify="right")
    for name, seconds in result.seconds.items():
        steps.add_row(name, f"{seconds:.1f}")
    console.print(steps)
    where = Table(title="outputs")
    where.add_column("what")
    where.add_column("where")
    for name, path in result.paths.items():
        where.add_row(name, relpath(path))
    console.print(where)


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


app = typer.Typer()
app.command("demo")(demo)
