"""A Mamba2 mixer with two kernels behind the same weights: a pure-PyTorch chunked SSD scan and mamba-ssm's.

`Mamba2Mixer` creates its parameters exactly as mamba-ssm's `Mamba2Simple` does (names, shapes, order:
``dt_bias``, ``A_log``, ``D``, ``in_proj.weight``, ``conv1d.weight``, ``conv1d.bias``, ``norm.weight``,
``out_proj.weight``), so state dicts load either way with ``strict=True``. Its forward is the Mamba2
layer: ``in_proj`` splits into ``[z | x | B | C | dt]``; ``x, B, C`` go through a depthwise causal
convolution and SiLU; the selective state-space recurrence (one scalar decay per head)

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T,        y_t = h_t C_t + D * x_t

is evaluated by a chunked "state-space duality" (SSD) scan; then the gated RMSNorm
``rmsnorm(y * silu(z))`` and ``out_proj``.

Kernels (``kernel=``):

* ``"torch"``: the chunked SSD scan below, in plain PyTorch (CPU, CI, any GPU).
* ``"mamba-ssm"``: mamba-ssm's fused Triton/CUDA kernel ``mamba_split_conv1d_scan_combined`` with the
  module's own tensors, as `Mamba2Simple` calls it. CUDA tensors only; needs the ``mamba`` extra.
* ``"auto"``: mamba-ssm on CUDA tensors when it imports, otherwise the torch scan (one log line the first
  time a CUDA tensor falls back).

mamba-ssm is imported only inside functions, never when this module is imported: its import fails on
machines without CUDA builds, and segkit must work there.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional

from segkit.errors import BackendError, ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

KERNELS: tuple[str, ...] = ("auto", "torch", "mamba-ssm")

_MAMBA_HINT = (
    "install mamba-ssm and causal-conv1d (segkit's `mamba` extra; built against the local CUDA toolkit) on a "
    "CUDA machine, or use kernel 'torch'"
)


@functools.lru_cache(maxsize=1)
def _load_fused() -> tuple[Callable[..., torch.Tensor] | None, str]:
    """mamba-ssm's fused kernel and an empty string, or None and why it cannot be imported (cached)."""
    try:
        import causal_conv1d  # noqa: F401 - the fused kernel's convolution; without it the kernel fails late
        from mamba_ssm.ops.triton.ssd_combined import mamba_split_conv1d_scan_combined
    except Exception as exc:  # mamba-ssm's import fails in many ways (missing CUDA extensions, triton, ...)
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    return mamba_split_conv1d_scan_combined, ""


@functools.lru_cache(maxsize=1)
def _log_fallback(reason: str) -> None:
    # lru_cache makes this fire once per process, not once per forward pass.
    log.info("mamba-ssm cannot be imported (%s); the Mamba2 mixer uses the PyTorch scan", reason)


def mamba_ssm_importable() -> bool:
    """Whether mamba-ssm's fused Mamba2 kernel can be imported here."""
    return _load_fused()[0] is not None


