"""Child process that drives nnU-Net v2 through its Python API (``python -m`` this module).

The parent (`segkit.backends.nnunet.backend`) starts it with the ``nnUNet_*`` variables in its
environment, so nnU-Net sees its folders from the first import. Everything nnU-Net prints goes to the
run's log file; this module reports progress as JSON events (see `segkit.backends._process`).

A backend built on the nnU-Net adapter may run this worker as it is, or a module of its own that ends
with ``worker_main(HANDLERS)`` (adding or replacing handlers). Every payload names the backend's
``network_modules``, which are imported before nnU-Net runs.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segkit.backends._process import Emit, worker_main
from segkit.errors import BackendError

# Fingerprint: nnU-Net samples 1e8 / n_cases foreground voxels per case and channel for CT
# normalisation statistics. On small datasets that is millions of samples per case pickled through a
# process pool (40 s for six 32^3 cases); segkit caps it at 1e5 per case, which changes nothing for
# datasets of 1000+ cases and nothing at all for MRI, whose z-score normalisation ignores these numbers.
MAX_FOREGROUND_SAMPLES_PER_CASE = 100_000


def _dataset_id(name: str) -> int:
    return int(name[len("Dataset") : len("Dataset") + 3])


def import_network_modules(payload: dict[str, Any]) -> None:
    """Import the backend's network modules, so that a broken one fails here in one line.

    Raises:
        BackendError: A module cannot be imported.
    """
    for module in payload.get("network_modules") or ():
        try:
            importlib.import_module(module)
        except Exception as err:
            msg = f"network module {module} cannot be imported ({type(err).__name__}: {err})"
            raise BackendError(msg) from err


def plan(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Fingerprint and plan one dataset (the parent edits the plans, then asks for `preprocess`)."""
    import nnunetv2
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
    )
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    import_network_modules(payload)

    class CappedFingerprintExtractor(DatasetFingerprintExtractor):
        def __init__(self, dataset_name_or_id: Any, num_processes: int = 8, verbose: bool = False) -> None:
            super().__init__(dataset_name_or_id, num_processes, verbose)
            n_cases = max(1, len(self.dataset))
            default = float(getattr(self, "num_foreground_voxels_for_intensitystats", 1e8))
            self.num_foreground_voxels_for_intensitystats = min(default, MAX_FOREGROUND_SAMPLES_PER_CASE * n_cases)

    dataset_id = _dataset_id(payload["dataset"])
    n_proc = int(payload["num_processes"])
    emit("stage", name="fingerprint" + (" + integrity check" if payload["verify"] else ""))
    extract_fingerprint_dataset(
        dataset_id,
        CappedFingerprintExtractor,
        num_processes=n_proc,
        check_dataset_integrity=bool(payload["verify"]),
        clean=bool(payload["clean"]),
        verbose=False,
        show_progress_bar=False,
    )
    emit("stage", name="planning")
    planner = recursive_find_python_class(
        str(Path(nnunetv2.__path__[0]) / "experiment_planning"),
        payload["planner"],
        current_module="nnunetv2.experiment_planning",
    )
    if planner is None:
        msg = f"nnU-Net planner {payload['planner']!r} not found"
        raise BackendError(msg, hint="use --planner default, resenc-m, resenc-l or resenc-xl")
    _, plans_identifier = plan_experiment_dataset(
        dataset_id, planner, gpu_memory_target_in_gb=payload.get("gpu_memory_target_gb"), overwrite_plans_name=None
    )
    if payload.get("plans") and plans_identifier != payload["plans"]:
        msg = f"planner {payload['planner']} wrote plans {plans_identifier}, not {payload['plans']}"
        raise BackendError(msg, hint="set the plans option to the planner's identifier")
    plans_path = Path(payload["preprocessed_dir"]) / f"{plans_identifier}.json"
    return {"plans_file": str(plans_path)}


