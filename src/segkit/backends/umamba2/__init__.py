"""UMamba2: a Mamba2-bottleneck residual U-Net for nnU-Net (network and mixer only so far).

This package registers no backend yet. `segkit.backends.umamba2.network.UMambaBot2` is the network nnU-Net
builds from plans; `segkit.backends.umamba2.mamba2.Mamba2Mixer` is its Mamba2 layer. Importing this
package imports neither torch nor nnunetv2.
"""
