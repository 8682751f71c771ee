"""The nnU-Net v2 backend: plan, train and predict through nnU-Net's Python API.

All nnU-Net work runs in a child process (`segkit.backends.nnunet.worker`) whose environment carries
``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from the run config, so users never
export variables and the segkit process never mutates its own environment. This module imports
neither torch nor nnunetv2; the cheap checks (`check`) run here before any child starts.

`NnUNetBackend` is also the base class of nnU-Net-based backends (see its docstring): a subclass sets
its name and options, adds trainer folders and network modules, and edits the plans after planning.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from segkit.backends._process import run_worker
from segkit.backends.base import (
    Capabilities,
    CaseImages,
    DatasetRef,
    Fold,
    PredictRequest,
    PredictResult,
    PrepareRequest,
    PrepareResult,
    TrainRequest,
    TrainResult,
    missing_module,
)
from segkit.backends.nnunet import layout
from segkit.backends.nnunet.options import NnUNetOptions
from segkit.conventions import NIFTI_EXT, NNUNET_CHANNEL_ORDER
from segkit.errors import BackendError, ConfigError, DataError, OutputError
from segkit.progress import ProgressSink

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
"""nnU-Net's checkpoints, in the order its --c looks for them."""


def default_processes(requested: int) -> int:
    """Processes for nnU-Net pools: `requested`, or min(cores, 4) for 0."""
    return requested if requested > 0 else max(1, min(os.cpu_count() or 1, 4))


