"""UMamba2: a Mamba2-bottleneck residual U-Net trained and predicted through nnU-Net.

`UMamba2Backend` (the ``umamba2`` backend) is built on the nnU-Net adapter; `network.UMambaBot2` is the
network nnU-Net builds from the plans; `mamba2.Mamba2Mixer` is its Mamba2 layer; `plans` adds the
configuration, `trainer` and `pretrained` are used inside nnU-Net's processes. Importing this package
imports neither torch nor nnunetv2.
"""

from segkit.backends.umamba2.backend import UMamba2Backend

__all__ = ["UMamba2Backend"]
