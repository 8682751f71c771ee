"""The MONAI backend under ``torchrun``: DistributedDataParallel on CPU (gloo) and, with CUDA, on GPUs (nccl).

The same ``segkit train`` command runs in every rank; ranks split the training cases with a
DistributedSampler, validation is sharded and all-reduced, and only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _monai_bundle import make_bundle

from segkit.data.nnunet_dataset import dataset_case_ids, prepare_dataset
from segkit.data.splits import write_splits

DATASET = "Dataset501_BraTSPostTx"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prepared(tmp_path: Path, cohort_template: Path) -> Path:
    shutil.copytree(cohort_template, tmp_path / "training_data")
    prepare_dataset(dataset=DATASET, nnunet_raw=tmp_path / "raw", train_sources=[tmp_path / "training_data"], workers=1)
    write_splits(dataset_case_ids(tmp_path / "raw" / DATASET), tmp_path / "splits.json", n_folds=2)
    make_bundle(tmp_path / "bundles")
    return tmp_path


def _torchrun(root: Path, nproc: int, device: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "segkit",
        "-q",
        "train",
        "--backend",
        "monai",
        "--fold",
        "0",
        "--device",
        device,
        "--set",
        f"nnunet.raw={root / 'raw'}",
        "--set",
        f"nnunet.preprocessed={root / 'pre'}",
        "--split-json",
        str(root / "splits.json"),
        "--bundle-dir",
        str(root / "bundles"),
        "--output-root",
        str(root / "out"),
        "--stage1-epochs",
        "1",
        "--stage2-epochs",
        "1",
        "--patch-size",
        "24",
        "24",
        "24",
        "--batch-size",
        "1",
        "--option",
        "num_samples=1",
        "--json",
        *extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "SEGKIT_NO_PROGRESS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=600)


def _check_run(root: Path, world: int) -> None:
    checkpoints = root / "out" / "fold0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "stage1_best.pt",
        "stage1_epoch1.pt",
        "stage2_best.pt",
        "stage2_epoch1.pt",
    ]
    log = json.loads((root / "out" / "fold0" / "metrics" / "training_log.json").read_text())
    # 3 training cases: one process takes 3 batches; the DistributedSampler gives each rank ceil(3 / world)
    steps = -(-3 // world)
    assert [(e["stage"], e["optimizer_steps"]) for e in log["epochs"]] == [(1, steps), (2, steps)]
    payload = torch.load(checkpoints / "stage2_best.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in payload["model"]), "DDP's prefix leaked into the checkpoint"


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(prepared: Path) -> None:
    result = _torchrun(prepared, 2, "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)  # only rank 0 reports
    assert rows[0]["fold"] == 0
    _check_run(prepared, world=2)


@pytest.mark.gpu
def test_torchrun_ddp_on_two_gpus_with_amp(prepared: Path) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("DDP over GPUs needs 2 CUDA devices (one GPU would run world size 1)")
    result = _torchrun(prepared, 2, "cuda", "--amp")
    assert result.returncode == 0, result.stderr[-3000:]
    _check_run(prepared, world=2)


@pytest.mark.gpu
def test_amp_training_on_one_gpu(prepared: Path) -> None:
    """A single-GPU AMP run without DDP (torchrun with one process: world size 1)."""
    result = _torchrun(prepared, 1, "cuda", "--amp")
    assert result.returncode == 0, result.stderr[-3000:]
    _check_run(prepared, world=1)
