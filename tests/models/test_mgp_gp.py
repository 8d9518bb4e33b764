"""The batched MGP posterior against a dense float64 computation and gpytorch's ExactGP."""

from __future__ import annotations

import gpytorch
import numpy as np
import pytest
import torch

from models.mgp_tcn.gp import GPBatch, MultitaskGP, hourly_grid

V = 3


def _random_gp(seed: int = 0, v: int = V) -> MultitaskGP:
    """A GP with non-trivial parameters (not the identity init), in float64."""
    torch.manual_seed(seed)
    gp = MultitaskGP(v, jitter=0.1, init_lengthscale=2.5, init_noise=0.2).double()
    with torch.no_grad():
        gp.task_chol.copy_(torch.eye(v) + 0.5 * torch.randn(v, v))
        gp.raw_noise.copy_(
            gp.noise_constraint.inverse_transform(torch.rand(v, dtype=torch.float64) * 0.5 + 0.05)
        )
    return gp


def _random_batch(seed: int = 0, s: int = 4, m: int = 7, g: int = 6, v: int = V) -> GPBatch:
    """Stays with different numbers of observations (padding, holes), incl. one with none."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((s, m), bool)
    for i in range(s):
        k = [m, 1, 0, 4][i % 4]
        mask[i, rng.choice(m, k, replace=False)] = True  # holes, not only trailing padding
    times = -rng.random((s, m)) * (g + 2)  # some observations before the grid starts
    times[0, :2] = times[0, 2]  # repeated time stamps
    times[0, 3] = -2.0  # exactly on a grid point
    var_idx = rng.integers(0, v, (s, m))
    values = rng.normal(0, 1, (s, m))
    values[~mask] = rng.normal(0, 5, (~mask).sum())  # garbage in padding must not matter
    return GPBatch(
        torch.tensor(times),
        torch.tensor(var_idx),
        torch.tensor(values),
        torch.tensor(mask),
        hourly_grid(g, dtype=torch.float64),
    )


def _dense_single(gp: MultitaskGP, t, vi, y, grid) -> tuple[np.ndarray, np.ndarray]:
    """Textbook posterior for one stay in numpy float64, no padding."""
    ell = float(gp.lengthscale.detach())
    kf = gp.task_covar().detach().numpy()
    noise = gp.noise().detach().numpy()
    k = lambda a, b: np.exp(-np.abs(a[:, None] - b[None, :]) / ell)  # noqa: E731
    kyy = kf[np.ix_(vi, vi)] * k(t, t) + np.diag(noise[vi] + 0.1)
    gg, ii = np.meshgrid(grid, np.arange(kf.shape[0]), indexing="ij")
    gs, is_ = gg.ravel(), ii.ravel()  # time-major order g*V + i
    ksy = kf[np.ix_(is_, vi)] * k(gs, t)
    kss = kf[np.ix_(is_, is_)] * k(gs, gs)
    mean = ksy @ np.linalg.solve(kyy, y)
    cov = kss - ksy @ np.linalg.solve(kyy, ksy.T) + 0.1 * np.eye(len(gs))
    return mean.reshape(len(grid), -1), cov


class _HadamardGP(gpytorch.models.ExactGP):
    """gpytorch's Hadamard multitask GP: MaternKernel(nu=0.5) on time x IndexKernel on task."""

    def __init__(self, x, i, y, likelihood, v):
        super().__init__((x, i), y, likelihood)
        self.mean_module = gpytorch.means.ZeroMean()
        self.covar_module = gpytorch.kernels.MaternKernel(nu=0.5)
        self.task_covar_module = gpytorch.kernels.IndexKernel(num_tasks=v, rank=v)

    def forward(self, x, i):
        covar = self.covar_module(x).mul(self.task_covar_module(i))
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), covar)


def _gpytorch_single(gp: MultitaskGP, t, vi, y, grid) -> tuple[np.ndarray, np.ndarray]:
    v = gp.n_variables
    noise = gp.noise().detach()[torch.as_tensor(vi)] + 0.1
    lik = gpytorch.likelihoods.FixedNoiseGaussianLikelihood(
        noise=noise, learn_additional_noise=False
    ).double()
    model = _HadamardGP(
        torch.as_tensor(t)[:, None], torch.as_tensor(vi)[:, None], torch.as_tensor(y), lik, v
    ).double()
    model.covar_module.lengthscale = float(gp.lengthscale.detach())
    with torch.no_grad():
        model.task_covar_module.covar_factor.copy_(gp.task_factor().detach())
        model.task_covar_module.raw_var.fill_(-80.0)  # softplus(-80) ~ 1e-35: Kf = L L^T exactly
    model.eval()
    gg = torch.as_tensor(grid).repeat_interleave(v)  # time-major order g*V + i
    ii = torch.arange(v).repeat(len(grid))
    with (
        torch.no_grad(),
        gpytorch.settings.fast_pred_var(False),
        gpytorch.settings.max_cholesky_size(10**6),
    ):
        f = model(gg.reshape(-1, 1), ii.reshape(-1, 1))
        mean, cov = f.mean.numpy(), f.covariance_matrix.numpy()
    return mean.reshape(len(grid), v), cov + 0.1 * np.eye(len(mean))


def test_ou_kernel_is_gpytorch_matern_half():
    gp = _random_gp()
    t1 = torch.linspace(-48, 0, 17, dtype=torch.float64)
    t2 = -torch.rand(9, dtype=torch.float64) * 48
    ref = gp.time_kernel(t1[:, None], t2[:, None]).to_dense()
    assert torch.allclose(gp.ou(t1, t2), ref, atol=1e-10)


