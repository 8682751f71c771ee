"""``segkit infer``: predict label maps with a trained backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segkit.cli._backend_flags import (
    BackendCommand,
    BackendOpt,
    DatasetOpt,
    DeviceOpt,
    FoldOpt,
    NnUNetPreprocessedOpt,
    NnUNetRawOpt,
    NnUNetResultsOpt,
    OptionOpt,
    parse_folds,
    resolve_with_backend,
)
from segkit.cli._common import ConfigOpt, JsonOpt, SetOpt, print_json, progress_sink, relpath, stdout
from segkit.config.models import InferConfig
from segkit.config.models import field_description as _d


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
    nnunet_raw: NnUNetRawOpt = None,
    nnunet_preprocessed: NnUNetPreprocessedOpt = None,
    nnunet_results: NnUNetResultsOpt = None,
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
    options: OptionOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Predict <case>.nii.gz label maps for BraTS cases (several folds: ensemble).

    Backend flags come from each installed backend's options; `segkit infer --backend X --help` shows X's.

    Examples: segkit infer --backend nnunet -i validation_data -o outputs/predictions/nnunet --fold 0 1 2 3 4;
    segkit infer --backend monai -i validation_data --fold all -o outputs/monai_ft/predictions/fold{fold}
    """
    from segkit import api

    common = {
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
        "nnunet.raw": nnunet_raw,
        "nnunet.preprocessed": nnunet_preprocessed,
        "nnunet.results": nnunet_results,
    }
    cfg = resolve_with_backend(ctx, config, sets, options, "infer", common)
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


app = typer.Typer()
app.command("infer", cls=BackendCommand.of("infer"))(infer)
