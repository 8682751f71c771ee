"""``segkit data``: synthesise, check and export cohorts, and write cross-validation splits."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from segkit.cli._backend_flags import (
    BackendCommand,
    NnUNetPreprocessedOpt,
    NnUNetRawOpt,
    NnUNetResultsOpt,
    resolve_with_backend,
)
from segkit.cli._common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    print_json,
    progress_sink,
    relpath,
    resolve,
    stderr,
    stdout,
)
from segkit.config.models import (
    CheckConfig,
    PlanConfig,
    PrepareConfig,
    SegkitConfig,
    SplitsConfig,
    StatsConfig,
    SynthConfig,
)
from segkit.config.models import field_description as _d

if TYPE_CHECKING:
    from segkit.data.stats import StatsResult

app = typer.Typer(
    help="Stage data: synthesise, check, export to nnU-Net, write folds.",
    no_args_is_help=True,
)

WorkersOpt = Annotated[int | None, typer.Option("--workers", "-j", help=_d(CheckConfig, "workers"))]
LayoutOpt = Annotated[
    str | None, typer.Option("--layout", help=_d(CheckConfig, "layout"), metavar="brats2024|brats2021")
]
DatasetOpt = Annotated[
    str | None, typer.Option("--dataset-id", "-d", help=_d(SegkitConfig, "dataset"), metavar="DatasetNNN_Name")
]


@app.command()
def synth(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Argument(help=_d(SynthConfig, "output"), show_default=False)] = None,
    cases: Annotated[int | None, typer.Option("--cases", "-n", help=_d(SynthConfig, "cases"))] = None,
    shape: Annotated[tuple[int, int, int] | None, typer.Option(help=_d(SynthConfig, "shape"), metavar="X Y Z")] = None,
    spacing: Annotated[
        tuple[float, float, float] | None, typer.Option(help=_d(SynthConfig, "spacing"), metavar="X Y Z")
    ] = None,
    seed: Annotated[int | None, typer.Option(help=_d(SynthConfig, "seed"))] = None,
    unlabelled: Annotated[int | None, typer.Option(help=_d(SynthConfig, "unlabelled"))] = None,
    start: Annotated[int | None, typer.Option(help=_d(SynthConfig, "start"))] = None,
    overwrite: Annotated[bool | None, typer.Option("--overwrite", help=_d(SynthConfig, "overwrite"))] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a synthetic BraTS post-treatment cohort (head anatomy, learnable tumour contrasts).

    Example: segkit data synth training_data --cases 20 --shape 96 96 96
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        synth__output=output,
        synth__cases=cases,
        synth__shape=shape,
        synth__spacing=spacing,
        synth__seed=seed,
        synth__unlabelled=unlabelled,
        synth__start=start,
        synth__overwrite=overwrite,
    )
    with progress_sink(ctx) as sink:
        result = api.synth(cfg, progress=sink)
    if json_out:
        print_json(
            {
                "root": str(result.root),
                "cases": list(result.case_ids),
                "labelled": list(result.labelled),
                "unlabelled_root": str(result.unlabelled_root) if result.unlabelled_root else None,
                "unlabelled": list(result.unlabelled),
            }
        )
        return
    n, k = len(result.case_ids), len(result.labelled)
    stdout().print(f"wrote {n} case{'s' * (n != 1)} ({k} labelled) to {relpath(result.root)}")
    if result.unlabelled_root is not None:
        u = len(result.unlabelled)
        stdout().print(
            f"wrote {u} unlabelled case{'s' * (u != 1)} to {relpath(result.unlabelled_root)} "
            "(pass it to `segkit data prepare --unlabelled-sources`)"
        )


@app.command()
def check(
    ctx: typer.Context,
    roots: Annotated[
        list[Path] | None,
        typer.Argument(help=_d(CheckConfig, "roots"), show_default=False, metavar="[ROOT]..."),
    ] = None,
    require_labels: Annotated[
        bool | None, typer.Option("--require-labels", help=_d(CheckConfig, "require_labels"))
    ] = None,
    layout: LayoutOpt = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate case folders: files present, readable, 3-D, finite, same geometry, labels 0-4.

    Exits with status 1 when anything is wrong.
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        check__roots=roots or None,
        check__require_labels=require_labels,
        check__layout=layout,
        check__workers=workers,
    )
    with progress_sink(ctx) as sink:
        report = api.check(cfg, progress=sink)
    if json_out:
        print_json(report.to_dict())
    else:
        _render_check(report)
    if not report.ok:
        raise typer.Exit(1)


def _render_check(report: object) -> None:
    from segkit.data.check import CheckReport

    assert isinstance(report, CheckReport)
    console = stdout()
    from segkit.data.layouts import BRATS2024, get_layout

    layout = "" if report.layout == BRATS2024.name else f" ({get_layout(report.layout).title})"
    table = Table(title=f"{len(report.cases)} cases in {', '.join(relpath(r) for r in report.roots)}{layout}")
    for column in ("case", "shape", "spacing (mm)", "labels", "status"):
        table.add_column(column)
    for case in report.cases:
        status = "[green]ok[/]" if case.ok else f"[red]{len(case.errors)} error(s)[/]"
        warnings = len(case.issues) - len(case.errors)
        if warnings:
            status += f" [yellow]{warnings} warning(s)[/]"
        labels = "unlabelled" if not case.labelled else ",".join(map(str, case.labels or ())) or "-"
        shape = "x".join(map(str, case.shape)) if case.shape else "-"
        spacing = " ".join(f"{s:g}" for s in case.spacing) if case.spacing else "-"
        table.add_row(case.case_id, shape, spacing, labels, status)
    console.print(table)
    for issue in report.issues:
        colour = "red" if issue.severity == "error" else "yellow"
        console.print(f"[{colour}]{issue.severity}[/]: {escape(issue.describe())}")
    for case in report.cases:
        for issue in case.issues:
            colour = "red" if issue.severity == "error" else "yellow"
            console.print(f"[{colour}]{issue.severity}[/]: {escape(case.case_id)}: {escape(issue.describe())}")
    for nested in report.nested:
        console.print(f"[dim]{escape(nested)}: a data root of its own (not checked here; check it on its own)[/]")
    if report.ok:
        console.print(f"[green]all {len(report.cases)} cases passed[/]")
    else:
        console.print(f"[red]{report.n_errors()} problem(s) found[/]")


@app.command()
def prepare(
    ctx: typer.Context,
    train_sources: Annotated[
        list[Path] | None,
        typer.Option("--train-sources", help=_d(PrepareConfig, "train_sources"), metavar="DIR...", show_default=False),
    ] = None,
    test_sources: Annotated[
        list[Path] | None,
        typer.Option("--test-sources", help=_d(PrepareConfig, "test_sources"), metavar="DIR...", show_default=False),
    ] = None,
    unlabelled_sources: Annotated[
        list[Path] | None,
        typer.Option(
            "--unlabelled-sources", help=_d(PrepareConfig, "unlabelled_sources"), metavar="DIR...", show_default=False
        ),
    ] = None,
    dataset_id: DatasetOpt = None,
    nnunet_raw: Annotated[
        Path | None, typer.Option("--nnunet-raw", help="nnUNet_raw folder (default: outputs/nnunet/nnUNet_raw).")
    ] = None,
    clean: Annotated[bool | None, typer.Option("--clean", help=_d(PrepareConfig, "clean"))] = None,
    force: Annotated[bool | None, typer.Option("--force", help=_d(PrepareConfig, "force"))] = None,
    layout: LayoutOpt = None,
    require_test_labels: Annotated[
        bool | None, typer.Option("--require-test-labels", help=_d(PrepareConfig, "require_test_labels"))
    ] = None,
    verify: Annotated[bool | None, typer.Option("--verify/--no-verify", help=_d(PrepareConfig, "verify"))] = None,
    regions: Annotated[bool | None, typer.Option("--regions", help=_d(PrepareConfig, "regions"))] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export BraTS case folders to an nnU-Net v2 raw dataset (hard links, copy fallback).

    Example: segkit data prepare --train-sources training_data training_data_additional
    --test-sources validation_data --dataset-id Dataset501_BraTSPostTx --clean
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        dataset=dataset_id,
        nnunet__raw=nnunet_raw,
        prepare__train_sources=train_sources,
        prepare__test_sources=test_sources,
        prepare__unlabelled_sources=unlabelled_sources,
        prepare__clean=clean,
        prepare__force=force,
        prepare__layout=layout,
        prepare__require_test_labels=require_test_labels,
        prepare__verify=verify,
        prepare__regions=regions,
        prepare__workers=workers,
    )
    with progress_sink(ctx) as sink:
        result = api.prepare(cfg, progress=sink)
    if json_out:
        print_json({**asdict(result), "dataset_dir": str(result.dataset_dir)})
        return
    console = stdout()
    verb = "rebuilt" if result.replaced else "wrote"
    console.print(f"{verb} {relpath(result.dataset_dir)}")
    console.print(f"  training cases: {len(result.training_cases)}")
    if result.unlabelled_cases:
        n = len(result.unlabelled_cases)
        console.print(f"  unlabelled:     {n} (in imagesTr, with all-zero placeholder labels; never in train/val)")
    console.print(f"  test cases:     {len(result.test_cases)} ({len(result.labelled_test_cases)} with labels)")
    converted = f", {result.converted} written anew (.nii compressed, labels renumbered)" if result.converted else ""
    console.print(f"  files:          {result.links} hard links, {result.copies} copies{converted}")
    for warning in result.warnings:
        stderr().print(f"[yellow]warning[/]: {escape(warning)}")
    console.print("next: segkit data splits, then segkit data plan")


@app.command()
def splits(
    dataset_id: DatasetOpt = None,
    folds: Annotated[int | None, typer.Option("--n-folds", help=_d(SplitsConfig, "folds"))] = None,
    seed: Annotated[int | None, typer.Option(help=_d(SplitsConfig, "seed"))] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help=_d(SplitsConfig, "output"))] = None,
    overwrite: Annotated[bool | None, typer.Option("--overwrite", help=_d(SplitsConfig, "overwrite"))] = None,
    nnunet_raw: Annotated[Path | None, typer.Option("--nnunet-raw", help="nnUNet_raw folder.")] = None,
    nnunet_preprocessed: Annotated[
        Path | None, typer.Option("--nnunet-preprocessed", help="nnUNet_preprocessed folder.")
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write splits_final.json exactly as nnU-Net would (5-fold KFold, seed 12345, sorted ids).

    By default it goes to nnUNet_preprocessed/<dataset>/, where nnU-Net and the MONAI backend both read it.
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        dataset=dataset_id,
        nnunet__raw=nnunet_raw,
        nnunet__preprocessed=nnunet_preprocessed,
        splits__folds=folds,
        splits__seed=seed,
        splits__output=output,
        splits__overwrite=overwrite,
    )
    result = api.splits(cfg)
    if json_out:
        print_json({"path": str(result.path), "status": result.status, "splits": result.splits})
        return
    console = stdout()
    table = Table(title=f"{len(result.splits)} folds")
    table.add_column("fold", justify="right")
    table.add_column("train", justify="right")
    table.add_column("val", justify="right")
    unlabelled = any("unlabeled" in split for split in result.splits)
    if unlabelled:
        table.add_column("unlabeled", justify="right")
    for i, split in enumerate(result.splits):
        extra = [str(len(split.get("unlabeled", [])))] if unlabelled else []
        table.add_row(str(i), str(len(split["train"])), str(len(split["val"])), *extra)
    console.print(table)
    console.print(f"{result.status}: {relpath(result.path)}")


PlanBackendOpt = Annotated[str | None, typer.Option("--backend", "-b", help=_d(PlanConfig, "backend"))]


@app.command(cls=BackendCommand.of("plan"))
def plan(
    ctx: typer.Context,
    backend: PlanBackendOpt = None,
    dataset_id: DatasetOpt = None,
    nnunet_raw: NnUNetRawOpt = None,
    nnunet_preprocessed: NnUNetPreprocessedOpt = None,
    nnunet_results: NnUNetResultsOpt = None,
    configurations: Annotated[
        list[str] | None,
        typer.Option("--configurations", help=_d(PlanConfig, "configurations"), metavar="NAME...", show_default=False),
    ] = None,
    verify_dataset_integrity: Annotated[
        bool | None,
        typer.Option("--verify-dataset-integrity", help=_d(PlanConfig, "verify_dataset_integrity")),
    ] = None,
    num_processes: Annotated[
        int | None, typer.Option("--num-processes", "-j", help=_d(PlanConfig, "num_processes"))
    ] = None,
    clean: Annotated[bool | None, typer.Option("--clean", help=_d(PlanConfig, "clean"))] = None,
    preprocess: Annotated[
        bool | None, typer.Option("--preprocess/--no-preprocessing", help=_d(PlanConfig, "preprocess"))
    ] = None,
    gpu_memory_target: Annotated[
        float | None, typer.Option("--gpu-memory-target", help=_d(PlanConfig, "gpu_memory_target"))
    ] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Plan and preprocess a prepared dataset with nnU-Net (fingerprint, plans, preprocessed data).

    Examples: segkit data plan --planner resenc-m --configurations 3d_fullres --verify-dataset-integrity;
    segkit data plan --backend umamba2 -d 501 (adds the 3d_fullres_umamba2 configuration)
    """
    from segkit import api

    cfg = resolve_with_backend(
        ctx,
        config,
        sets,
        None,
        "plan",
        {
            "plan.backend": backend,
            "dataset": dataset_id,
            "nnunet.raw": nnunet_raw,
            "nnunet.preprocessed": nnunet_preprocessed,
            "nnunet.results": nnunet_results,
            "plan.configurations": configurations,
            "plan.verify_dataset_integrity": verify_dataset_integrity,
            "plan.num_processes": num_processes,
            "plan.clean": clean,
            "plan.preprocess": preprocess,
            "plan.gpu_memory_target": gpu_memory_target,
        },
    )
    with progress_sink(ctx) as sink:
        result = api.plan(cfg, progress=sink)
    if json_out:
        print_json(
            {
                "plans_file": str(result.plans_file),
                "preprocessed": list(result.configurations),
                "available": list(result.details.get("available", [])),
                "log": str(result.log_file),
            }
        )
        return
    console = stdout()
    console.print(f"plans: {relpath(result.plans_file) if result.plans_file else '-'}")
    console.print(f"  configurations in the plans: {', '.join(result.details.get('available', []))}")
    console.print(f"  preprocessed: {', '.join(result.configurations) or 'none'}")
    console.print(f"  nnU-Net log: {relpath(result.log_file) if result.log_file else '-'}")