def test_batched_posterior_equals_dense_and_gpytorch():
    gp = _random_gp()
    b = _random_batch()
    mean, cov = gp.posterior_moments(b)
    cheap_mean = gp.posterior_mean(b)
    grid = b.grid_times.numpy()
    for s in range(b.times.shape[0]):
        real = b.mask[s].numpy()
        t, vi, y = b.times[s].numpy()[real], b.var_idx[s].numpy()[real], b.values[s].numpy()[real]
        m_ref, c_ref = _dense_single(gp, t, vi, y, grid)
        np.testing.assert_allclose(mean[s].detach().numpy(), m_ref, atol=1e-6)
        np.testing.assert_allclose(cheap_mean[s].detach().numpy(), m_ref, atol=1e-6)
        np.testing.assert_allclose(cov[s].detach().numpy(), c_ref, atol=1e-6)
        if real.sum() == 0:
            continue  # gpytorch's ExactGP needs at least one training point
        m_gp, c_gp = _gpytorch_single(gp, t, vi, y, grid)
        np.testing.assert_allclose(mean[s].detach().numpy(), m_gp, atol=1e-6)
        np.testing.assert_allclose(cov[s].detach().numpy(), c_gp, atol=1e-6)


def test_stay_alone_equals_stay_in_padded_batch():
    gp = _random_gp()
    b = _random_batch()
    mean, cov = gp.posterior_moments(b)
    real = b.mask[3]
    alone = GPBatch(
        b.times[3:4, real],
        b.var_idx[3:4, real],
        b.values[3:4, real],
        b.mask[3:4, real],
        b.grid_times,
    )
    m1, c1 = gp.posterior_moments(alone)
    assert torch.allclose(m1[0], mean[3], atol=1e-10) and torch.allclose(c1[0], cov[3], atol=1e-10)


def test_ou_factor_reproduces_kernel_with_repeated_times():
    gp = _random_gp()
    u = torch.sort(torch.tensor([[-5.0, -3.2, -3.2, -1.0, 0.0, 0.0]], dtype=torch.float64)).values
    lu = gp.ou_factor_sorted(u)
    assert torch.allclose(lu @ lu.transpose(-1, -2), gp.ou(u, u), atol=1e-12)


@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 130, 300])
@pytest.mark.parametrize("block", [1, 4, 64])
def test_blocked_ou_factor_matmul_equals_dense_factor(n, block):
    """The Markov blocked product equals the dense closed-form factor times z, with repeated
    times, one or many blocks and a ragged last block; so does its length-scale gradient."""
    gp = _random_gp()
    gen = torch.Generator().manual_seed(n * 10 + block)
    u = torch.sort(torch.randint(-60, 1, (3, n), generator=gen).double(), dim=1).values
    z = torch.randn(3, n, 7, generator=gen, dtype=torch.float64)
    ref = gp.ou_factor_sorted(u) @ z
    got = gp.ou_factor_matmul(u, z, block=block)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    raw = gp.time_kernel.raw_lengthscale
    (g_ref,) = torch.autograd.grad(ref.square().sum(), raw)
    (g_got,) = torch.autograd.grad(gp.ou_factor_matmul(u, z, block=block).square().sum(), raw)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", ["pathwise", "dense"])
def test_sampler_moments_match_posterior(method):
    """Monte Carlo mean/covariance of the samples agree with the exact posterior.

    With N draws the sample mean of coordinate a has standard error sqrt(S_aa / N) and a
    sample covariance entry (a, b) has standard error sqrt((S_aa S_bb + S_ab^2) / N) for a
    Gaussian. We allow 5 standard errors per entry: with ~300 entries checked, a false
    alarm has probability < 300 * 6e-7.
    """
    gp = _random_gp(1)
    b = _random_batch(1, s=2, m=5, g=4)
    mean, cov = gp.posterior_moments(b)
    n = 20000
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        draws = gp.sample(b, n, gen, method=method)  # (S, n, G, V)
    s, _, g, v = draws.shape
    x = draws.reshape(s, n, g * v)
    for i in range(s):
        sig = cov[i].detach()
        d = sig.diagonal()
        emp_mean = x[i].mean(0)
        se_mean = (d / n).sqrt()
        assert torch.all((emp_mean - mean[i].reshape(-1).detach()).abs() < 5 * se_mean)
        emp_cov = torch.cov(x[i].T)
        se_cov = ((d[:, None] * d[None, :] + sig**2) / n).sqrt()
        assert torch.all((emp_cov - sig).abs() < 5 * se_cov)


def test_pathwise_gradients_reach_gp_parameters():
    gp = _random_gp()
    b = _random_batch()
    gen = torch.Generator().manual_seed(0)
    out = gp.sample(b, 3, gen, "pathwise")
    (out**2).sum().backward()
    for name, p in gp.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_spd_solve_gradient_matches_autograd_through_cholesky():
    from models.mgp_tcn.gp import spd_solve

    torch.manual_seed(0)
    a = torch.randn(2, 5, 5, dtype=torch.float64)
    k = (a @ a.mT + torch.eye(5, dtype=torch.float64)).requires_grad_()
    r = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k_, r_: spd_solve(0.5 * (k_ + k_.mT), r_), (k, r))
    w = torch.randn(2, 5, 3, dtype=torch.float64)
    g1 = torch.autograd.grad((spd_solve(k, r) * w).sum(), (k, r))
    g2 = torch.autograd.grad((torch.cholesky_solve(r, torch.linalg.cholesky(k)) * w).sum(), (k, r))
    # autograd through cholesky returns the symmetrised gradient; both agree on symmetric directions
    sym = lambda g: 0.5 * (g + g.mT)  # noqa: E731
    assert torch.allclose(sym(g1[0]), sym(g2[0]), atol=1e-10) and torch.allclose(
        g1[1], g2[1], atol=1e-10
    )
