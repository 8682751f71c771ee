"""segkit's nnU-Net trainer subclasses (imported only inside nnU-Net processes).

`derive_trainer` builds a subclass of one of nnU-Net's own trainers with a shorter schedule or without
mirroring. The modules that segkit writes to its ``nnUNet_extTrainer`` folder call it, so nnU-Net finds
the class by name both when training and when predicting.
"""

from __future__ import annotations

import os
from typing import Any


def _find_builtin_trainer(name: str) -> type:
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    # Only nnU-Net's own trainers can be bases: looking in the external folders from here would import
    # the module that is being imported right now.
    folder = os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")
    cls = recursive_find_python_class(folder, name, "nnunetv2.training.nnUNetTrainer")
    if cls is None:
        msg = f"nnU-Net trainer {name!r} not found among nnU-Net's trainers"
        raise RuntimeError(msg)
    return cls


def derive_trainer(name: str, base: str, *, mirroring: bool = True, **overrides: Any) -> type:
    """A subclass of nnU-Net trainer `base` named `name` with attribute overrides.

    Args:
        name: Class name (nnU-Net stores it in checkpoints and model folder names).
        base: Name of one of nnU-Net's trainers, e.g. ``nnUNetTrainer``.
        mirroring: False disables mirroring augmentation and mirrored inference, like
            ``nnUNetTrainerNoMirroring``.
        **overrides: Attributes set after the base constructor, e.g. ``num_epochs=5``.
    """
    import torch

    base_cls: Any = _find_builtin_trainer(base)

    # nnU-Net records its constructor arguments by inspecting the signature of self.__init__, so the
    # subclass must keep the exact parameter names.
    def __init__(  # noqa: N807
        self: Any,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own default
    ) -> None:
        base_cls.__init__(self, plans, configuration, fold, dataset_json, device)
        for key, value in overrides.items():
            setattr(self, key, value)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self: Any) -> Any:  # noqa: N802
        rotation, dummy_2d, patch_size, mirror_axes = (
            base_cls.configure_rotation_dummyDA_mirroring_and_inital_patch_size(self)
        )
        if not mirroring:
            mirror_axes = None
            self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, patch_size, mirror_axes

    namespace = {
        "__init__": __init__,
        "configure_rotation_dummyDA_mirroring_and_inital_patch_size": (
            configure_rotation_dummyDA_mirroring_and_inital_patch_size
        ),
        "__doc__": f"{base} with {overrides or 'default schedule'}{'' if mirroring else ', no mirroring'} (segkit).",
    }
    return type(name, (base_cls,), namespace)
