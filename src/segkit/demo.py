"""`segkit demo`: the whole loop on a synthetic cohort, on CPU, in minutes.

Synthesise a training cohort and held-out cases -> export them as an nnU-Net dataset -> write nnU-Net's
folds -> train the MONAI backend (a small SegResNet, two stages, fold 0) -> predict the held-out cases
-> score them (BraTS 2024 lesion-wise and nnU-Net voxel metrics) -> render a static panel and a GIF.
With ``--backend umamba2`` the training is the UMamba2 backend's instead: nnU-Net plans the dataset
(residual-encoder planner, a narrow ``3d_fullres_umamba2`` network), trains fold 0 and predicts.
Every step is the library function behind the matching command, run with an explicit config, so the
demo doubles as a worked example of the API. This module sits on top of `segkit.api` (which does not
import it): ``segkit demo`` calls `run_demo` directly.

No pretrained bundle is available offline, so the SegResNet starts from random weights; stage 1 still
trains the decoder and head with the encoder frozen before stage 2 trains everything, exactly as a
bundle fine-tuning would. The recipe (ten 48^3 cases, 32^3 crops, learning rate 3e-3, 5 + 45 epochs) was
chosen by measurement against the demo's target (under 6 minutes on two CPU cores, held-out whole-tumour
Dice of at least 0.7); the figures are in ``docs/benchmarks.md`` (``benchmarks/bench_demo.py``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from segkit.errors import OutputError
from segkit.progress import NullProgress, ProgressSink

if TYPE_CHECKING:
    from segkit.config.models import DemoConfig, SegkitConfig

DEMO_DATASET = "Dataset900_SegkitDemo"
DEMO_MARKER = ".segkit-demo"
"""File that marks an output folder as the demo's own, so a re-run may replace it."""

T = TypeVar("T")

# UMamba2's schedule, chosen by measurement against the demo's target (at most 10 minutes on two CPU
# cores, held-out whole-tumour Dice of at least 0.7; docs/benchmarks.md): nnU-Net's planner gives the
# 48^3 cohort 4 stages; a narrow network keeps an iteration cheap on a CPU (measured: median 512 s,
# WT Dice 0.93 over 3 runs).
UMAMBA2_EPOCHS = 10
UMAMBA2_ITERATIONS = 30
UMAMBA2_FEATURES = (16, 32, 64, 128)
UMAMBA2_HEADDIM = 32
UMAMBA2_BATCH = 2


@dataclass(frozen=True)
class DemoRecipe:
    """Sizes and schedule of one demo run."""

    cases: int
    test_cases: int
    shape: int
    patch: int
    stage1_epochs: int
    stage2_epochs: int
    epochs: int = 0
    iterations_per_epoch: int = 0
    features_per_stage: tuple[int, ...] = ()
    """UMamba2 only: nnU-Net epochs, iterations per epoch and the network's width per stage."""


FULL = DemoRecipe(cases=10, test_cases=4, shape=48, patch=32, stage1_epochs=5, stage2_epochs=45)
FAST = DemoRecipe(cases=6, test_cases=2, shape=32, patch=32, stage1_epochs=1, stage2_epochs=1)
"""``--fast``: every step for real, but too short to learn anything (a smoke run)."""

UMAMBA2_FULL = DemoRecipe(
    cases=10,
    test_cases=4,
    shape=48,
    patch=0,
    stage1_epochs=0,
    stage2_epochs=0,
    epochs=UMAMBA2_EPOCHS,
    iterations_per_epoch=UMAMBA2_ITERATIONS,
    features_per_stage=UMAMBA2_FEATURES,
)
UMAMBA2_FAST = DemoRecipe(
    cases=6,
    test_cases=2,
    shape=32,
    patch=0,
    stage1_epochs=0,
    stage2_epochs=0,
    epochs=1,
    iterations_per_epoch=2,
    features_per_stage=UMAMBA2_FEATURES[:3],
)


@dataclass
class DemoResult:
    """Where everything went, how long each step took and how good the predictions are.

    Attributes:
        output_dir: The demo folder.
        paths: Named outputs (data roots, dataset, model, predictions, reports, figures).
        seconds: Wall time per step.
        regions: Region -> {"lesion_dice", "lesion_hd95", "voxel_dice"} means over the held-out cases.
        wt_dice: Held-out case -> whole-tumour voxel Dice.
        recipe: The sizes and schedule used.
    """

    output_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    regions: dict[str, dict[str, float]] = field(default_factory=dict)
    wt_dice: dict[str, float] = field(default_factory=dict)
    recipe: DemoRecipe = FULL

    @property
    def mean_wt_dice(self) -> float:
        """Mean whole-tumour voxel Dice over the held-out cases."""
        return sum(self.wt_dice.values()) / max(len(self.wt_dice), 1)


