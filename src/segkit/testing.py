"""Test helpers for backend authors: a `FakeBackend` and the `BackendContract` conformance suite.

Any backend (segkit's own or a third-party plugin) proves it honours `segkit.backends.base.Backend`
by subclassing `BackendContract` in its tests::

    class TestMyBackend(BackendContract):
        def make_backend(self):
            return MyBackend()

        @pytest.fixture
        def contract_model(self, tmp_path):
            ...  # a trained model: return ContractModel(backend, options, dataset, cases, folds)

This module imports pytest; it is meant for test suites only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import Field, ValidationError

from segkit.backends.base import (
    Backend,
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
)
from segkit.config.models import Strict
from segkit.errors import DataError, SegkitError
from segkit.progress import NullProgress, ProgressSink

HEAVY_MODULES = ("torch", "monai", "nnunetv2", "dash", "matplotlib", "SimpleITK")


class FakeOptions(Strict):
    """Options of `FakeBackend`."""

    modality: str = Field("t2f", description="Modality that is thresholded.")
    quantile: float = Field(0.95, gt=0, lt=1, description="Quantile of the brain's intensities used as threshold.")


class FakeBackend:
    """A backend that "trains" instantly and predicts SNFH by thresholding one modality (for tests)."""

    name: ClassVar[str] = "fake"
    Options: ClassVar[type[FakeOptions]] = FakeOptions
    capabilities: ClassVar[Capabilities] = Capabilities(ensemble=True, implicit_ensemble=True, devices=("cpu",))

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Always available: numpy and nibabel are core dependencies."""
        return None

    @staticmethod
    def model_dir(dataset: DatasetRef) -> Path:
        """Where the fake model lives."""
        return dataset.results_dir / "fake"

    def check(self, request: PrepareRequest | TrainRequest | PredictRequest, options: Any) -> None:
        """A training needs a prepared dataset; a prediction needs a trained fold."""
        if (
            isinstance(request, (PrepareRequest, TrainRequest))
            and not (request.dataset.raw_dir / "dataset.json").is_file()
        ):
            msg = f"dataset {request.dataset.name} is not prepared"
            raise DataError(msg)
        if isinstance(request, PredictRequest):
            for fold in request.folds:
                path = self.model_dir(request.dataset) / f"fold_{fold}" / "model.json"
                if not path.is_file():
                    msg = f"{path}: fold {fold} is not trained"
                    raise DataError(msg)

    def fold_indices(self, dataset: DatasetRef, options: Any) -> tuple[int, ...]:
        """The folds of ``splits_final.json``, else nnU-Net's five."""
        from segkit.backends.base import splits_fold_indices

        return splits_fold_indices(dataset)

    def trained_folds(self, dataset: DatasetRef, options: Any) -> tuple[Fold, ...]:
        """Folds whose ``model.json`` exists (numbered folds first, then ``all``)."""
        root = self.model_dir(dataset)
        candidates: list[Fold] = [*range(5), "all"]
        if root.is_dir():
            extra = {int(p.name[5:]) for p in root.glob("fold_*") if p.name[5:].isdigit()}
            candidates = [*sorted(set(range(5)) | extra), "all"]
        return tuple(f for f in candidates if (root / f"fold_{f}" / "model.json").is_file())

    def prepare(self, request: PrepareRequest, options: Any, *, progress: ProgressSink) -> PrepareResult:
        """Nothing to plan."""
        self.check(request, options)
        return PrepareResult(plans_file=None, configurations=())

    def train(self, request: TrainRequest, options: Any, *, progress: ProgressSink) -> TrainResult:
        """Store a threshold: a quantile of the first training case's foreground intensities."""
        from segkit.conventions import NNUNET_CHANNEL_ORDER
        from segkit.io import read_volume, write_json

        self.check(request, options)
        opts = FakeOptions.model_validate(options) if isinstance(options, dict) else options
        channel = NNUNET_CHANNEL_ORDER.index(opts.modality)
        images = sorted((request.dataset.raw_dir / "imagesTr").glob(f"*_{channel:04d}.nii.gz"))
        data = read_volume(images[0]).data.astype(np.float32)
        threshold = float(np.quantile(data[data > 0], opts.quantile))
        progress.start("fake training", total=1)
        progress.advance()
        progress.finish()
        fold_dir = self.model_dir(request.dataset) / f"fold_{request.fold}"
        write_json(fold_dir / "model.json", {"threshold": threshold, "modality": opts.modality})
        return TrainResult(request.fold, self.model_dir(request.dataset), fold_dir / "model.json")

    def predict(self, request: PredictRequest, options: Any, *, progress: ProgressSink) -> PredictResult:
        """Label 2 where the modality exceeds the (fold-averaged) threshold, on each case's own grid."""
        from segkit.io import read_volume, write_volume

        self.check(request, options)
        models = [
            json.loads((self.model_dir(request.dataset) / f"fold_{f}" / "model.json").read_text())
            for f in request.folds
        ]
        threshold = float(np.mean([m["threshold"] for m in models]))
        files = []
        skipped = []
        progress.start("fake prediction", total=len(request.cases))
        for case in request.cases:
            target = request.output_dir / f"{case.case_id}.nii.gz"
            if target.exists() and not request.overwrite:
                skipped.append(case.case_id)
                progress.advance()
                continue
            volume = read_volume(case.images[models[0]["modality"]])
            labels = np.where(volume.data > threshold, 2, 0).astype(np.uint8)
            files.append(write_volume(target, labels, volume.affine))
            progress.advance()
        progress.finish()
        return PredictResult(request.output_dir, tuple(files), tuple(skipped))