def resolve_kernel(requested: str, device: torch.device | str) -> Literal["torch", "mamba-ssm"]:
    """The kernel a mixer with ``kernel=requested`` uses for tensors on `device`.

    Raises:
        ConfigError: `requested` is not one of `KERNELS`.
        MissingDependencyError: ``"mamba-ssm"`` was requested and cannot be imported.
        BackendError: ``"mamba-ssm"`` was requested for a tensor that is not on CUDA.
    """
    device = torch.device(device)
    if requested == "torch":
        return "torch"
    if requested == "mamba-ssm":
        fused, reason = _load_fused()
        if fused is None:
            msg = f"Mamba2 kernel 'mamba-ssm' requested but mamba-ssm cannot be imported ({reason})"
            raise MissingDependencyError(msg, hint=_MAMBA_HINT)
        if device.type != "cuda":
            msg = f"Mamba2 kernel 'mamba-ssm' needs CUDA tensors, got a tensor on {device.type}"
            raise BackendError(msg, hint="use kernel 'auto' or 'torch' off CUDA")
        return "mamba-ssm"
    if requested == "auto":
        if device.type != "cuda":
            return "torch"
        fused, reason = _load_fused()
        if fused is None:
            _log_fallback(reason)
            return "torch"
        return "mamba-ssm"
    msg = f"unknown Mamba2 kernel {requested!r}; choose one of {', '.join(KERNELS)}"
    raise ConfigError(msg)


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """Pairwise segment sums of `a` (..., T): out[..., i, j] = a[j+1] + ... + a[i] for i >= j, else -inf.

    Summing the masked terms (rather than subtracting two cumulative sums) keeps the decays exact when the
    cumulative sum is large, and the -inf above the diagonal makes ``exp`` give the causal mask.
    """
    t = a.shape[-1]
    terms = a[..., :, None].expand(*a.shape, t)  # [..., i, j] = a[i]
    strictly_lower = torch.ones(t, t, dtype=torch.bool, device=a.device).tril(-1)
    sums = terms.masked_fill(~strictly_lower, 0.0).cumsum(dim=-2)
    lower = torch.ones(t, t, dtype=torch.bool, device=a.device).tril(0)
    return sums.masked_fill(~lower, -math.inf)


