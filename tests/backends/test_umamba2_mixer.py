"""Mamba2Mixer: the PyTorch SSD scan against a naive recurrence, gradients, weights, kernels."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")

from torch.nn import functional  # noqa: E402

from segkit.backends.umamba2 import mamba2  # noqa: E402
from segkit.backends.umamba2.mamba2 import Mamba2Mixer, resolve_kernel, ssd_scan  # noqa: E402
from segkit.errors import BackendError, ConfigError, MissingDependencyError  # noqa: E402

# mamba-ssm's Mamba2Simple(d_model=320, d_state=32, d_conv=4, expand=2, headdim=80): names, shapes, order.
MAMBA2SIMPLE_320 = [
    ("dt_bias", (8,)),
    ("A_log", (8,)),
    ("D", (8,)),
    ("in_proj.weight", (1352, 320)),
    ("conv1d.weight", (704, 1, 4)),
    ("conv1d.bias", (704,)),
    ("norm.weight", (640,)),
    ("out_proj.weight", (320, 640)),
]


def _naive_scan(x, dt, a, b, c):
    """h_t = exp(dt_t a) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t, one step at a time."""
    batch, length, heads, headdim = x.shape
    rep = heads // b.shape[2]
    b, c = b.repeat_interleave(rep, dim=2), c.repeat_interleave(rep, dim=2)
    h = x.new_zeros(batch, heads, headdim, b.shape[-1])
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, t] * a)[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * b[:, t, :, None]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, c[:, t]))
    return torch.stack(ys, dim=1)


def _naive_mixer(m: Mamba2Mixer, u):
    """The Mamba2 layer written out step by step from the module's parameters (no chunking, explicit conv)."""
    batch, length, _ = u.shape
    zxbcdt = u @ m.in_proj.weight.T
    z, xbc, dt = zxbcdt.split([m.d_inner, m.d_inner + 2 * m.ngroups * m.d_state, m.nheads], dim=-1)
    w = m.conv1d.weight[:, 0]  # (channels, width); tap width-1 multiplies the current token
    taps = range(m.d_conv)
    conv = torch.stack(
        [
            m.conv1d.bias + sum(w[:, k] * xbc[:, t - m.d_conv + 1 + k] for k in taps if t - m.d_conv + 1 + k >= 0)
            for t in range(length)
        ],
        dim=1,
    )
    xbc = conv * torch.sigmoid(conv)
    x, b, c = xbc.split([m.d_inner, m.ngroups * m.d_state, m.ngroups * m.d_state], dim=-1)
    x = x.reshape(batch, length, m.nheads, m.headdim)
    dt = torch.log1p(torch.exp(dt + m.dt_bias))
    y = _naive_scan(
        x, dt, -torch.exp(m.A_log), b.reshape(batch, length, m.ngroups, -1), c.reshape(batch, length, m.ngroups, -1)
    )
    y = (y + m.D[:, None] * x).reshape(batch, length, m.d_inner)
    g = y * z * torch.sigmoid(z)
    g = g.reshape(batch, length, m.ngroups, -1)
    g = g / torch.sqrt((g * g).mean(-1, keepdim=True) + m.norm.eps)
    return (g.reshape(batch, length, m.d_inner) * m.norm.weight) @ m.out_proj.weight.T


def _mixer(**kw) -> Mamba2Mixer:
    torch.manual_seed(0)
    args = {
        "d_model": 16,
        "d_state": 8,
        "d_conv": 4,
        "expand": 2,
        "headdim": 8,
        "torch_chunk_size": 8,
        "kernel": "torch",
    }
    m = Mamba2Mixer(**{**args, **kw}).double()
    with torch.no_grad():  # larger steps than the init's so that the decay matters over a few tokens
        m.dt_bias.add_(2.0)
        m.D.uniform_(-1, 1)
        m.norm.weight.uniform_(0.5, 1.5)
    return m