def recipe_of(cfg: DemoConfig) -> DemoRecipe:
    """The recipe for a demo config: the full or fast one of its backend, with any explicit overrides."""
    if cfg.backend == "umamba2":
        base = UMAMBA2_FAST if cfg.fast else UMAMBA2_FULL
        return DemoRecipe(
            cases=cfg.cases or base.cases,
            test_cases=cfg.test_cases or base.test_cases,
            shape=cfg.shape or base.shape,
            patch=0,
            stage1_epochs=0,
            stage2_epochs=0,
            epochs=cfg.epochs or base.epochs,
            iterations_per_epoch=base.iterations_per_epoch,
            features_per_stage=base.features_per_stage,
        )
    base = FAST if cfg.fast else FULL
    return DemoRecipe(
        cases=cfg.cases or base.cases,
        test_cases=cfg.test_cases or base.test_cases,
        shape=cfg.shape or base.shape,
        patch=min(base.patch, cfg.shape or base.shape),
        stage1_epochs=base.stage1_epochs if cfg.stage1_epochs is None else cfg.stage1_epochs,
        stage2_epochs=base.stage2_epochs if cfg.stage2_epochs is None else cfg.stage2_epochs,
    )


def _monai_flags(out: Path, recipe: DemoRecipe, seed: int) -> dict[str, Any]:
    return {
        "backends.monai.bundle_name": "none",
        "backends.monai.network_overrides": {"init_filters": 8, "dropout_prob": 0.0},
        "backends.monai.output_root": out / "monai",
        "backends.monai.stage1_epochs": recipe.stage1_epochs,
        "backends.monai.stage2_epochs": recipe.stage2_epochs,
        "backends.monai.stage1_lr": 3e-3,
        "backends.monai.stage2_lr": 3e-3,
        "backends.monai.patch_size": [recipe.patch] * 3,
        "backends.monai.batch_size": 2,
        "backends.monai.num_samples": 4,
        "backends.monai.best_metric": "wt_dice",
        "backends.monai.save_checkpoint_frequency": 0,
        "backends.monai.sw_batch_size": 1,
        "backends.monai.seed": seed,
    }


def _umamba2_flags(recipe: DemoRecipe) -> dict[str, Any]:
    return {
        "plan.backend": "umamba2",
        "plan.num_processes": 1,
        "backends.umamba2.planner": "resenc-m",
        "backends.umamba2.features_per_stage": list(recipe.features_per_stage),
        "backends.umamba2.headdim": UMAMBA2_HEADDIM,
        "backends.umamba2.batch_size": UMAMBA2_BATCH,
        "backends.umamba2.epochs": recipe.epochs,
        "backends.umamba2.iterations_per_epoch": recipe.iterations_per_epoch,
        "backends.umamba2.final_validation": False,
        "backends.umamba2.data_augmentation_processes": 0,
        "backends.umamba2.num_processes": 1,
        # 8 mirrored passes per window cost more than they gain on the demo's symmetric phantoms
        "backends.umamba2.test_time_mirroring": False,
        "backends.umamba2.kernel": "torch",
    }


def demo_config(
    out: Path, recipe: DemoRecipe, *, device: str, seed: int, showcase: str, backend: str = "monai"
) -> SegkitConfig:
    """The run config of every demo step (also saved as ``<out>/demo_config.yaml``).

    Args:
        out: The demo folder.
        recipe: Sizes and schedule.
        device: Resolved device.
        seed: Seed of the cohort and of training.
        showcase: The held-out case drawn in the static panel and the GIF.
        backend: ``monai`` or ``umamba2``.
    """
    from segkit.config import load_config

    data = out / "data"
    nnunet = out / "nnunet"
    predictions = out / "predictions"
    test_case = showcase
    return load_config(
        flags={
            "dataset": DEMO_DATASET,
            "nnunet.raw": nnunet / "nnUNet_raw",
            "nnunet.preprocessed": nnunet / "nnUNet_preprocessed",
            "nnunet.results": nnunet / "nnUNet_results",
            "prepare.train_sources": [data / "training_data"],
            "prepare.test_sources": [data / "validation_data"],
            "prepare.require_test_labels": True,
            "prepare.workers": 1,
            "train.backend": backend,
            "train.fold": 0,
            "train.device": device,
            "infer.backend": backend,
            "infer.fold": 0,
            "infer.device": device,
            "infer.input": [data / "validation_data"],
            "infer.output": predictions,
            **(_umamba2_flags(recipe) if backend == "umamba2" else _monai_flags(out, recipe, seed)),
            "eval.gt": data / "validation_data",
            "eval.pred": predictions,
            "eval.output_dir": out / "evaluation",
            "eval.skip_nnunet": True,
            "eval.workers": 1,
            "eval.pretty": True,
            "viz.static.case_dir": data / "validation_data" / test_case,
            "viz.static.pred": predictions / f"{test_case}.nii.gz",
            "viz.static.output": out / "figures" / f"{test_case}_prediction.png",
            "viz.gif.root": data / "validation_data",
            "viz.gif.case": test_case,
            "viz.gif.modality": "t2f",
            "viz.gif.overlay": True,
            "viz.gif.output_dir": out / "gifs",
            "viz.gif.workers": 1,
        }
    )