def ssd_scan(
    x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """The selective state-space scan of Mamba2, by chunks (the SSD algorithm), in the inputs' dtype.

    Within a chunk the output is a masked (decay-weighted) attention-like product; across chunks a state
    of shape (heads, headdim, d_state) is passed on. The result does not depend on `chunk_size`; the
    sequence is zero-padded to a multiple of it (padded steps have dt = 0, so they change nothing).

    Args:
        x: (batch, length, heads, headdim) inputs.
        dt: (batch, length, heads) positive step sizes (softplus already applied).
        a: (heads,) negative decay rates (``-exp(A_log)``).
        b: (batch, length, groups, d_state) input projections; heads are split evenly over groups.
        c: (batch, length, groups, d_state) output projections.
        chunk_size: tokens per chunk (capped at the sequence length).

    Returns:
        (batch, length, heads, headdim): ``y_t = sum_s<=t C_t·B_s exp(sum_{s<k<=t} dt_k a) dt_s x_s``.
    """
    batch, length, heads, headdim = x.shape
    groups, d_state = b.shape[2], b.shape[3]
    b = b.repeat_interleave(heads // groups, dim=2)
    c = c.repeat_interleave(heads // groups, dim=2)
    chunk = max(1, min(chunk_size, length))
    pad = (-length) % chunk
    if pad:
        x = functional.pad(x, (0, 0, 0, 0, 0, pad))
        dt = functional.pad(dt, (0, 0, 0, pad))
        b = functional.pad(b, (0, 0, 0, 0, 0, pad))
        c = functional.pad(c, (0, 0, 0, 0, 0, pad))
    n_chunks = (length + pad) // chunk
    xdt = (x * dt[..., None]).reshape(batch, n_chunks, chunk, heads, headdim)
    b = b.reshape(batch, n_chunks, chunk, heads, d_state)
    c = c.reshape(batch, n_chunks, chunk, heads, d_state)
    log_decay = (dt * a).reshape(batch, n_chunks, chunk, heads).permute(0, 3, 1, 2)  # (b, h, chunks, l)
    cum = log_decay.cumsum(dim=-1)

    # 1. Within each chunk: y_l = sum_{s<=l} (C_l·B_s) * decay(s->l) * xdt_s.
    decay_in_chunk = torch.exp(_segsum(log_decay))  # (b, h, chunks, l, s)
    y = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", c, b, decay_in_chunk, xdt)

    # 2. The state each chunk leaves behind, from its own inputs only.
    decay_to_end = torch.exp(cum[..., -1:] - cum)  # (b, h, chunks, l)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", b, decay_to_end, xdt)

    # 3. Pass states across chunks (a recurrence over chunks, written as one product), zero initial state.
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    decay_chunks = torch.exp(_segsum(functional.pad(cum[..., -1], (1, 0))))  # (b, h, chunks+1, chunks+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunks, states)[:, :-1]  # state entering each chunk

    # 4. What the entering state contributes to each position of its chunk.
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", c, states, torch.exp(cum))
    return y.reshape(batch, n_chunks * chunk, heads, headdim)[:, :length]


class RMSNormGated(nn.Module):
    """``rmsnorm(y * silu(z)) * weight`` over groups of channels (mamba-ssm's `RMSNormGated`, gate first).

    Args:
        hidden_size: channels.
        eps: added to the mean square.
        group_size: channels normalised together (``hidden_size // ngroups``).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, group_size: int | None = None, **factory: Any) -> None:
        super().__init__()
        self.eps = eps
        self.group_size = group_size or hidden_size
        self.weight = nn.Parameter(torch.ones(hidden_size, **factory))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y * functional.silu(z)
        grouped = y.reshape(*y.shape[:-1], -1, self.group_size)
        grouped = grouped * torch.rsqrt(grouped.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return grouped.reshape(y.shape) * self.weight


class Mamba2Mixer(nn.Module):
    """The Mamba2 layer on a token sequence, with the parameters of mamba-ssm's `Mamba2Simple`.

    Args:
        d_model: channels of the tokens.
        d_state: state size per head (N).
        d_conv: width of the causal depthwise convolution.
        expand: ``d_inner = expand * d_model``.
        headdim: channels per head; ``d_inner`` must be a multiple of it.
        ngroups: groups of heads sharing B and C; must divide the number of heads.
        chunk_size: tokens per chunk of mamba-ssm's kernel (its default 256).
        torch_chunk_size: tokens per chunk of the PyTorch scan: 64 is the fastest on a CPU
            (docs/benchmarks.md). Neither chunk size changes the result, only the speed.
        kernel: ``"auto"``, ``"torch"`` or ``"mamba-ssm"`` (see the module docstring).
        dt_min, dt_max, dt_init_floor, A_init_range: initialisation ranges, as in `Mamba2Simple`.
        device, dtype: for the parameters.

    Raises:
        ConfigError: `d_model * expand` is not a multiple of `headdim`, `ngroups` does not divide the
            heads, or `kernel` is unknown.
        MissingDependencyError: ``kernel="mamba-ssm"`` and mamba-ssm cannot be imported.

    Shapes: ``forward`` maps (batch, length, d_model) to (batch, length, d_model). The projections and
    the scan run in float32 (float64 for float64 parameters) even under autocast: the bottleneck
    sequences are short, and half-precision scans are where Mamba layers produce NaNs.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 32,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 80,
        ngroups: int = 1,
        chunk_size: int = 256,
        torch_chunk_size: int = 64,
        kernel: str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1.0, 16.0),  # noqa: N803 - mamba-ssm's keyword
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        if d_model <= 0 or expand <= 0 or headdim <= 0 or d_inner % headdim:
            msg = f"Mamba2: d_model*expand ({d_model}*{expand} = {d_inner}) is not a multiple of headdim {headdim}"
            raise ConfigError(msg)
        nheads = d_inner // headdim
        if ngroups <= 0 or nheads % ngroups:
            msg = f"Mamba2: ngroups {ngroups} does not divide the {nheads} heads"
            raise ConfigError(msg)
        if chunk_size <= 0 or torch_chunk_size <= 0:
            msg = f"Mamba2: chunk sizes must be positive, got {chunk_size} and {torch_chunk_size}"
            raise ConfigError(msg)
        if kernel not in KERNELS:
            msg = f"unknown Mamba2 kernel {kernel!r}; choose one of {', '.join(KERNELS)}"
            raise ConfigError(msg)
        if kernel == "mamba-ssm" and not mamba_ssm_importable():
            msg = f"Mamba2 kernel 'mamba-ssm' requested but mamba-ssm cannot be imported ({_load_fused()[1]})"
            raise MissingDependencyError(msg, hint=_MAMBA_HINT)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner, self.headdim, self.nheads, self.ngroups = d_inner, headdim, nheads, ngroups
        self.chunk_size, self.torch_chunk_size, self.kernel = chunk_size, torch_chunk_size, kernel

        # Creation order fixes the state-dict order; it is Mamba2Simple's.
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=False, **factory)
        conv_dim = d_inner + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(
            conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim, padding=d_conv - 1, bias=True, **factory
        )
        self.dt_bias = nn.Parameter(torch.empty(nheads, **factory))
        self.A_log = nn.Parameter(torch.empty(nheads, **factory))
        self.D = nn.Parameter(torch.empty(nheads, **factory))
        self.norm = RMSNormGated(d_inner, eps=1e-5, group_size=d_inner // ngroups, **factory)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **factory)
        self._init_ssm(dt_min, dt_max, dt_init_floor, A_init_range)

    @torch.no_grad()
    def _init_ssm(self, dt_min: float, dt_max: float, dt_floor: float, a_range: tuple[float, float]) -> None:
        # Step sizes log-uniform in [dt_min, dt_max]; dt_bias is their softplus inverse, so that
        # softplus(0 + dt_bias) starts there. Decay rates uniform in a_range, stored as log. D = 1.
        log_dt = torch.rand_like(self.dt_bias) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=dt_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(*a_range).log())
        self.D.fill_(1.0)
        # The optimiser setups of Mamba code bases skip weight decay on these.
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True  # type: ignore[attr-defined]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Mix a (batch, length, d_model) sequence; returns the same shape and dtype."""
        kernel = resolve_kernel(self.kernel, u.device)
        compute = torch.float64 if self.in_proj.weight.dtype == torch.float64 else torch.float32
        with torch.autocast(u.device.type, enabled=False):
            x = u.to(compute)
            out = self._forward_fused(x) if kernel == "mamba-ssm" else self._forward_torch(x)
        return out.to(u.dtype)

    def _forward_torch(self, u: torch.Tensor) -> torch.Tensor:
        batch, length, _ = u.shape
        z, xbc, dt = torch.split(
            self.in_proj(u), [self.d_inner, self.d_inner + 2 * self.ngroups * self.d_state, self.nheads], dim=-1
        )
        xbc = functional.silu(self.conv1d(xbc.transpose(1, 2))[..., :length].transpose(1, 2))  # causal: drop the tail
        x, b, c = torch.split(xbc, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        x = x.reshape(batch, length, self.nheads, self.headdim)
        y = ssd_scan(
            x,
            functional.softplus(dt + self.dt_bias),
            -torch.exp(self.A_log),
            b.reshape(batch, length, self.ngroups, self.d_state),
            c.reshape(batch, length, self.ngroups, self.d_state),
            self.torch_chunk_size,
        )
        y = y + x * self.D[:, None]
        return self.out_proj(self.norm(y.reshape(batch, length, self.d_inner), z))

    def _forward_fused(self, u: torch.Tensor) -> torch.Tensor:
        fused, _ = _load_fused()
        assert fused is not None  # resolve_kernel checked it
        return fused(
            self.in_proj(u),
            self.conv1d.weight.squeeze(1),
            self.conv1d.bias,
            self.dt_bias,
            -torch.exp(self.A_log),
            D=self.D,
            chunk_size=self.chunk_size,
            activation="silu",
            rmsnorm_weight=self.norm.weight,
            rmsnorm_eps=self.norm.eps,
            outproj_weight=self.out_proj.weight,
            outproj_bias=None,
            headdim=self.headdim,
            ngroups=self.ngroups,
            norm_before_gate=False,
        )