@pytest.mark.parametrize(("batch", "length", "chunk"), [(1, 1, 8), (2, 7, 8), (2, 8, 8), (3, 21, 8), (2, 40, 16)])
def test_scan_equals_naive_recurrence_forward_and_backward(batch: int, length: int, chunk: int) -> None:
    g = torch.Generator().manual_seed(length)
    heads, headdim, groups, n = 4, 3, 2, 5
    x = torch.randn(batch, length, heads, headdim, dtype=torch.float64, generator=g, requires_grad=True)
    dt = functional.softplus(torch.randn(batch, length, heads, dtype=torch.float64, generator=g)).requires_grad_()
    a = (-torch.rand(heads, dtype=torch.float64, generator=g) * 3).requires_grad_()
    b = torch.randn(batch, length, groups, n, dtype=torch.float64, generator=g, requires_grad=True)
    c = torch.randn(batch, length, groups, n, dtype=torch.float64, generator=g, requires_grad=True)
    inputs = (x, dt, a, b, c)
    got = ssd_scan(*inputs, chunk_size=chunk)
    want = _naive_scan(*inputs)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    probe = torch.randn(want.shape, dtype=torch.float64, generator=g)
    grads_got = torch.autograd.grad((got * probe).sum(), inputs)
    grads_want = torch.autograd.grad((want * probe).sum(), inputs)
    for name, gg, gw in zip(["x", "dt", "a", "b", "c"], grads_got, grads_want, strict=True):
        torch.testing.assert_close(gg, gw, atol=1e-6, rtol=0, msg=f"gradient of {name}")


def test_scan_does_not_depend_on_chunk_size() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 29, 2, 3, dtype=torch.float64, generator=g)
    dt = functional.softplus(torch.randn(2, 29, 2, dtype=torch.float64, generator=g))
    a = -torch.rand(2, dtype=torch.float64, generator=g)
    b, c = (torch.randn(2, 29, 1, 4, dtype=torch.float64, generator=g) for _ in range(2))
    ref = ssd_scan(x, dt, a, b, c, chunk_size=256)
    for chunk in (1, 4, 10, 29):
        torch.testing.assert_close(ssd_scan(x, dt, a, b, c, chunk_size=chunk), ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize(("batch", "length"), [(1, 5), (2, 8), (2, 19)])
@pytest.mark.parametrize("ngroups", [1, 2])
def test_mixer_equals_naive_layer_forward_and_backward(batch: int, length: int, ngroups: int) -> None:
    m = _mixer(ngroups=ngroups)
    u = torch.randn(batch, length, m.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    u.requires_grad_()
    params = [u, *m.parameters()]
    got, want = m(u), _naive_mixer(m, u)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    grads_got = torch.autograd.grad(got.square().sum(), params)
    grads_want = torch.autograd.grad(want.square().sum(), params)
    names = ["input", *(n for n, _ in m.named_parameters())]
    for name, gg, gw in zip(names, grads_got, grads_want, strict=True):
        torch.testing.assert_close(gg, gw, atol=1e-6, rtol=1e-6, msg=f"gradient of {name}")


def test_gradcheck_tiny() -> None:
    m = _mixer(d_model=4, d_state=2, d_conv=2, headdim=4, torch_chunk_size=2)
    u = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True, generator=torch.Generator().manual_seed(5))
    assert torch.autograd.gradcheck(m, (u,), eps=1e-6, atol=1e-5)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 5, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    dt = functional.softplus(torch.randn(1, 5, 2, dtype=torch.float64, generator=g)).requires_grad_()
    a = (-torch.rand(2, dtype=torch.float64, generator=g)).requires_grad_()
    b = torch.randn(1, 5, 1, 3, dtype=torch.float64, generator=g, requires_grad=True)
    c = torch.randn(1, 5, 1, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: ssd_scan(*t, chunk_size=2), (x, dt, a, b, c))


def test_parameters_are_mamba2simple_and_state_dict_round_trips() -> None:
    m = Mamba2Mixer(d_model=320, kernel="torch")
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == MAMBA2SIMPLE_320
    assert sum(p.numel() for p in m.parameters()) == 641_624  # + LayerNorm(320) = 0.642 M in UMambaBot2
    other = Mamba2Mixer(d_model=320, kernel="torch")
    assert not torch.equal(other.A_log, m.A_log)
    other.load_state_dict(m.state_dict(), strict=True)
    u = torch.randn(2, 10, 320)
    with torch.no_grad():
        torch.testing.assert_close(other(u), m(u), rtol=0, atol=0)


def test_initialisation_as_mamba2simple() -> None:
    m = Mamba2Mixer(d_model=64, headdim=16, kernel="torch")
    dt = functional.softplus(m.dt_bias)
    assert (dt >= 1e-3 - 1e-7).all()
    assert (dt <= 0.1 + 1e-7).all()
    a = torch.exp(m.A_log)
    assert (a >= 1).all()
    assert (a <= 16).all()
    assert torch.equal(m.D, torch.ones(8))
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.dt_bias, m.A_log, m.D))