def nnunet_env(
    dataset: DatasetRef,
    *,
    processes: int,
    da_processes: int | None = None,
    trainer_folders: Sequence[Path] = (),
) -> dict[str, str]:
    """The child's environment: nnU-Net's folders, the trainer folders and process counts.

    ``nnUNet_extTrainer`` lists segkit's generated trainers first, then `trainer_folders` (a backend's own
    trainers), then the user's own ``nnUNet_extTrainer``.

    ``nnUNet_def_n_proc`` is read when nnU-Net is imported, which is why it must be in the child's
    environment from the start. ``nnUNet_n_proc_DA`` is only set for training: 0 there means "augment
    in-process", but during planning nnU-Net passes it to ``torch.set_num_threads`` and crashes.
    """
    env = dict(os.environ)
    ext = [str(layout.ext_trainer_dir(dataset).resolve()), *(str(Path(f).resolve()) for f in trainer_folders)]
    if os.environ.get("nnUNet_extTrainer"):
        ext.append(os.environ["nnUNet_extTrainer"])
    env.update(
        {
            "nnUNet_raw": str(Path(dataset.raw).resolve()),
            "nnUNet_preprocessed": str(Path(dataset.preprocessed).resolve()),
            "nnUNet_results": str(Path(dataset.results).resolve()),
            "nnUNet_extTrainer": os.pathsep.join(ext),
            "nnUNet_def_n_proc": str(processes),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("nnUNet_n_proc_DA", None)
    if da_processes is not None:
        env["nnUNet_n_proc_DA"] = str(da_processes)
    elif os.environ.get("nnUNet_n_proc_DA"):
        env["nnUNet_n_proc_DA"] = os.environ["nnUNet_n_proc_DA"]
    return env


class NnUNetBackend:
    """nnU-Net v2: self-configuring U-Nets (plans, 5-fold training, ensembles).

    Base class of nnU-Net-based backends. A subclass sets `name` and `Options` (a subclass of
    `NnUNetOptions`), and as needed `trainer_folders` (folders of its own nnU-Net trainer modules, searched
    by nnU-Net like ``nnUNet_extTrainer``; ``--trainer`` may name them and ``--epochs`` etc. derive from
    them), `trainer_modules` (its own trainer classes by module: re-exported into segkit's generated
    trainer folder, so nnU-Net's own tools find them there), `network_modules` (modules of the network
    classes its plans name by dotted path; imported first in every worker so that a broken module fails
    in one line), `worker_module` (a worker of its own, usually extending
    `segkit.backends.nnunet.worker.HANDLERS`), `edit_plans` (e.g. to add a configuration), `worker_options`
    (its options the worker needs) and `check_options` (its own checks before any work). It inherits
    check, prepare, train, predict, the manifests and the worker.
    """

    name: ClassVar[str] = "nnunet"
    Options: ClassVar[type[NnUNetOptions]] = NnUNetOptions
    worker_module: ClassVar[str] = "segkit.backends.nnunet.worker"
    trainer_folders: ClassVar[tuple[Path, ...]] = ()
    trainer_modules: ClassVar[Mapping[str, str]] = {}
    network_modules: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[Capabilities] = Capabilities(
        prepare=True,
        ensemble=True,
        implicit_ensemble=True,
        multi_gpu=True,
        fold_all="train_on_all",
        devices=("cpu", "cuda", "mps"),
    )

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when nnunetv2 and torch are installed."""
        return missing_module("torch", "nnunetv2")

    # ------------------------------------------------------------------ hooks

    def edit_plans(self, plans: dict[str, Any], options: NnUNetOptions) -> dict[str, Any]:
        """The plans to keep after nnU-Net planned (default: unchanged).

        Called in the segkit process after nnU-Net wrote the plans and before preprocessing, on every
        `prepare` (so an added configuration survives re-planning). Pure JSON in and out; a changed result
        replaces the plans file atomically.
        """
        return plans

    def worker_options(self, options: NnUNetOptions, action: str) -> dict[str, Any]:
        """Options of this backend that its worker needs for `action` (``train``/``predict``); default none.

        They travel in the payload as ``backend_options``.
        """
        return {}

    def check_options(self, request: PrepareRequest | TrainRequest | PredictRequest, options: NnUNetOptions) -> None:
        """This backend's own checks, after the nnU-Net ones (default: none). Raise segkit errors."""

    def options_of(self, options: Any) -> NnUNetOptions:
        """`options` as this backend's `Options` (a mapping or other nnU-Net options are validated; None: defaults).

        Raises:
            ConfigError: Options of another type.
        """
        if isinstance(options, self.Options):
            return options
        if isinstance(options, NnUNetOptions):
            # e.g. plain nnU-Net options given to a derived backend: keep what was set, add its defaults
            return self.Options.model_validate(options.model_dump(exclude_unset=True))
        if options is None:
            return self.Options()
        if isinstance(options, Mapping):
            return self.Options.model_validate(dict(options))
        msg = f"expected {self.name} options ({self.Options.__name__}), got {type(options).__name__}"
        raise ConfigError(msg)

    def env(self, dataset: DatasetRef, *, processes: int, da_processes: int | None = None) -> dict[str, str]:
        """The worker's environment (see `nnunet_env`), with this backend's trainer folders."""
        return nnunet_env(dataset, processes=processes, da_processes=da_processes, trainer_folders=self.trainer_folders)

    def _run(
        self,
        action: str,
        payload: dict[str, Any],
        env: Mapping[str, str],
        log: Path,
        on_event: Any = None,
        *,
        what: str,
    ) -> dict[str, Any]:
        """Run one worker action of this backend (its network modules travel in the payload)."""
        full = {**payload, "network_modules": list(self.network_modules)}
        return run_worker(self.worker_module, action, full, env=env, log_file=log, on_event=on_event, what=what)

    # ------------------------------------------------------------------ checks

    def check(self, request: PrepareRequest | TrainRequest | PredictRequest, options: Any) -> None:
        """Raise for problems that can be found without starting nnU-Net."""
        opts = self.options_of(options)
        if isinstance(request, PrepareRequest):
            self._check_prepare(request)
        elif isinstance(request, TrainRequest):
            self._check_train(request, opts)
        else:
            opts = self.model_options(request.dataset, opts)
            self._check_predict(request, opts)
        self.check_options(request, opts)

    def model_options(self, dataset: DatasetRef, options: Any) -> NnUNetOptions:
        """The options naming the trained model to predict with.

        nnU-Net habit: after ``segkit train --epochs 1 --iterations-per-epoch 2`` the model's trainer is
        ``nnUNetTrainer_segkit_e1_i2``, and ``segkit infer`` without ``--trainer`` should find it. Unless
        the options name the trainer's schedule (``--epochs`` ...), the trained model folders of the same
        plans and configuration (of the given ``--trainer``, or derived from it, if one is given) are
        searched: exactly one is used; several are an error that lists them; none leaves the options as
        they are (`check` then says what is missing).

        Raises:
            DataError: Several trained models match.
        """
        opts = self.options_of(options)
        if opts.has_trainer_overrides:
            return opts
        given = "trainer" in opts.model_fields_set
        if given and layout.model_dir(dataset, opts).is_dir():
            return opts
        candidates = layout.trained_trainers(dataset, opts)
        if given:
            candidates = [t for t in candidates if layout.options_for_trainer(opts, t).trainer == opts.trainer]
        if len(candidates) == 1:
            return layout.options_for_trainer(opts, candidates[0])
        if len(candidates) > 1:
            names = ", ".join(f"{t}__{opts.plans_identifier}__{opts.configuration}" for t in candidates)
            msg = f"{len(candidates)} trained models of {dataset.name} match: {names}"
            raise DataError(msg, hint="choose one with --trainer (and --epochs/--iterations-per-epoch if derived)")
        return opts

    def _check_prepare(self, request: PrepareRequest) -> None:
        from segkit.data.nnunet_dataset import read_dataset_json

        read_dataset_json(request.dataset.raw_dir)

    def _check_train(self, request: TrainRequest, opts: NnUNetOptions) -> None:
        dataset = request.dataset
        plans = layout.read_plans(dataset, opts)
        _check_configuration(plans, opts, dataset)
        data_id = layout.configuration_data_identifier(plans, opts.configuration)
        if data_id and not (dataset.preprocessed_dir / data_id).is_dir():
            msg = f"configuration {opts.configuration} of {dataset.name} is planned but not preprocessed"
            raise DataError(msg, hint=f"run `segkit data plan --configurations {opts.configuration}`")
        self._check_unlabelled(request, opts)
        if request.fold != "all":
            ids = _preprocessed_ids(dataset, data_id)
            if not isinstance(request.fold, int) or request.fold < 0:
                msg = f"fold {request.fold!r} is not a fold index or 'all'"
                raise ConfigError(msg)
            if dataset.splits_file.is_file():
                from segkit.data.splits import read_splits

                n_splits = len(read_splits(dataset.splits_file))
                if request.fold >= n_splits:
                    msg = (
                        f"fold {request.fold} is out of range: {dataset.splits_file} has {n_splits} folds "
                        f"(0-{n_splits - 1})"
                    )
                    raise ConfigError(msg)
            elif len(ids) < 5:
                msg = (
                    f"fold {request.fold} needs 5-fold cross-validation, which needs at least 5 training cases; "
                    f"{dataset.name} has {len(ids)}"
                )
                raise DataError(msg, hint="train one model on every case with --fold all")
            elif request.fold >= 5:
                msg = f"fold {request.fold} is out of range (nnU-Net's cross-validation has folds 0-4)"
                raise ConfigError(msg)
        if opts.continue_training and opts.pretrained_weights is not None:
            msg = "--continue and --pretrained-weights cannot be combined (pretrained weights only start a training)"
            raise ConfigError(msg)
        if opts.continue_training and opts.overwrite:
            msg = "--continue and --overwrite cannot be combined"
            raise ConfigError(msg)
        fold_dir = layout.fold_dir(layout.model_dir(dataset, opts), request.fold)
        checkpoints = [n for n in CHECKPOINTS if (fold_dir / n).is_file()]
        if opts.continue_training and not checkpoints:
            msg = f"{fold_dir}: nothing to continue (no {', '.join(CHECKPOINTS)})"
            raise DataError(msg, hint="start the training without --continue")
        if checkpoints and not (opts.continue_training or opts.overwrite):
            msg = f"fold {request.fold} is already trained or started: {fold_dir / checkpoints[0]} exists"
            raise OutputError(msg, hint="pass --continue to resume it, or --overwrite to train it again from scratch")
        if opts.pretrained_weights is not None and not Path(opts.pretrained_weights).is_file():
            msg = f"{opts.pretrained_weights}: pretrained weights file not found"
            raise DataError(msg)
        if opts.num_gpus > 1:
            if request.device != "cuda":
                msg = f"--num-gpus {opts.num_gpus} needs CUDA (nnU-Net's DDP), device is {request.device}"
                raise ConfigError(msg)
            from segkit.backends._device import cuda_device_count

            available = cuda_device_count()
            if available < opts.num_gpus:
                msg = f"--num-gpus {opts.num_gpus} requested but only {available} CUDA device(s) are visible"
                raise BackendError(msg)

    def trains_on_unlabelled(self, opts: NnUNetOptions) -> bool:
        """Whether the trainer of `opts` keeps unlabelled cases out of its supervised loss by itself.

        Only such a trainer (a semi-supervised stage) may train ``--fold all`` on a dataset with
        unlabelled cases: nnU-Net's fold ``all`` trains on every preprocessed case, placeholder labels
        included. Default: no.
        """
        return False

    def _check_unlabelled(self, request: TrainRequest, opts: NnUNetOptions) -> None:
        """Refuse a training that would learn the placeholder labels of unlabelled cases."""
        from segkit.data.nnunet_dataset import check_dataset_splits, dataset_case_ids
        from segkit.data.splits import folds_with_unlabelled

        dataset = request.dataset
        if not (dataset.raw_dir / "dataset.json").is_file():
            return
        unlabelled = check_dataset_splits(dataset.raw_dir, dataset.splits_file)
        if not unlabelled:
            return
        if request.fold == "all":
            if not self.trains_on_unlabelled(opts):
                msg = (
                    f"--fold all would train on the all-zero placeholder labels of the {len(unlabelled)} "
                    f"unlabelled case(s) of {dataset.name}"
                )
                raise ConfigError(msg, hint="train a cross-validation fold, whose splits leave them out")
        elif not dataset.splits_file.is_file():
            folds_with_unlabelled(dataset_case_ids(dataset.raw_dir), unlabelled)  # too few labelled: say so now

    def _check_predict(self, request: PredictRequest, opts: NnUNetOptions) -> None:
        if opts.mirror_axes is not None and not opts.test_time_mirroring:
            msg = "--mirror-axes chooses the axes of test-time mirroring, which --disable-tta turns off"
            raise ConfigError(msg)
        model = layout.model_dir(request.dataset, opts)
        if not model.is_dir():
            trained = (
                sorted(p.name for p in request.dataset.results_dir.glob("*__*__*"))
                if request.dataset.results_dir.is_dir()
                else []
            )
            also = f" (trained: {', '.join(trained)})" if trained else ""
            msg = f"no trained model {model.name} for {request.dataset.name}{also}"
            raise DataError(
                msg,
                hint=(
                    f"train it with `segkit train --backend {self.name}`, or pass its --trainer/--plans/--configuration"
                ),
            )
        for fold in request.folds:
            checkpoint = layout.fold_dir(model, fold) / opts.checkpoint
            if not checkpoint.is_file():
                msg = f"{checkpoint}: checkpoint not found (fold {fold} of {model.name} is not trained)"
                raise DataError(msg, hint="train the fold first, or choose --fold/--checkpoint that exist")
            self._check_checkpoint_matches(checkpoint, model)
        if not request.cases:
            msg = "no cases to predict"
            raise DataError(msg)

    def _check_checkpoint_matches(self, checkpoint: Path, model: Path) -> None:
        """The model folder must be an nnU-Net model of the expected plans (the worker also checks
        each checkpoint's own record of plans and configuration before predicting)."""
        from segkit.io import read_json

        plans_path = model / "plans.json"
        if not plans_path.is_file():
            msg = f"{model}: plans.json missing; not an nnU-Net model folder"
            raise DataError(msg)
        plans = read_json(plans_path)
        expected = model.name.split("__")[1]
        if isinstance(plans, dict) and plans.get("plans_name") not in (None, expected):
            msg = f"{model}: holds a model of plans {plans.get('plans_name')}, not {expected}"
            raise DataError(msg)

    def fold_indices(self, dataset: DatasetRef, options: Any) -> tuple[int, ...]:
        """The folds of ``splits_final.json``, else nnU-Net's five (``all`` is a fold of its own here)."""
        from segkit.backends.base import splits_fold_indices

        return splits_fold_indices(dataset)

    def trained_folds(self, dataset: DatasetRef, options: Any) -> tuple[Fold, ...]:
        """Folds of the model (see `model_options`) that have the prediction checkpoint (numbered first, else 'all')."""
        opts = self.model_options(dataset, options)
        model = layout.model_dir(dataset, opts)
        indices = set(range(5))
        if model.is_dir():
            indices |= {int(p.name[5:]) for p in model.glob("fold_*") if p.name[5:].isdigit()}
        numbered = tuple(k for k in sorted(indices) if (layout.fold_dir(model, k) / opts.checkpoint).is_file())
        if numbered:
            return numbered
        return ("all",) if (layout.fold_dir(model, "all") / opts.checkpoint).is_file() else ()

    # ------------------------------------------------------------------ work

    def prepare(self, request: PrepareRequest, options: Any, *, progress: ProgressSink) -> PrepareResult:
        """Fingerprint, plan and preprocess the dataset (``segkit data plan``)."""
        opts = self.options_of(options)
        self.check(request, opts)
        dataset = request.dataset
        processes = default_processes(request.num_processes or opts.num_processes)
        log = dataset.preprocessed_dir / "segkit_plan.log"
        configurations = request.configurations or (opts.configuration,)
        clean = request.clean or _fingerprint_is_stale(dataset)
        if clean and not request.clean:
            progress.log("nnU-Net: the dataset changed since its fingerprint was taken; taking it again")
        payload = {
            "dataset": dataset.name,
            "planner": opts.planner_class,
            "plans": opts.plans,
            "verify": request.verify_dataset_integrity,
            "clean": clean,
            "num_processes": processes,
            "gpu_memory_target_gb": request.gpu_memory_target_gb,
            "preprocessed_dir": str(dataset.preprocessed_dir.resolve()),
        }
        env = self.env(dataset, processes=processes)
        events = _StageEvents(progress)
        try:
            planned = self._run("plan", payload, env, log, events, what="nnU-Net planning")
            plans_path = Path(planned["plans_file"])
            available = self._apply_plans_edit(plans_path, opts)
            missing = [c for c in configurations if c not in available]
            if missing and request.preprocess:
                msg = f"configuration(s) {', '.join(missing)} not in the plans (available: {', '.join(available)})"
                raise ConfigError(msg)
            done: list[str] = []
            if request.preprocess:
                preprocess = {
                    "dataset": dataset.name,
                    "plans": plans_path.stem,
                    "configurations": list(configurations),
                    "num_processes": processes,
                }
                result = self._run("preprocess", preprocess, env, log, events, what="nnU-Net preprocessing")
                done = list(result["preprocessed"])
        finally:
            events.close()
        return PrepareResult(
            plans_file=plans_path,
            configurations=tuple(done),
            log_file=log,
            details={"available": available},
        )

    def _apply_plans_edit(self, path: Path, opts: NnUNetOptions) -> list[str]:
        """Run `edit_plans` on the plans nnU-Net just wrote; return the configurations of the result.

        Raises:
            BackendError: The hook returned something that is not plans.
        """
        import copy

        from segkit.data.nnunet_plans import load_plans
        from segkit.io import write_json

        plans = load_plans(path)
        edited = self.edit_plans(copy.deepcopy(plans), opts)
        if not isinstance(edited, dict) or not isinstance(edited.get("configurations"), dict):
            msg = f"{type(self).__name__}.edit_plans returned no plans (a dict with 'configurations') for {path}"
            raise BackendError(msg)
        if edited != plans:
            write_json(path, edited)
        return list(edited["configurations"])

    def train(self, request: TrainRequest, options: Any, *, progress: ProgressSink) -> TrainResult:
        """Train one fold with nnU-Net (resume with ``continue_training``)."""
        opts = self.options_of(options)
        self.check(request, opts)
        dataset = request.dataset
        if request.fold != "all":
            # nnU-Net would write the same file on first use; writing it here makes the folds visible
            # (and shared with other backends) before any training starts, and keeps unlabelled cases
            # (placeholder labels) out of train/val, where nnU-Net's own file would put them.
            from segkit.data.nnunet_dataset import ensure_dataset_splits

            ensure_dataset_splits(dataset.raw_dir, dataset.splits_file)
        trainer = layout.write_trainer_module(dataset, opts, self.trainer_modules)
        model = layout.model_dir(dataset, opts)
        fold = layout.fold_dir(model, request.fold)
        # --overwrite moves the old fold aside and deletes it only once nnU-Net has started training: a run
        # refused at start-up (weights that do not fit, a bad file, Ctrl-C) puts the old model back.
        previous = None
        if opts.overwrite and fold.exists():
            previous = fold.with_name(f".{fold.name}.segkit-replaced-{uuid.uuid4().hex[:8]}")
            fold.rename(previous)
        # Anything this run creates is removed again if nnU-Net refuses to start (e.g. pretrained weights
        # that do not fit): a refused run leaves no half-made model folder behind.
        created = [p for p in (model, fold) if not p.exists()]
        fold.mkdir(parents=True, exist_ok=True)
        log = model / f"segkit_train_fold_{request.fold}.log"
        processes = default_processes(opts.num_processes)
        payload = {
            "dataset": dataset.name,
            "configuration": opts.configuration,
            "fold": request.fold,
            "trainer": trainer,
            "base_trainer": opts.trainer,
            "plans": opts.plans_identifier,
            "device": request.device,
            "pretrained_weights": str(opts.pretrained_weights) if opts.pretrained_weights else None,
            "continue_training": opts.continue_training,
            "npz": opts.npz,
            "final_validation": opts.final_validation,
            "num_gpus": opts.num_gpus,
            "fold_dir": str(fold),
            "backend_options": self.worker_options(opts, "train"),
        }
        config_file = fold / "segkit_config.yaml" if request.config_yaml else None
        events = _TrainEvents(progress, request.fold, config_file, request.config_yaml)
        try:
            env = self.env(dataset, processes=processes, da_processes=opts.data_augmentation_processes)
            result = self._run("train", payload, env, log, events, what="nnU-Net training")
        except BaseException:
            if not events.started:
                for path in reversed(created):
                    shutil.rmtree(path, ignore_errors=True)
                if previous is not None:
                    previous.rename(fold)
                    previous = None
            raise
        finally:
            events.close()
            if previous is not None:
                shutil.rmtree(previous, ignore_errors=True)
        metrics: dict[str, float] = {}
        if "validation_dice" in result:
            metrics["validation_dice"] = float(result["validation_dice"])
        if events.last_ema is not None:
            metrics["ema_pseudo_dice"] = events.last_ema
        final = fold / "checkpoint_final.pth"
        return TrainResult(
            fold=request.fold,
            model_dir=model,
            checkpoint=final if final.is_file() else None,
            log_file=log,
            metrics=metrics,
        )

    def predict(self, request: PredictRequest, options: Any, *, progress: ProgressSink) -> PredictResult:
        """Predict cases with one fold or an ensemble; outputs land atomically as ``<case>.nii.gz``."""
        opts = self.model_options(request.dataset, options)
        self.check(request, opts)
        out = request.output_dir
        from segkit.io import ensure_writable_dir

        ensure_writable_dir(out)
        # nnU-Net imports the model's trainer class to build the network: a derived one (--epochs ...) must
        # exist under nnUNet_extTrainer here too, e.g. for a model folder copied from another machine.
        layout.write_trainer_module(request.dataset, opts, self.trainer_modules)
        todo = [c for c in request.cases if request.overwrite or not (out / f"{c.case_id}{NIFTI_EXT}").exists()]
        skipped = tuple(c.case_id for c in request.cases if c not in todo)
        stage = out / f".segkit-partial-{uuid.uuid4().hex[:8]}"
        stage.mkdir()
        log = out / "segkit_predict.log"
        files: list[Path] = []
        try:
            if todo:
                processes = default_processes(opts.num_processes)
                payload = {
                    "model_dir": str(layout.model_dir(request.dataset, opts).resolve()),
                    "configuration": opts.configuration,
                    "plans": opts.plans_identifier,
                    "folds": list(request.folds),
                    "checkpoint": opts.checkpoint,
                    "device": request.device,
                    "tile_step_size": opts.tile_step_size,
                    "use_mirroring": opts.test_time_mirroring,
                    "mirror_axes": opts.mirror_axes,
                    "backend_options": self.worker_options(opts, "predict"),
                    "save_probabilities": request.save_probabilities,
                    "num_processes": processes,
                    "inputs": input_lists(todo, model_channel_order(layout.model_dir(request.dataset, opts))),
                    "outputs": [str((stage / c.case_id).resolve()) for c in todo],
                }
                progress.start("predicting", total=len(todo))
                try:
                    self._run(
                        "predict",
                        payload,
                        self.env(request.dataset, processes=processes),
                        log,
                        lambda e: progress.advance() if e.get("event") == "case_done" else None,
                        what="nnU-Net prediction",
                    )
                finally:
                    progress.finish()
            for case in todo:
                for suffix in (NIFTI_EXT, ".npz", ".pkl"):
                    src = stage / f"{case.case_id}{suffix}"
                    if src.is_file():
                        os.replace(src, out / src.name)
                        if suffix == NIFTI_EXT:
                            files.append(out / src.name)
                if not (out / f"{case.case_id}{NIFTI_EXT}").is_file():
                    msg = f"nnU-Net wrote no prediction for {case.case_id}"
                    raise BackendError(msg, hint=f"see {log}")
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        _write_manifest(out, self.name, request, opts, files, skipped)
        return PredictResult(output_dir=out, files=tuple(files), skipped=skipped, log_file=log)


def model_channel_order(model: Path) -> list[str]:
    """Modality of each input channel of a trained model, from the ``dataset.json`` it was trained with.

    segkit's own datasets use ``t1n t1c t2w t2f``; models trained on other nnU-Net datasets (MSD style
    ``FLAIR T1w t1gd T2w``, Dataset226's ``T1 T1C T2W T2F``) are mapped through their channel names, so
    a channel is never fed to the wrong input.
    """
    from segkit.data.inputs import dataset_json_modalities

    path = model / "dataset.json"
    if not path.is_file():
        return list(NNUNET_CHANNEL_ORDER)
    return dataset_json_modalities(path)


def input_lists(cases: list[CaseImages], order: list[str]) -> list[list[str]]:
    """nnU-Net's list of channel files per case, in the model's channel `order`."""
    return [[str(Path(case.images[m]).resolve()) for m in order] for case in cases]


def _fingerprint_is_stale(dataset: DatasetRef) -> bool:
    """An existing fingerprint that counts another number of cases than the dataset has now.

    nnU-Net reuses a fingerprint unless told to redo it, so after `segkit data prepare --clean` changed
    the cases the plans would otherwise come from the old cohort.
    """
    from segkit.data.nnunet_dataset import read_dataset_json
    from segkit.io import read_json

    path = dataset.preprocessed_dir / "dataset_fingerprint.json"
    if not path.is_file():
        return False
    try:
        counted = len(read_json(path).get("shapes_after_crop", []))
    except (DataError, AttributeError):
        return True
    return counted != int(read_dataset_json(dataset.raw_dir).get("numTraining", counted))


def _check_configuration(plans: dict[str, Any], opts: NnUNetOptions, dataset: DatasetRef) -> None:
    available = list(plans["configurations"])
    if opts.configuration not in available:
        msg = (
            f"configuration {opts.configuration!r} is not in the plans {opts.plans_identifier} of {dataset.name} "
            f"(available: {', '.join(available)})"
        )
        raise ConfigError(msg)


def _preprocessed_ids(dataset: DatasetRef, data_id: str | None) -> list[str]:
    """Case ids nnU-Net will split: those of the preprocessed folder (else of imagesTr)."""
    if data_id and (dataset.preprocessed_dir / data_id).is_dir():
        folder = dataset.preprocessed_dir / data_id
        return sorted({p.name.split(".")[0] for p in folder.glob("*.pkl")})
    from segkit.data.nnunet_dataset import dataset_case_ids

    return dataset_case_ids(dataset.raw_dir)


def _write_manifest(
    out: Path, backend: str, request: PredictRequest, opts: NnUNetOptions, files: list[Path], skipped: tuple[str, ...]
) -> None:
    from segkit import __version__
    from segkit.io import write_json

    write_json(
        out / "segkit_predict.json",
        {
            "segkit_version": __version__,
            "backend": backend,
            "dataset": request.dataset.name,
            "model": layout.model_dir(request.dataset, opts).name,
            "folds": list(request.folds),
            "checkpoint": opts.checkpoint,
            "device": request.device,
            "tile_step_size": opts.tile_step_size,
            "test_time_mirroring": opts.test_time_mirroring,
            "mirror_axes": opts.mirror_axes,
            "cases": [p.name for p in files],
            "skipped_existing": list(skipped),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )


class _StageEvents:
    """Shows nnU-Net's stages (fingerprint, planning, preprocessing) as a spinner each."""

    def __init__(self, progress: ProgressSink) -> None:
        self.progress = progress

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "stage":
            self.progress.start(str(event.get("name", "")), total=None)
            self.progress.log(f"nnU-Net: {event.get('name')}")

    def close(self) -> None:
        self.progress.finish()


class _TrainEvents:
    """Turns the worker's epoch/iteration events into a bar per epoch and a summary line per epoch.

    The resolved run config is saved in the fold folder when training really starts (after nnU-Net
    accepted the set-up), so that a refused run leaves nothing behind.
    """

    def __init__(self, progress: ProgressSink, fold: Fold, config_file: Path | None = None, config: str = "") -> None:
        self.progress = progress
        self.fold = fold
        self.config_file = config_file
        self.config = config
        self.started = False
        self.last_ema: float | None = None

    def _start(self) -> None:
        if not self.started:
            self.started = True
            if self.config_file is not None:
                from segkit.io import write_text

                write_text(self.config_file, self.config)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind in ("epoch_start", "resumed", "training"):
            self._start()
        if kind == "stage":
            self.progress.start(f"fold {self.fold}: {event.get('name')}", total=None)
        elif kind == "resumed":
            self.progress.log(f"fold {self.fold}: resuming from {event['checkpoint']} at epoch {event['epoch']}")
        elif kind == "message":
            self.progress.log(f"fold {self.fold}: {event.get('text', '')}")
        elif kind == "epoch_start":
            self.progress.start(
                f"fold {self.fold} epoch {event['epoch'] + 1}/{event['num_epochs']}", total=int(event["iterations"])
            )
        elif kind == "iteration":
            self.progress.advance(loss=event.get("loss"))
        elif kind == "epoch_end":
            self.last_ema = event.get("ema_dice")
            dice = " ".join(f"{d:.3f}" for d in event.get("pseudo_dice") or [] if d is not None)
            parts = [
                f"fold {self.fold} epoch {event['epoch'] + 1}/{event['num_epochs']}",
                f"train_loss {_fmt(event.get('train_loss'))}",
                f"val_loss {_fmt(event.get('val_loss'))}",
                f"pseudo-Dice [{dice}]",
                f"EMA {_fmt(event.get('ema_dice'))}",
                f"{_fmt(event.get('seconds'))} s",
            ]
            self.progress.log("  ".join(parts))

    def close(self) -> None:
        self.progress.finish()


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"
