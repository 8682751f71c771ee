"""UMambaBot2: nnU-Net's residual-encoder U-Net with a Mamba2 layer on the bottleneck.

A clean reimplementation from the description of U-Mamba2 (Tan et al. 2025, arXiv 2509.12069); no code
of the authors' (non-commercially licensed) fork is used. The bottleneck feature map (the last encoder
stage's output), flattened in C order into one token sequence, goes through ``LayerNorm`` and a
`Mamba2Mixer` (one direction, no residual, no positional embedding), is reshaped back and replaces the
last skip before nnU-Net's `UNetDecoder`; deep supervision is the decoder's.

nnU-Net builds it from plans by its dotted name, ``segkit.backends.umamba2.network.UMambaBot2``, with
``arch_kwargs`` as for `ResidualEncoderUNet` plus the mixer's keywords (``d_state``, ``d_conv``,
``expand``, ``headdim``, ``ngroups``, ``chunk_size``, ``torch_chunk_size``, ``mamba_kernel``) and the usual
``_kw_requires_import`` for ``conv_op``/``norm_op``/``dropout_op``/``nonlin``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from segkit.backends.umamba2.mamba2 import Mamba2Mixer

KERNEL_ENV = "SEGKIT_MAMBA_KERNEL"
"""Environment variable that overrides the plans' ``mamba_kernel`` (``auto``, ``torch``, ``mamba-ssm``).

The kernel is a property of the machine, not of the model: the plans (and so the checkpoint) keep
``auto``, and ``segkit train/infer --mamba-kernel`` set this variable in the nnU-Net process. Users of
nnU-Net's own tools may set it too.
"""


class MambaLayer(nn.Module):
    """LayerNorm + Mamba2 over the voxels of a feature map, as one C-order token sequence.

    Args:
        dim: channels of the feature map (the tokens' width).
        **mixer: keywords of `Mamba2Mixer` (``d_state``, ``d_conv``, ``expand``, ``headdim``, ...).

    Shapes: (batch, dim, *spatial) -> (batch, dim, *spatial), spatial of any rank; token i is voxel i of
    the row-major flattening (last axis fastest).
    """

    def __init__(self, dim: int, **mixer: Any) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba2Mixer(d_model=dim, **mixer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        tokens = x.reshape(batch, channels, -1).transpose(1, 2)  # (batch, voxels, channels)
        out = self.mamba(self.norm(tokens))
        return out.transpose(1, 2).reshape(batch, channels, *spatial)


class UMambaBot2(ResidualEncoderUNet):
    """`ResidualEncoderUNet` whose bottleneck goes through a `MambaLayer` before the decoder.

    Args:
        input_channels ... stem_channels: exactly `ResidualEncoderUNet`'s (nnU-Net's ``arch_kwargs``).
        d_state, d_conv, expand, headdim, ngroups, chunk_size, torch_chunk_size: `Mamba2Mixer`'s
            (defaults as U-Mamba2's).
        mamba_kernel: ``"auto"``, ``"torch"`` or ``"mamba-ssm"`` (see `segkit.backends.umamba2.mamba2`);
            the environment variable `KERNEL_ENV`, when set, takes precedence.

    Raises:
        ConfigError: the mixer's sizes do not fit (``features_per_stage[-1] * expand`` not a multiple of
            ``headdim``, ...) or the kernel is unknown.
        MissingDependencyError: ``mamba_kernel="mamba-ssm"`` and mamba-ssm cannot be imported.

    ``initialize`` (applied by nnU-Net with ``network.apply(network.initialize)``) is
    `ResidualEncoderUNet`'s He initialisation of the convolutions; it leaves the Mamba layer's own
    initialisation (Linear, Conv1d, SSM parameters) as the mixer set it.
    """

    def __init__(
        self,
        input_channels: int,
        n_stages: int,
        features_per_stage: int | list[int] | tuple[int, ...],
        conv_op: type[nn.Module],
        kernel_sizes: int | list[int] | tuple[int, ...],
        strides: int | list[int] | tuple[int, ...],
        n_blocks_per_stage: int | list[int] | tuple[int, ...],
        num_classes: int,
        n_conv_per_stage_decoder: int | list[int] | tuple[int, ...],
        conv_bias: bool = False,
        norm_op: type[nn.Module] | None = None,
        norm_op_kwargs: dict[str, Any] | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict[str, Any] | None = None,
        nonlin: type[nn.Module] | None = None,
        nonlin_kwargs: dict[str, Any] | None = None,
        deep_supervision: bool = False,
        block: Any = None,
        bottleneck_channels: int | list[int] | tuple[int, ...] | None = None,
        stem_channels: int | None = None,
        d_state: int = 32,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 80,
        ngroups: int = 1,
        chunk_size: int = 256,
        torch_chunk_size: int = 64,
        mamba_kernel: str = "auto",
    ) -> None:
        extra = {} if block is None else {"block": block}  # None keeps ResidualEncoderUNet's BasicBlockD
        super().__init__(
            input_channels,
            n_stages,
            features_per_stage,
            conv_op,
            kernel_sizes,
            strides,
            n_blocks_per_stage,
            num_classes,
            n_conv_per_stage_decoder,
            conv_bias,
            norm_op,
            norm_op_kwargs,
            dropout_op,
            dropout_op_kwargs,
            nonlin,
            nonlin_kwargs,
            deep_supervision,
            bottleneck_channels=bottleneck_channels,
            stem_channels=stem_channels,
            **extra,
        )
        self.mamba_layer = MambaLayer(
            self.encoder.output_channels[-1],
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            headdim=headdim,
            ngroups=ngroups,
            chunk_size=chunk_size,
            torch_chunk_size=torch_chunk_size,
            kernel=os.environ.get(KERNEL_ENV, "").strip() or mamba_kernel,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segment (batch, input_channels, *patch); logits per class, a list when deep supervision is on."""
        skips = self.encoder(x)
        skips[-1] = self.mamba_layer(skips[-1])
        return self.decoder(skips)
