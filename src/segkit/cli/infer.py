"""``segkit infer``: predict label maps with a trained backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segkit.backends.nnunet.options import NnUNetOptions
from segkit.cli._backend_flags import parse_folds, resolve_with_backend
from segkit.cli._common import ConfigOpt, JsonOpt, SetOpt, print_json, progress_sink, relpath, stdout
from segkit.cli.train import (
    MONAI,
    NNUNET,
    AmpOpt,
    BackendOpt,
    ConfigurationOpt,
    DatasetOpt,
    DeviceOpt,
    FoldOpt,
    OptionOpt,
    OutputRootOpt,
    PatchSizeOpt,
    PlannerOpt,
    PlansOpt,
    ProcessesOpt,
    SpacingOpt,
    SplitJsonOpt,
    TrainerOpt,
    _mo,
)
from segkit.config.models import InferConfig
from segkit.config.models import field_description as _d


def _nn(name: str) -> str:
    return _d(NnUNetOptions, name)


def infer(
    ctx: typer.Context,
    backend: BackendOpt = None,
    inputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--input",
            "-i",
            "--data-root",
            help=_d(InferConfig, "input") + " --data-root is the MONAI script's name for it.",
            metavar="PATH...",
            show_default=False,
        ),
    ] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help=_d(InferConfig, "output"))] = None,
    fold: FoldOpt = None,
    device: DeviceOpt = None,
    dataset_id: DatasetOpt = None,
    ensemble: Annotated[bool | None, typer.Option("--ensemble", help=_d(InferConfig, "ensemble"))] = None,
    save_probabilities: Annotated[
        bool | None, typer.Option("--save-probabilities", help=_d(InferConfig, "save_probabilities"))
    ] = None,
    skip_existing: Annotated[
        bool | None, typer.Option("--skip-existing", help=_d(InferConfig, "skip_existing"))
    ] = None,
    run_evaluation: Annotated[
        bool | None, typer.Option("--run-evaluation", help=_d(InferConfig, "run_evaluation"))
    ] = None,
    ground_truth: Annotated[Path | None, typer.Option(help=_d(InferConfig, "ground_truth"))] = None,
    evaluation_output: Annotated[Path | None, typer.Option(help=_d(InferConfig, "evaluation_output"))] = None,
    configuration: ConfigurationOpt = None,
    planner: PlannerOpt = None,
    plans: PlansOpt = None,
    trainer: TrainerOpt = None,
    checkpoint: Annotated[
        str | None,
        typer.Option(
            help="nnU-Net: " + _nn("checkpoint") + " MONAI: " + _mo("checkpoint"),
            rich_help_panel="nnU-Net and MONAI backends",
        ),
    ] = None,
    tile_step_size: Annotated[
        float | None,
        typer.Option("--tile-step-size", "--step-size", help=_nn("tile_step_size"), rich_help_panel=NNUNET),
    ] = None,
    tta: Annotated[
        bool | None, typer.Option("--tta/--disable-tta", help=_nn("test_time_mirroring"), rich_help_panel=NNUNET)
    ] = None,
    num_processes: ProcessesOpt = None,
    dataset_json: Annotated[Path | None, typer.Option(help=_mo("dataset_json"), rich_help_panel=MONAI)] = None,
    split_json: SplitJsonOpt = None,
    output_root: OutputRootOpt = None,
    spacing: SpacingOpt = None,
    patch_size: PatchSizeOpt = None,
    roi_size: Annotated[
        tuple[int, int, int] | None,
        typer.Option(help=_mo("roi_size"), metavar="X Y Z", rich_help_panel=MONAI),
    ] = None,
    sw_batch_size: Annotated[int | None, typer.Option(help=_mo("sw_batch_size"), rich_help_panel=MONAI)] = None,
    sw_overlap: Annotated[float | None, typer.Option(help=_mo("sw_overlap"), rich_help_panel=MONAI)] = None,
    amp: AmpOpt = None,
    bundle_name: Annotated[str | None, typer.Option(help=_mo("bundle_name"), rich_help_panel=MONAI)] = None,
    bundle_dir: Annotated[Path | None, typer.Option(help=_mo("bundle_dir"), rich_help_panel=MONAI)] = None,
    options: OptionOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Predict <case>.nii.gz label maps for BraTS cases (several folds: ensemble).

    Examples: segkit infer --backend nnunet -i validation_data -o outputs/predictions/nnunet --fold 0 1 2 3 4;
    segkit infer --backend monai -i validation_data --fold all -o outputs/monai_ft/predictions/fold{fold}
    """
    from segkit import api

    cfg = resolve_with_backend(
        config,
        sets,
        options,
        "infer",
        {
            "infer.backend": backend,
            "infer.input": inputs,
            "infer.output": output_dir,
            "infer.fold": parse_folds(fold),
            "infer.device": device,
            "infer.ensemble": ensemble,
            "infer.save_probabilities": save_probabilities,
            "infer.skip_existing": skip_existing,
            "infer.run_evaluation": run_evaluation,
            "infer.ground_truth": ground_truth,
            "infer.evaluation_output": evaluation_output,
            "dataset": dataset_id,
        },
        {
            "configuration": configuration,
            "planner": planner,
            "plans": plans,
            "trainer": trainer,
            "checkpoint": checkpoint,
            "tile_step_size": tile_step_size,
            "tta": tta,
            "num_processes": num_processes,
            "dataset_json": dataset_json,
            "split_json": split_json,
            "output_root": output_root,
            "spacing": spacing,
            "patch_size": patch_size,
            "roi_size": roi_size,
            "sw_batch_size": sw_batch_size,
            "sw_overlap": sw_overlap,
            "amp": amp,
            "bundle_name": bundle_name,
            "bundle_dir": bundle_dir,
        },
    )
    with progress_sink(ctx) as sink:
        results = api.predict(cfg, progress=sink)
    if json_out:
        print_json(
            [
                {
                    "output_dir": str(r.output_dir),
                    "files": [str(p) for p in r.files],
                    "skipped": list(r.skipped),
                    "evaluation": r.evaluation.summary if r.evaluation is not None else None,
                }
                for r in results
            ]
        )
        return
    console = stdout()
    for result in results:
        console.print(f"wrote {len(result.files)} prediction(s) to {relpath(result.output_dir)}")
        if result.skipped:
            console.print(f"kept {len(result.skipped)} existing prediction(s)")
        if result.evaluation is not None:
            from segkit.cli.eval import render_summary

            render_summary(result.evaluation.summary)
