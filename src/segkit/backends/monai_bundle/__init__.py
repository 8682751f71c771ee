"""MONAI bundle backend (entry point ``monai``). Importing this package imports neither torch nor monai."""

from segkit.backends.monai_bundle.backend import MonaiBundleBackend
from segkit.backends.monai_bundle.options import MonaiOptions

__all__ = ["MonaiBundleBackend", "MonaiOptions"]