def _prepare_output(out: Path, overwrite: bool) -> None:
    """Start from an empty demo folder; only ever delete a folder an earlier demo made."""
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).is_file():
            msg = f"{out}: exists and was not made by segkit demo; refusing to replace it"
            raise OutputError(msg, hint="choose another --output-dir")
        if not overwrite:
            msg = f"{out}: holds an earlier demo run"
            raise OutputError(msg, hint="pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by segkit demo; `segkit demo --overwrite` replaces this folder\n")


def run_demo(cfg: DemoConfig, *, progress: ProgressSink | None = None) -> DemoResult:
    """Run the whole loop (see the module docstring) and return where everything is and the scores.

    Raises:
        OutputError: The output folder exists and is not an earlier demo (or `overwrite` is off).
    """
    from segkit import api
    from segkit.backends._device import resolve_device
    from segkit.config.load import dump_config
    from segkit.data.synth import write_cohort
    from segkit.io import write_text

    sink = progress or NullProgress()
    out = Path(cfg.output_dir)
    recipe = recipe_of(cfg)
    device = resolve_device(cfg.device, supported=("cpu", "cuda"))
    _prepare_output(out, cfg.overwrite)
    result = DemoResult(output_dir=out, recipe=recipe)

    def step(name: str, work: Callable[[], T]) -> T:
        sink.log(f"demo: {name}")
        started = time.perf_counter()
        value = work()
        result.seconds[name] = time.perf_counter() - started
        return value

    shape = (recipe.shape,) * 3
    data = out / "data"
    step(
        "synthesise cohort",
        lambda: (
            write_cohort(data / "training_data", cases=recipe.cases, shape=shape, seed=cfg.seed),
            write_cohort(data / "validation_data", cases=recipe.test_cases, shape=shape, seed=cfg.seed, start=100),
        ),
    )
    config = demo_config(
        out, recipe, device=device, seed=cfg.seed, showcase=_showcase(data / "validation_data"), backend=cfg.backend
    )
    write_text(out / "demo_config.yaml", dump_config(config))
    exported = step("prepare nnU-Net dataset", lambda: api.prepare(config, progress=sink))
    splits = step("write splits", lambda: api.splits(config))
    if cfg.backend == "umamba2":
        step("plan and preprocess (nnU-Net)", lambda: api.plan(config, progress=sink))
    trained = step(train_step_name(cfg.backend), lambda: api.train(config, progress=sink))
    (predicted,) = step("predict held-out cases", lambda: api.predict(config, progress=sink))
    scored = step("evaluate", lambda: api.evaluate(config, progress=sink))
    figure = step("static panel", lambda: api.viz_static(config))
    gifs = step("GIF", lambda: api.viz_gif(config, progress=sink))

    result.paths = {
        "training data": data / "training_data",
        "held-out data": data / "validation_data",
        "nnU-Net dataset": exported.dataset_dir,
        "splits": splits.path,
        "model": trained[0].checkpoint or trained[0].model_dir,
        "predictions": predicted.output_dir,
        "reports": scored.paths.combined.parent,
        "figure": figure.output or out / "figures",
        "GIF": gifs[0].path,
        "run config": out / "demo_config.yaml",
    }
    result.regions, result.wt_dice = _scores(scored)
    return result


def train_step_name(backend: str) -> str:
    """The name of the training step in `DemoResult.seconds`."""
    return f"train {'UMamba2' if backend == 'umamba2' else 'MONAI'} fold 0"


def _showcase(root: Path) -> str:
    """The held-out case to draw: the first with the most kinds of tumour label (per the synth manifest)."""
    from segkit.data.synth import SYNTH_MANIFEST
    from segkit.io import read_json

    cases = read_json(root / SYNTH_MANIFEST)["cases"]
    return max(sorted(cases), key=lambda case_id: len(cases[case_id].get("labels", [])))


def _scores(scored: Any) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Mean lesion-wise and voxel scores per region, and each case's WT voxel Dice."""
    from segkit.evaluation.reports import voxel_key

    summary = scored.summary
    voxel = summary["voxel"]["mean"]
    regions = {
        region: {
            "lesion_dice": float(stats["LesionWise_Score_Dice"]["mean"]),
            "lesion_hd95": float(stats["LesionWise_Score_HD95"]["mean"]),
            "voxel_dice": float(voxel.get(voxel_key(region), {}).get("Dice", float("nan"))),
        }
        for region, stats in summary["lesion"].items()
    }
    wt = voxel_key("WT")
    per_case = {
        case.case_id: float(case.voxel[wt]["Dice"])
        for case in scored.evaluation.scored
        if case.voxel is not None and wt in case.voxel
    }
    return regions, per_case