@dataclass(frozen=True)
class ContractModel:
    """A trained model for the conformance tests: everything `predict` needs."""

    backend: Backend
    options: Any
    dataset: DatasetRef
    cases: tuple[CaseImages, ...]
    folds: tuple[Fold, ...]
    device: str = "cpu"


class BackendContract:
    """Conformance tests every backend must pass. Subclass it and implement `make_backend`.

    The prediction tests need a fixture named ``contract_model`` returning a `ContractModel`.
    """

    def make_backend(self) -> Backend:
        """Return a fresh backend instance."""
        raise NotImplementedError

    def test_satisfies_protocol(self) -> None:
        backend = self.make_backend()
        assert isinstance(backend, Backend)
        assert isinstance(backend.name, str)
        assert backend.name
        assert isinstance(backend.capabilities, Capabilities)

    def test_options_have_defaults_and_descriptions(self) -> None:
        options = self.make_backend().Options
        options.model_validate({})
        for name, info in options.model_fields.items():
            assert info.description, f"option {name} has no description"

    def test_options_reject_unknown_keys(self) -> None:
        with pytest.raises(ValidationError):
            self.make_backend().Options.model_validate({"definitely_not_an_option": 1})

    def test_unavailable_reason_is_none_or_text(self) -> None:
        reason = type(self.make_backend()).unavailable_reason()
        assert reason is None or (isinstance(reason, str) and reason)

    def test_adapter_import_is_light(self) -> None:
        module = type(self.make_backend()).__module__
        code = f"import sys, {module}; print([m for m in {HEAVY_MODULES!r} if m in sys.modules])"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]", f"importing {module} loads {out.stdout.strip()}"

    def test_check_refuses_an_unprepared_dataset(self, tmp_path: Path) -> None:
        backend = self.make_backend()
        dataset = DatasetRef("Dataset999_Missing", tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
        request = TrainRequest(dataset=dataset, fold=0, device="cpu")
        with pytest.raises(SegkitError):
            backend.check(request, backend.Options())

    def test_fold_indices_follow_the_splits_file(self, tmp_path: Path) -> None:
        from segkit.data.splits import write_splits

        backend = self.make_backend()
        dataset = DatasetRef("Dataset998_Folds", tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
        write_splits([f"case{i}" for i in range(6)], dataset.splits_file, n_folds=3)
        assert tuple(backend.fold_indices(dataset, backend.Options())) == (0, 1, 2)

    def test_trained_folds_include_the_trained_model(self, contract_model: ContractModel) -> None:
        m = contract_model
        trained = tuple(m.backend.trained_folds(m.dataset, m.options))
        assert set(m.folds) <= set(trained), f"trained_folds {trained} misses {m.folds}"
        assert all(f == "all" or isinstance(f, int) for f in trained)

    def test_predict_writes_one_file_per_case_on_the_input_grid(
        self, contract_model: ContractModel, tmp_path: Path
    ) -> None:
        from segkit.io import read_header

        m = contract_model
        out = tmp_path / "predictions"
        request = PredictRequest(m.dataset, m.cases, out, m.folds, m.device)
        result = m.backend.predict(request, m.options, progress=NullProgress())
        names = sorted(p.name for p in result.files)
        assert names == sorted(f"{c.case_id}.nii.gz" for c in m.cases)
        for case in m.cases:
            pred = read_header(out / f"{case.case_id}.nii.gz")
            ref = read_header(next(iter(case.images.values())))
            assert pred.shape == ref.shape
            assert np.allclose(pred.affine, ref.affine, atol=1e-4)
            assert np.issubdtype(pred.dtype, np.integer)
        assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"

    def test_predict_keeps_existing_predictions_unless_overwrite(
        self, contract_model: ContractModel, tmp_path: Path
    ) -> None:
        m = contract_model
        out = tmp_path / "predictions"
        out.mkdir()
        first = m.cases[0]
        kept = out / f"{first.case_id}.nii.gz"
        kept.write_bytes(b"an earlier prediction")
        request = PredictRequest(m.dataset, m.cases, out, m.folds, m.device, overwrite=False)
        result = m.backend.predict(request, m.options, progress=NullProgress())
        assert first.case_id in result.skipped
        assert kept.read_bytes() == b"an earlier prediction"
        assert sorted(p.name for p in result.files) == sorted(f"{c.case_id}.nii.gz" for c in m.cases[1:])

    def test_predict_refuses_untrained_folds(self, contract_model: ContractModel, tmp_path: Path) -> None:
        m = contract_model
        request = PredictRequest(m.dataset, m.cases, tmp_path / "out", (3,) if 3 not in m.folds else (4,), m.device)
        with pytest.raises(SegkitError):
            m.backend.check(request, m.options)


def fake_entry_points() -> dict[str, Any]:
    """``{"fake": EntryPoint}`` for injecting `FakeBackend` into the registry in tests."""
    from importlib.metadata import EntryPoint

    return {"fake": EntryPoint("fake", "segkit.testing:FakeBackend", "segkit.backends")}
