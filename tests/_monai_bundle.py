"""A tiny local MONAI bundle (random SegResNet weights, the real bundle's layout) for the MONAI backend tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_NETWORK: dict[str, Any] = {
    "_target_": "SegResNet",
    "blocks_down": [1, 2, 2, 4],
    "blocks_up": [1, 1, 1],
    "init_filters": 8,
    "in_channels": 4,
    "out_channels": 3,
    "dropout_prob": 0.2,
}
"""The brats_mri_segmentation network_def with init_filters 8 instead of 16 (same module structure)."""

CHANNEL_DEF = {"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"}


def make_bundle(
    bundle_dir: Path,
    name: str = "brats_mri_segmentation",
    *,
    network_def: Any = None,
    weights: bool = True,
    seed: int = 0,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write ``<bundle_dir>/<name>/`` with configs/{metadata,inference}.json and (optionally) models/model.pt."""
    import torch
    from monai.networks.nets import SegResNet

    folder = Path(bundle_dir) / name
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    net_def = dict(TINY_NETWORK) if network_def is None else network_def
    metadata = {
        "version": "0.5.2-test",
        "monai_version": "1.4.0",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 4, "channel_def": CHANNEL_DEF}},
            "outputs": {"pred": {"num_channels": 3, "channel_def": {"0": "TC", "1": "WT", "2": "ET"}}},
        },
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    config = {
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        **(extra_config or {}),
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    if weights:
        torch.manual_seed(seed)
        args = {k: v for k, v in TINY_NETWORK.items() if k != "_target_"}
        net = SegResNet(**args)
        (folder / "models").mkdir(exist_ok=True)
        torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder
