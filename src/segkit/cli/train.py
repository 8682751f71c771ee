"""``segkit train``: train a backend on one or more folds."""

from __future__ import annotations

import os

import typer
from rich.table import Table

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


def train(
    ctx: typer.Context,
    backend: BackendOpt = None,
    fold: FoldOpt = None,
    device: DeviceOpt = None,
    dataset_id: DatasetOpt = None,
    nnunet_raw: NnUNetRawOpt = None,
    nnunet_preprocessed: NnUNetPreprocessedOpt = None,
    nnunet_results: NnUNetResultsOpt = None,
    options: OptionOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a backend on one or more folds (nnU-Net: results go to nnUNet_results; MONAI: to --output-root).

    Backend flags come from each installed backend's options; `segkit train --backend X --help` shows X's.

    Examples: segkit train --backend nnunet --fold 0;
    segkit train --config examples/configs/nnunet_3d_fullres.yaml --fold all;
    segkit train --backend monai --fold all --stage1-epochs 20 --stage2-epochs 30 --amp
    """
    from segkit import api

    common = {
        "train.backend": backend,
        "train.fold": parse_folds(fold),
        "train.device": device,
        "dataset": dataset_id,
        "nnunet.raw": nnunet_raw,
        "nnunet.preprocessed": nnunet_preprocessed,
        "nnunet.results": nnunet_results,
    }
    cfg = resolve_with_backend(ctx, config, sets, options, "train", common)
    with progress_sink(ctx) as sink:
        results = api.train(cfg, progress=sink)
    if int(os.environ.get("RANK", "0") or 0) > 0:
        return  # under torchrun only rank 0 reports (every rank ran the same training)
    rows = [
        {
            "fold": r.fold,
            "model_dir": str(r.model_dir),
            "checkpoint": str(r.checkpoint) if r.checkpoint else None,
            "log": str(r.log_file) if r.log_file else None,
            **dict(r.metrics),
        }
        for r in results
    ]
    if json_out:
        print_json(rows)
        return
    console = stdout()
    table = Table(title=f"{cfg.train.backend} on {cfg.dataset}")
    for column in ("fold", "checkpoint", "validation Dice", "log"):
        table.add_column(column)
    for r in results:
        dice = r.metrics.get("validation_dice")
        table.add_row(
            str(r.fold),
            relpath(r.checkpoint) if r.checkpoint else "-",
            f"{dice:.4f}" if dice is not None else "-",
            relpath(r.log_file) if r.log_file else "-",
        )
    console.print(table)
    console.print(f"model: {relpath(results[0].model_dir)}")
    parts = results[0].model_dir.name.split("__")
    if len(parts) == 3:
        # An nnU-Net model folder (<trainer>__<plans>__<configuration>): segkit's schedule overrides name
        # their own trainer class, and infer must ask for the same model.
        trainer, plans_name, configuration_name = parts
        console.print(
            f"predict with: segkit infer --backend {cfg.train.backend} --trainer {trainer} --plans {plans_name} "
            f"--configuration {configuration_name} (or the same run config)"
        )


app = typer.Typer()
app.command("train", cls=BackendCommand.of("train"))(train)
