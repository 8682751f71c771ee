"""segkit: BraTS-style brain-tumour segmentation from raw folders to scores and pictures.

Importing the package is cheap: frameworks (torch, MONAI, nnU-Net, Dash, matplotlib) are imported only
by the functions that need them. The library API lives in `segkit.api`.
"""

from __future__ import annotations

import functools

__all__ = ["__version__"]


@functools.cache
def _version() -> str:
    # importlib.metadata costs ~40 ms to import; only pay it when the version is asked for.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segkit")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    msg = f"module 'segkit' has no attribute {name!r}"
    raise AttributeError(msg)
