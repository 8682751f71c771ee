"""nnU-Net v2 backend (entry point ``nnunet``). Importing this package imports neither torch nor nnunetv2."""

from segkit.backends.nnunet.backend import NnUNetBackend
from segkit.backends.nnunet.options import NnUNetOptions

__all__ = ["NnUNetBackend", "NnUNetOptions"]