def preprocess(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Preprocess configurations of planned (and possibly edited) plans."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset

    import_network_modules(payload)
    dataset_id = _dataset_id(payload["dataset"])
    done: list[str] = []
    for configuration in payload["configurations"]:
        emit("stage", name=f"preprocessing {configuration}")
        preprocess_dataset(
            dataset_id,
            payload["plans"],
            [configuration],
            [int(payload["num_processes"])],
            show_progress_bar=False,
        )
        done.append(configuration)
    return {"preprocessed": done}


def _check_pretrained(trainer: Any, path: str) -> None:
    """Refuse weights that do not fit the network, with one line instead of nnU-Net's assertion."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        msg = f"{path}: cannot read checkpoint ({type(err).__name__}: {err})"
        raise BackendError(msg) from err
    weights = saved.get("network_weights") if isinstance(saved, dict) else None
    if not isinstance(weights, dict):
        msg = f"{path}: not an nnU-Net checkpoint (no network_weights)"
        raise BackendError(msg)
    init = saved.get("init_args", {}) if isinstance(saved, dict) else {}
    origin = ""
    if isinstance(init, dict) and isinstance(init.get("plans"), dict):
        origin = f" (written for plans {init['plans'].get('plans_name')}, configuration {init.get('configuration')})"
    if not trainer.was_initialized:
        trainer.initialize()
    for key, value in trainer.network.state_dict().items():
        if ".seg_layers." in key:
            continue
        if key not in weights:
            msg = f"{path}: does not fit this network: parameter {key} is missing{origin}"
            raise BackendError(msg)
        if tuple(weights[key].shape) != tuple(value.shape):
            msg = (
                f"{path}: does not fit this network: {key} has shape {tuple(weights[key].shape)}, "
                f"the network expects {tuple(value.shape)}{origin}"
            )
            raise BackendError(msg)


def _hook_progress(trainer: Any, emit: Emit) -> None:
    """Report epochs and iterations by wrapping the trainer's own hooks (no subclass needed)."""
    import numpy as np

    start_epoch, end_epoch, step = trainer.on_epoch_start, trainer.on_epoch_end, trainer.train_step

    def on_epoch_start() -> None:
        start_epoch()
        emit(
            "epoch_start",
            epoch=int(trainer.current_epoch),
            num_epochs=int(trainer.num_epochs),
            iterations=int(trainer.num_iterations_per_epoch),
        )

    def train_step(batch: Any) -> Any:
        out = step(batch)
        emit("iteration", loss=float(np.asarray(out["loss"]).mean()))
        return out

    def on_epoch_end() -> None:
        end_epoch()

        def last(key: str) -> Any:
            try:
                return trainer.logger.get_value(key, step=-1)
            except (KeyError, IndexError):
                return None

        start, end = last("epoch_start_timestamps"), last("epoch_end_timestamps")
        emit(
            "epoch_end",
            epoch=int(trainer.current_epoch) - 1,
            num_epochs=int(trainer.num_epochs),
            train_loss=_num(last("train_losses")),
            val_loss=_num(last("val_losses")),
            pseudo_dice=[_num(v) for v in (last("dice_per_class_or_region") or [])],
            ema_dice=_num(last("ema_fg_dice")),
            seconds=_num(end - start) if start is not None and end is not None else None,
        )

    trainer.on_epoch_start = on_epoch_start
    trainer.on_epoch_end = on_epoch_end
    trainer.train_step = train_step


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


PretrainedLoader = Callable[[Any, str, dict[str, Any], Emit], None]
"""``(trainer, path, payload, emit)``: load pretrained weights into a set-up trainer (raises BackendError)."""


def nnunet_pretrained(trainer: Any, path: str, payload: dict[str, Any], emit: Emit) -> None:
    """nnU-Net's own loading: every tensor but the segmentation heads must fit (checked in one line first)."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    _check_pretrained(trainer, path)
    load_pretrained_weights(trainer.network, path, verbose=True)


def train(
    payload: dict[str, Any], emit: Emit, *, load_pretrained: PretrainedLoader = nnunet_pretrained
) -> dict[str, Any]:
    """Train one fold (optionally resuming or starting from pretrained weights), then validate.

    A derived backend's worker passes its own `load_pretrained` (e.g. one that keeps the heads).
    """
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint, run_training

    from segkit.backends.nnunet.trainers import find_trainer

    import_network_modules(payload)
    if payload.get("base_trainer"):
        # A wrong --trainer fails here in one line, not as a missing derived trainer deep inside nnU-Net.
        try:
            find_trainer(payload["base_trainer"])
        except RuntimeError as err:
            raise BackendError(str(err), hint="check --trainer (and the backend's trainer folders)") from err
    fold: Any = payload["fold"]
    device = torch.device(payload["device"])
    if payload["num_gpus"] > 1:
        if payload["pretrained_weights"] and load_pretrained is not nnunet_pretrained:
            msg = "pretrained weights with --num-gpus > 1 are loaded by nnU-Net's own loader, not this backend's"
            raise BackendError(msg, hint="start from the weights on one GPU, or train without --pretrained-weights")
        # nnU-Net's own DDP path spawns one process per GPU; epochs are reported in its log only.
        emit("stage", name=f"training on {payload['num_gpus']} GPUs (progress in the log)")
        emit("training")
        run_training(
            payload["dataset"],
            payload["configuration"],
            fold,
            trainer_class_name=payload["trainer"],
            plans_identifier=payload["plans"],
            pretrained_weights=payload["pretrained_weights"],
            num_gpus=payload["num_gpus"],
            export_validation_probabilities=payload["npz"],
            continue_training=payload["continue_training"],
            device=device,
        )
        return {"fold_dir": payload["fold_dir"]}

    emit("stage", name="setting up")
    trainer = get_trainer_from_args(
        payload["dataset"],
        payload["configuration"],
        fold,
        payload["trainer"],
        payload["plans"],
        payload["continue_training"],
        device=device,
    )
    resumed_from = None
    if payload["continue_training"]:
        for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
            if (Path(trainer.output_folder) / name).is_file():
                resumed_from = name
                break
    if payload["pretrained_weights"]:
        if not trainer.was_initialized:
            trainer.initialize()
        load_pretrained(trainer, payload["pretrained_weights"], payload, emit)
    else:
        try:
            maybe_load_checkpoint(trainer, payload["continue_training"], False, None)
        except KeyError as err:
            # `segkit model slim` keeps only what prediction needs: no optimizer state to resume from
            msg = f"{resumed_from}: cannot resume from it, it has no {err.args[0]} (a slim checkpoint?)"
            raise BackendError(
                msg, hint="start a new training from its weights with --pretrained-weights (and --overwrite)"
            ) from err
    if resumed_from:
        emit("resumed", checkpoint=resumed_from, epoch=int(trainer.current_epoch))
    _hook_progress(trainer, emit)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    emit("training")
    trainer.run_training()
    result: dict[str, Any] = {"fold_dir": str(trainer.output_folder), "model_dir": str(trainer.output_folder_base)}
    if payload["final_validation"]:
        emit("stage", name="final validation")
        trainer.perform_actual_validation(payload["npz"])
        summary = Path(trainer.output_folder) / "validation" / "summary.json"
        if summary.is_file():
            result["validation_dice"] = float(json.loads(summary.read_text())["foreground_mean"]["Dice"])
    return result


def _check_checkpoint_origin(path: Path, payload: dict[str, Any]) -> None:
    """nnU-Net's predictor trusts the configuration stored in each checkpoint; make sure it is ours."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        msg = f"{path}: cannot read checkpoint ({type(err).__name__}: {err})"
        raise BackendError(msg) from err
    init = saved.get("init_args", {}) if isinstance(saved, dict) else {}
    configuration = init.get("configuration")
    plans = init.get("plans", {}).get("plans_name") if isinstance(init.get("plans"), dict) else None
    if configuration not in (None, payload["configuration"]) or plans not in (None, payload["plans"]):
        msg = (
            f"{path}: written by plans {plans} / configuration {configuration}, "
            f"not {payload['plans']} / {payload['configuration']}"
        )
        raise BackendError(msg)


def predict(payload: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Predict a list of cases with one fold or an ensemble of folds."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    import_network_modules(payload)
    device = torch.device(payload["device"])
    predictor = nnUNetPredictor(
        tile_step_size=float(payload["tile_step_size"]),
        use_gaussian=True,
        use_mirroring=bool(payload["use_mirroring"]),
        perform_everything_on_device=device.type == "cuda",
        device=device,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    folds = tuple(payload["folds"])
    for fold in folds:
        _check_checkpoint_origin(Path(payload["model_dir"]) / f"fold_{fold}" / payload["checkpoint"], payload)
    predictor.initialize_from_trained_model_folder(
        payload["model_dir"], use_folds=folds, checkpoint_name=payload["checkpoint"]
    )
    if payload.get("mirror_axes") is not None:
        dims = len(predictor.configuration_manager.patch_size)
        axes = tuple(int(a) for a in payload["mirror_axes"])
        if any(a >= dims for a in axes):
            msg = f"--mirror-axes {' '.join(map(str, axes))}: the model has {dims} spatial axes (0-{dims - 1})"
            raise BackendError(msg)
        predictor.allowed_mirroring_axes = axes
    logits = predictor.predict_logits_from_preprocessed_data

    def counted(data: Any) -> Any:
        out = logits(data)
        emit("case_done")
        return out

    predictor.predict_logits_from_preprocessed_data = counted
    emit("stage", name="predicting")
    n_proc = int(payload["num_processes"])
    if n_proc == 1:
        # Pools of spawned processes each import torch and nnU-Net (~10 s); with one process the
        # sequential path is faster and keeps memory flat.
        predictor.predict_from_files_sequential(
            payload["inputs"],
            payload["outputs"],
            save_probabilities=bool(payload["save_probabilities"]),
            overwrite=True,
        )
    else:
        predictor.predict_from_files(
            payload["inputs"],
            payload["outputs"],
            save_probabilities=bool(payload["save_probabilities"]),
            overwrite=True,
            num_processes_preprocessing=n_proc,
            num_processes_segmentation_export=n_proc,
        )
    return {"n": len(payload["inputs"])}


HANDLERS = {"plan": plan, "preprocess": preprocess, "train": train, "predict": predict}
"""The actions of this worker (a derived backend's worker may extend them)."""

if __name__ == "__main__":
    worker_main(HANDLERS)