def test_runs_in_fp32_under_autocast() -> None:
    m = Mamba2Mixer(d_model=32, headdim=16, kernel="torch")
    u = torch.randn(2, 12, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(u.bfloat16())
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        torch.testing.assert_close(out.float(), m(u.bfloat16().float()), atol=2e-2, rtol=2e-2)
    assert torch.isfinite(out).all()


def test_bad_sizes_and_kernel_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"d_model\*expand \(100\*2 = 200\) is not a multiple of headdim 80"):
        Mamba2Mixer(d_model=100)
    with pytest.raises(ConfigError, match="ngroups 3 does not divide the 8 heads"):
        Mamba2Mixer(d_model=320, ngroups=3)
    with pytest.raises(ConfigError, match="unknown Mamba2 kernel 'cuda'"):
        Mamba2Mixer(d_model=320, kernel="cuda")
    with pytest.raises(ConfigError, match="unknown Mamba2 kernel"):
        resolve_kernel("fast", "cpu")


def _no_mamba_ssm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mamba2, "_load_fused", lambda: (None, "ModuleNotFoundError: No module named 'mamba_ssm'"))


def test_mamba_ssm_requested_but_missing_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_mamba_ssm(monkeypatch)
    with pytest.raises(MissingDependencyError, match="mamba-ssm cannot be imported") as info:
        Mamba2Mixer(d_model=320, kernel="mamba-ssm")
    assert "\n" not in str(info.value)
    assert info.value.hint
    assert "mamba" in info.value.hint


def test_mamba_ssm_kernel_on_cpu_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mamba2, "_load_fused", lambda: (lambda *a, **k: None, ""))
    m = Mamba2Mixer(d_model=32, headdim=16, kernel="mamba-ssm")
    with pytest.raises(BackendError, match="needs CUDA tensors, got a tensor on cpu"):
        m(torch.randn(1, 4, 32))


def test_auto_falls_back_with_one_log_line(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _no_mamba_ssm(monkeypatch)
    mamba2._log_fallback.cache_clear()
    caplog.set_level(logging.INFO, logger=mamba2.__name__)
    assert resolve_kernel("auto", "cpu") == "torch"
    assert not caplog.records  # on the CPU the torch scan is simply the choice
    for _ in range(3):
        assert resolve_kernel("auto", "cuda") == "torch"
    assert len(caplog.records) == 1
    assert "No module named 'mamba_ssm'" in caplog.records[0].getMessage()
    mamba2._log_fallback.cache_clear()


def test_module_import_does_not_import_mamba_ssm() -> None:
    import subprocess
    import sys

    code = "import sys, segkit.backends.umamba2.network; assert 'mamba_ssm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.gpu
@pytest.mark.parametrize("length", [80, 333])
def test_torch_scan_matches_mamba_ssm_kernel(length: int) -> None:
    if not mamba2.mamba_ssm_importable():
        pytest.skip(f"mamba-ssm cannot be imported: {mamba2._load_fused()[1]}")
    torch.manual_seed(0)
    fused = Mamba2Mixer(d_model=320, kernel="mamba-ssm").cuda()
    ref = Mamba2Mixer(d_model=320, kernel="torch").cuda()
    ref.load_state_dict(fused.state_dict())
    u = torch.randn(2, length, 320, device="cuda")
    outs, grads = [], []
    for m in (fused, ref):
        x = u.clone().requires_grad_()
        out = m(x)
        out.square().mean().backward()
        outs.append(out.detach())
        grads.append([x.grad, *(p.grad for p in m.parameters())])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-3, atol=1e-4)
    for g_fused, g_ref in zip(*grads, strict=True):
        torch.testing.assert_close(g_fused, g_ref, rtol=1e-3, atol=1e-4)