@app.command()
def stats(
    ctx: typer.Context,
    roots: Annotated[
        list[Path] | None,
        typer.Argument(help=_d(StatsConfig, "roots"), show_default=False, metavar="[ROOT]..."),
    ] = None,
    cache: Annotated[bool | None, typer.Option("--cache/--no-cache", help=_d(StatsConfig, "cache"))] = None,
    recompute: Annotated[bool | None, typer.Option("--recompute", help=_d(StatsConfig, "recompute"))] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help=_d(StatsConfig, "cache_dir"))] = None,
    bins: Annotated[int | None, typer.Option("--bins", help=_d(StatsConfig, "bins"))] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Cohort statistics: shapes, spacings, intensity percentiles, label volumes, files missing.

    The same numbers as the Dataset tab of `segkit viz stats`, cached under outputs/statistics_cache/.
    Example: segkit data stats training_data validation_data --json
    """
    from segkit import api

    cfg = resolve(
        config,
        sets,
        stats__roots=roots or None,
        stats__cache=cache,
        stats__recompute=recompute,
        stats__cache_dir=cache_dir,
        stats__bins=bins,
        stats__workers=workers,
    )
    with progress_sink(ctx) as sink:
        result = api.data_stats(cfg, progress=sink)
    if json_out:
        print_json(result.to_dict())
        return
    _render_stats(result)


def _render_stats(result: StatsResult) -> None:
    summary = result.summary
    console = stdout()
    where = f" ({relpath(result.cache_path)})" if result.cache_path else ""
    console.print(
        f"{summary['cases']} cases ({summary['labelled']} labelled) in "
        f"{', '.join(relpath(r) for r in result.stats.roots)}; {result.source}{where}"
    )
    geometry = Table(title="geometry")
    for column in ("shape", "cases", "spacing (mm)", "cases "):
        geometry.add_column(column, justify="right" if column.startswith("cases") else "left")
    shapes, spacings = list(summary["shapes"].items()), list(summary["spacings"].items())
    for i in range(max(len(shapes), len(spacings))):
        shape, n_shape = shapes[i] if i < len(shapes) else ("", "")
        spacing, n_spacing = spacings[i] if i < len(spacings) else ("", "")
        geometry.add_row(shape, str(n_shape), spacing, str(n_spacing))
    console.print(geometry)
    intensity = Table(title="intensity over non-zero voxels (median over cases)")
    keys = ("p0.5", "p5", "p50", "p95", "p99.5", "mean")
    for column in ("modality", *keys):
        intensity.add_column(column, justify="left" if column == "modality" else "right")
    for modality, values in summary["intensity"].items():
        intensity.add_row(modality, *(f"{values[k]['median']:.4g}" for k in keys))
    console.print(intensity)
    volumes = Table(title=f"label volumes (ml) over {summary['labelled']} labelled cases")
    for column in ("label", "present in", "min", "median", "mean", "max"):
        volumes.add_column(column, justify="left" if column == "label" else "right")
    for name, d in summary["label_volumes"].items():
        cells = [f"{d[k]:.3g}" if k in d else "-" for k in ("min", "median", "mean", "max")]
        volumes.add_row(name, str(d["present"]), *cells)
    console.print(volumes)
    for problem in summary["problems"]:
        missing = ", ".join(problem["missing"])
        line = f"[yellow]{problem['case']}[/]: missing {missing}" if missing else f"[yellow]{problem['case']}[/]"
        console.print(line)
        for error in problem["errors"]:
            console.print(f"  [red]{escape(str(error))}[/]")
