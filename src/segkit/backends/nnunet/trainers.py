"""segkit's nnU-Net trainer subclasses (imported only inside nnU-Net processes).

`derive_trainer` builds a subclass of any trainer nnU-Net can find (its own, or one in a folder of
``nnUNet_extTrainer``, such as a segkit backend's trainer folder) with a shorter schedule or without
mirroring. The modules that segkit writes to its generated-trainers folder call it, so nnU-Net finds the
class by name both when training and when predicting.
"""

from __future__ import annotations

import os
from typing import Any


def find_trainer(name: str, *, exclude: str | None = None) -> type:
    """Trainer class `name` as nnU-Net looks it up: its own trainers, then each ``nnUNet_extTrainer`` folder.

    Args:
        name: Trainer class name.
        exclude: A folder not to search: the generated-trainers folder when a module there is being
            imported (searching it would import that module again, recursively).

    Raises:
        RuntimeError: No such trainer (nnU-Net's own error type for this).
    """
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    root = nnunetv2.__path__[0]
    folder = os.path.join(root, "training", "nnUNetTrainer")
    cls = recursive_find_python_class(folder, name, "nnunetv2.training.nnUNetTrainer", root)
    searched = [folder]
    # The segkit process set nnUNet_extTrainer for this child process; reading it here is what nnU-Net does.
    for path in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep):
        if cls is not None:
            break
        if not path.strip() or not os.path.isdir(path):
            continue
        if exclude is not None and os.path.abspath(path) == os.path.abspath(exclude):
            continue
        searched.append(path)
        cls = recursive_find_python_class(path, name, None, base_folder=path, cleanup_imports_from_base_folder=True)
    if cls is None:
        msg = f"nnU-Net trainer {name!r} not found (searched {', '.join(searched)})"
        raise RuntimeError(msg)
    return cls


def derive_trainer(
    name: str,
    base: str,
    *,
    mirroring: bool = True,
    exclude: str | None = None,
    base_module: str | None = None,
    **overrides: Any,
) -> type:
    """A subclass of nnU-Net trainer `base` named `name` with attribute overrides.

    Args:
        name: Class name (nnU-Net stores it in checkpoints and model folder names).
        base: Name of any trainer nnU-Net can find (see `find_trainer`), e.g. ``nnUNetTrainer``.
        mirroring: False disables mirroring augmentation and mirrored inference, like
            ``nnUNetTrainerNoMirroring``.
        exclude: Folder of the calling generated module (see `find_trainer`).
        base_module: Module defining `base` (a segkit backend's trainer): imported instead of searched.
        **overrides: Attributes set after the base constructor, e.g. ``num_epochs=5``.
    """
    import torch

    if base_module is not None:
        import importlib

        try:
            base_cls: Any = getattr(importlib.import_module(base_module), base)
        except (ImportError, AttributeError) as err:
            msg = f"nnU-Net trainer {base!r} cannot be imported from {base_module} ({err})"
            raise RuntimeError(msg) from err
    else:
        base_cls = find_trainer(base, exclude=exclude)

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
