"""The FakeBackend passes the conformance suite every backend must pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from segkit.api import dataset_ref
from segkit.backends.base import TrainRequest
from segkit.config import load_config
from segkit.data.inputs import resolve_inputs
from segkit.data.nnunet_dataset import prepare_dataset
from segkit.data.synth import write_cohort
from segkit.progress import NullProgress
from segkit.testing import BackendContract, ContractModel, FakeBackend


class TestFakeBackend(BackendContract):
    def make_backend(self) -> FakeBackend:
        return FakeBackend()

    @pytest.fixture
    def contract_model(self, tmp_path: Path) -> ContractModel:
        write_cohort(tmp_path / "train", cases=3, shape=(16, 16, 16))
        write_cohort(tmp_path / "test", cases=2, shape=(16, 20, 12), spacing=(1.0, 1.5, 2.0), start=10)
        cfg = load_config(flags={"nnunet.raw": tmp_path / "raw", "nnunet.results": tmp_path / "res"})
        prepare_dataset(dataset=cfg.dataset, nnunet_raw=cfg.nnunet.raw, train_sources=[tmp_path / "train"], workers=1)
        dataset = dataset_ref(cfg)
        backend = FakeBackend()
        backend.train(TrainRequest(dataset, 0, "cpu"), backend.Options(), progress=NullProgress())
        cases = tuple(resolve_inputs([tmp_path / "test"]))
        return ContractModel(backend, backend.Options(), dataset, cases, (0,))
