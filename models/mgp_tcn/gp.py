"""Batched multitask Gaussian process adapter (the "MGP" of MGP-TCN).

Per stay, the latent function over (time t, variable i) has zero mean and covariance
``K((t,i),(t',j)) = Kf[i,j] * k(t,t')`` with the Ornstein-Uhlenbeck kernel
``k = exp(-|t-t'|/l)`` (gpytorch ``MaternKernel(nu=0.5)`` holds the one length-scale) and a
free-form task covariance ``Kf = L L^T`` (L lower-triangular, initialised to the identity).
Observations carry per-variable Gaussian noise; ``jitter`` (0.1 by default, PIPELINE.md 4)
is added to the observation covariance and to the posterior covariance on the grid.

A batch of stays is one tensor computation. Stays have different numbers of observations,
so observations are padded per stay and masked *by hand*: a padded observation gets an
identity row/column in ``K_yy`` and a zero residual, which makes it invisible to the real
ones (gpytorch's ``observation_nan_policy`` would mask an output for the whole batch).
All stays share the right-aligned hourly grid ``-(G-1), ..., 0`` (times are relative to
the prediction time); a stay shorter than G simply ignores its leading grid points.

Two samplers draw posterior samples on the grid, both reparameterised (gradients reach the
length-scale, L and the noise):

* ``"pathwise"`` (default; Matheron's rule): posterior sample = prior sample +
  ``K_*y K_yy^-1 (y - prior sample at the observations - noise draw)``. The prior is drawn
  jointly at the union of grid and observation times with the Kronecker factorisation
  ``Kf (x) K_uu``: the OU kernel is Markov, so the Cholesky factor of ``K_uu`` on sorted
  times has the closed form ``L[k,j] = exp(-(u_k-u_j)/l) * s_j`` (``s_0 = 1``,
  ``s_j = sqrt(1 - exp(-2 (u_j - u_{j-1})/l))``), exact even with repeated times where a
  numeric Cholesky would fail. Since ``L`` is the factor of a Markov process it is applied
  blockwise (`ou_factor_matmul`): O(N * 64) per column, never the N x N matrix. Cost: one
  M x M Cholesky per stay plus matmuls; ``K_*y`` is never materialised as a (G*V) x M
  matrix.
* ``"dense"`` (reference): full posterior covariance on the grid ((G*V) x (G*V) per stay),
  Cholesky, sample. Slow and memory-hungry; kept to check the pathwise sampler.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import MaternKernel
from torch import Tensor, nn

logger = logging.getLogger(__name__)

SAMPLERS = ("pathwise", "dense")


class _SPDSolve(torch.autograd.Function):
    """alpha = K^-1 r for SPD K (S, M, M) with a cheap backward.

    Autograd through `cholesky` + `cholesky_solve` differentiates the factorisation, which
    costs several M^3 triangular solves per stay. The solve's own derivative needs only
    one more solve with the saved factor: grad_r = K^-1 g, grad_K = -(K^-1 g) alpha^T
    (K is symmetric), i.e. O(M^2 n) instead of O(M^3).
    """

    @staticmethod
    def forward(ctx, k: Tensor, r: Tensor) -> Tensor:
        chol = torch.linalg.cholesky(k)
        alpha = torch.cholesky_solve(r, chol)
        ctx.save_for_backward(chol, alpha)
        return alpha

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        chol, alpha = ctx.saved_tensors
        w = torch.cholesky_solve(grad.contiguous(), chol)
        return -(w @ alpha.transpose(-1, -2)), w


def spd_solve(k: Tensor, r: Tensor) -> Tensor:
    """K^-1 r for a batch of SPD matrices, differentiable in both (see `_SPDSolve`)."""
    return _SPDSolve.apply(k, r)


@dataclass
class GPBatch:
    """Padded observations of S stays and the shared grid, as tensors on one device.

    times/values: (S, M) float; var_idx: (S, M) long; mask: (S, M) bool (True = real);
    grid_times: (G,) float, the common right-aligned hourly grid ``-(G-1)..0``.
    """

    times: Tensor
    var_idx: Tensor
    values: Tensor
    mask: Tensor
    grid_times: Tensor

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> GPBatch:
        """Move to `device`; cast the float tensors (times, values, grid) to `dtype`."""
        f = dict(device=device, dtype=dtype)
        return GPBatch(
            self.times.to(**f),
            self.var_idx.to(device=device),
            self.values.to(**f),
            self.mask.to(device=device),
            self.grid_times.to(**f),
        )


def hourly_grid(n_points: int, device=None, dtype=torch.float32) -> Tensor:
    """The right-aligned grid ``-(n_points-1), ..., -1, 0`` (hours before prediction)."""
    return torch.arange(-(n_points - 1), 1, device=device, dtype=dtype)


class MultitaskGP(nn.Module):
    """Multitask GP with OU time kernel, free-form task covariance and per-variable noise."""

    def __init__(
        self,
        n_variables: int,
        jitter: float = 0.1,
        init_lengthscale: float = 1.0,
        init_noise: float = 0.1,
    ) -> None:
        super().__init__()
        if n_variables < 1:
            raise ValueError("n_variables must be >= 1")
        self.n_variables = n_variables
        self.jitter = float(jitter)
        # MaternKernel(nu=0.5) is the OU kernel; we keep it for its constrained length-scale
        # and evaluate exp(-|dt|/l) ourselves from |t - t'| (gpytorch's squared-distance
        # expansion loses precision in float32 for times tens of hours from zero).
        self.time_kernel = MaternKernel(nu=0.5)
        self.time_kernel.lengthscale = init_lengthscale
        self.task_chol = nn.Parameter(torch.eye(n_variables))  # L; only its lower triangle is used
        self.noise_constraint = GreaterThan(1e-4)
        self.raw_noise = nn.Parameter(
            self.noise_constraint.inverse_transform(torch.full((n_variables,), float(init_noise)))
        )

    # --- parameters -------------------------------------------------------------------
    @property
    def lengthscale(self) -> Tensor:
        """The OU length-scale (hours), a scalar tensor."""
        return self.time_kernel.lengthscale.reshape(())

    def task_factor(self) -> Tensor:
        """Lower-triangular L with ``Kf = L L^T``."""
        return torch.tril(self.task_chol)

    def task_covar(self) -> Tensor:
        """Kf = L L^T, (V, V)."""
        lf = self.task_factor()
        return lf @ lf.T

    def noise(self) -> Tensor:
        """Per-variable observation noise variance, (V,)."""
        return self.noise_constraint.transform(self.raw_noise)

    def ou(self, t1: Tensor, t2: Tensor) -> Tensor:
        """OU kernel matrix exp(-|t1_a - t2_b| / l), broadcast over leading batch dims.

        Written as exp(|dt| * c) with the scalar c = -1/l: the backward is then one product
        and a sum per matrix (dividing the matrix by l costs several full-size temporaries).
        """
        c = -1.0 / self.lengthscale.to(t1.dtype)
        return torch.exp((t1[..., :, None] - t2[..., None, :]).abs() * c)

    # --- shared pieces ----------------------------------------------------------------
    def _obs_covar(self, b: GPBatch, kf: Tensor, noise: Tensor) -> Tensor:
        """K_yy (S, M, M) with noise and jitter; padded observations get an identity block."""
        # Kf[v_m, v_m'] as onehot @ Kf @ onehot^T: its backward is a matmul, whereas the
        # backward of advanced indexing is a slow serial scatter-add on CPU. Padded
        # observations have an all-zero one-hot row, which zeroes their rows and columns
        # without an (S, M, M) mask.
        onehot = torch.nn.functional.one_hot(b.var_idx, self.n_variables).to(kf.dtype)
        onehot = onehot * b.mask[..., None].to(kf.dtype)
        kf_obs = onehot @ kf @ onehot.transpose(1, 2)
        k = kf_obs * self.ou(b.times, b.times)
        diag = torch.where(b.mask, noise[b.var_idx] + self.jitter, torch.ones_like(b.values))
        k.diagonal(dim1=-2, dim2=-1).add_(diag)  # in place: no (S, M, M) diag_embed + add
        return k

    def _obs_cholesky(self, b: GPBatch, kf: Tensor, noise: Tensor) -> Tensor:
        """Cholesky factor of K_yy (S, M, M)."""
        return torch.linalg.cholesky(self._obs_covar(b, kf, noise))

    def _cast(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        kf = self.task_covar().to(dtype)
        return kf, self.noise().to(dtype), self.task_factor().to(dtype)

    def cross_covariance(self, b: GPBatch, kf: Tensor) -> Tensor:
        """K_*y as a dense (S, G*V, M) matrix (dense path and tests only)."""
        kgt = self.ou(b.grid_times, b.times)  # (S, G, M)
        kf_cols = kf[:, b.var_idx].permute(1, 0, 2)  # (S, V, M): Kf[i, v_m]
        ksy = kgt[:, :, None, :] * kf_cols[:, None, :, :]  # (S, G, V, M)
        ksy = ksy * b.mask[:, None, None, :]
        s, g, v, m = ksy.shape
        return ksy.reshape(s, g * v, m)

    # --- dense reference --------------------------------------------------------------
    def posterior_moments(self, b: GPBatch) -> tuple[Tensor, Tensor]:
        """Posterior mean (S, G, V) and covariance (S, G*V, G*V) on the grid, jitter included.

        Index order of the flattened grid is ``g * V + i`` (time-major).
        """
        dtype = b.values.dtype
        kf, noise, _ = self._cast(dtype)
        lyy = self._obs_cholesky(b, kf, noise)
        ksy = self.cross_covariance(b, kf)
        y = (b.values * b.mask)[..., None]
        mean = (ksy @ torch.cholesky_solve(y, lyy)).squeeze(-1)
        a = torch.linalg.solve_triangular(lyy, ksy.transpose(1, 2), upper=False)  # (S, M, GV)
        kgg = self.ou(b.grid_times, b.grid_times)
        prior = torch.kron(kgg, kf)
        gv = prior.shape[0]
        cov = (
            prior
            - a.transpose(1, 2) @ a
            + self.jitter * torch.eye(gv, dtype=dtype, device=kf.device)
        )
        s, g = b.times.shape[0], b.grid_times.shape[0]
        return mean.reshape(s, g, self.n_variables), cov

    def sample_dense(
        self, b: GPBatch, n_samples: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Posterior samples (S, n_samples, G, V) via the Cholesky of the full posterior."""
        mean, cov = self.posterior_moments(b)
        s, g, v = mean.shape
        lp = torch.linalg.cholesky(cov)
        z = torch.randn(
            s, g * v, n_samples, generator=generator, device=mean.device, dtype=mean.dtype
        )
        draws = mean.reshape(s, g * v, 1) + lp @ z
        return draws.permute(0, 2, 1).reshape(s, n_samples, g, v)

    # --- pathwise (Matheron) ----------------------------------------------------------
    def _ou_decay_tril(self, u_sorted: Tensor) -> Tensor:
        """exp(-(u_k - u_j)/l) for j <= k, else 0, over the last axis: (..., N, N)."""
        c = -1.0 / self.lengthscale.to(u_sorted.dtype)
        n = u_sorted.shape[-1]
        d = (u_sorted[..., :, None] - u_sorted[..., None, :]).clamp_min(0)  # u_k - u_j, k >= j
        tril = torch.ones(n, n, dtype=torch.bool, device=u_sorted.device).tril()
        return torch.where(tril, torch.exp(d * c), torch.zeros_like(d))

    def _ou_scales(self, u_sorted: Tensor) -> Tensor:
        """Innovation scales s (..., N): s_0 = 1, s_j = sqrt(1 - exp(-2 (u_j - u_(j-1))/l))."""
        c = -1.0 / self.lengthscale.to(u_sorted.dtype)
        q = -torch.expm1(2 * c * torch.diff(u_sorted, dim=-1))  # 1 - rho^2 in [0, 1)
        pos = q > 0
        # double where: sqrt'(0) is infinite, repeated times must not poison the gradient
        s_rest = torch.where(
            pos, torch.sqrt(torch.where(pos, q, torch.ones_like(q))), torch.zeros_like(q)
        )
        return torch.cat([torch.ones_like(u_sorted[..., :1]), s_rest], dim=-1)

    def ou_factor_sorted(self, u_sorted: Tensor) -> Tensor:
        """Closed-form lower Cholesky factor of the OU kernel on sorted times (S, N, N)."""
        return self._ou_decay_tril(u_sorted) * self._ou_scales(u_sorted)[..., None, :]

    def ou_factor_matmul(self, u_sorted: Tensor, z: Tensor, block: int = 64) -> Tensor:
        """``ou_factor_sorted(u_sorted) @ z`` without the (S, N, N) factor.

        The OU process is Markov: f_k = rho_k f_(k-1) + s_k z_k with rho_k =
        exp(-(u_k - u_(k-1))/l). The N sorted times are cut into blocks of `block`; inside a
        block the factor is applied as a small dense lower-triangular matmul (all blocks at
        once), and each block then adds its predecessor's last value decayed by
        exp(-(u_k - u_last)/l), a recursion over the N/block blocks only. Cost O(N * block)
        per column instead of O(N^2); exact (tested against the dense factor).
        """
        s, n = u_sorted.shape
        r = z.shape[-1]
        nb = -(-n // block)
        pad = nb * block - n
        c = -1.0 / self.lengthscale.to(u_sorted.dtype)
        sd = self._ou_scales(u_sorted)  # over all N times: a block's first step links back
        if pad:  # padded steps repeat the last time and carry zero noise; dropped at the end
            u_sorted = torch.cat([u_sorted, u_sorted[:, -1:].expand(s, pad)], dim=1)
            sd = torch.cat([sd, sd.new_zeros(s, pad)], dim=1)
            z = torch.cat([z, z.new_zeros(s, pad, r)], dim=1)
        ub = u_sorted.reshape(s, nb, block)
        e = self._ou_decay_tril(ub)  # (S, nb, B, B)
        local = (e * sd.reshape(s, nb, 1, block)) @ z.reshape(s, nb, block, r)  # (S,nb,B,R)
        if nb == 1:
            return local.reshape(s, nb * block, r)[:, :n]
        # last value of each block, carried forward: g_b = local_last_b + rho_b g_(b-1)
        last_t = ub[:, :, -1]  # (S, nb)
        decay_to_last = torch.exp((last_t[:, 1:] - last_t[:, :-1]) * c)  # (S, nb-1)
        carry = [local[:, 0, -1]]
        for j in range(1, nb - 1):
            carry.append(local[:, j, -1] + decay_to_last[:, j - 1, None] * carry[-1])
        g_prev = torch.stack(carry, dim=1)  # (S, nb-1, R): final last value of blocks 0..nb-2
        decay_in = torch.exp((ub[:, 1:] - last_t[:, :-1, None]) * c)  # (S, nb-1, B)
        rest = local[:, 1:] + decay_in[..., None] * g_prev[:, :, None, :]
        out = torch.cat([local[:, :1], rest], dim=1)
        return out.reshape(s, nb * block, r)[:, :n]

    def sample_prior_joint(
        self,
        b: GPBatch,
        n_samples: int,
        generator: torch.Generator | None = None,
        lf: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Joint prior draws on the grid (S, G, n, V) and at each observation (S, M, n)."""
        dtype = b.values.dtype
        if lf is None:
            lf = self.task_factor().to(dtype)
        s, m = b.times.shape
        g, v = b.grid_times.shape[0], self.n_variables
        u = torch.cat([b.grid_times.expand(s, g), b.times], dim=1)  # (S, N)
        u_sorted, perm = torch.sort(u, dim=1, stable=True)
        z = torch.randn(s, g + m, n_samples * v, generator=generator, device=u.device, dtype=dtype)
        f = self.ou_factor_matmul(u_sorted, z)  # = ou_factor_sorted(u_sorted) @ z
        f = f.reshape(s, g + m, n_samples, v) @ lf.T  # cov = K_uu (x) L L^T
        inv = torch.argsort(perm, dim=1)
        f = f.gather(1, inv[:, :, None, None].expand(s, g + m, n_samples, v))
        f_grid = f[:, :g]
        idx = b.var_idx[:, :, None, None].expand(s, m, n_samples, 1)
        f_obs = f[:, g:].gather(3, idx).squeeze(-1)
        return f_grid, f_obs

    def sample_pathwise(
        self, b: GPBatch, n_samples: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Posterior samples (S, n_samples, G, V) by pathwise conditioning (Matheron's rule)."""
        dtype = b.values.dtype
        kf, noise, lf = self._cast(dtype)
        s, m = b.times.shape
        g, v = b.grid_times.shape[0], self.n_variables
        f_grid, f_obs = self.sample_prior_joint(b, n_samples, generator, lf)
        kyy = self._obs_covar(b, kf, noise)
        obs_var = noise[b.var_idx] + self.jitter  # the observation jitter acts as extra noise
        eps = torch.randn(s, m, n_samples, generator=generator, device=b.values.device, dtype=dtype)
        eps = eps * obs_var.sqrt()[..., None]
        maskf = b.mask[..., None].to(dtype)
        resid = (b.values[..., None] - f_obs - eps) * maskf
        alpha = spd_solve(kyy, resid) * maskf  # (S, M, n)
        onehot = torch.nn.functional.one_hot(b.var_idx, v).to(dtype)  # (S, M, V)
        bmat = (alpha[..., None] * onehot[:, :, None, :]).reshape(s, m, n_samples * v)
        kgt = self.ou(b.grid_times, b.times)  # (S, G, M)
        update = (kgt @ bmat).reshape(s, g, n_samples, v) @ kf  # K_*y alpha without (GV x M)
        xi = torch.randn(
            s, g, n_samples, v, generator=generator, device=b.values.device, dtype=dtype
        )
        post = f_grid + update + math.sqrt(self.jitter) * xi
        return post.permute(0, 2, 1, 3)

    def sample(
        self,
        b: GPBatch,
        n_samples: int,
        generator: torch.Generator | None = None,
        method: str = "pathwise",
    ) -> Tensor:
        """Posterior samples (S, n_samples, G, V) on the grid with the chosen sampler."""
        if method == "pathwise":
            return self.sample_pathwise(b, n_samples, generator)
        if method == "dense":
            return self.sample_dense(b, n_samples, generator)
        raise ValueError(f"sampler: expected one of {SAMPLERS}, got {method!r}")

    def posterior_mean(self, b: GPBatch) -> Tensor:
        """Posterior mean (S, G, V) without materialising K_*y (cheap)."""
        dtype = b.values.dtype
        kf, noise, _ = self._cast(dtype)
        kyy = self._obs_covar(b, kf, noise)
        alpha = spd_solve(kyy, (b.values * b.mask)[..., None]).squeeze(-1) * b.mask
        onehot = torch.nn.functional.one_hot(b.var_idx, self.n_variables).to(dtype)
        kgt = self.ou(b.grid_times, b.times)
        return (kgt @ (alpha[..., None] * onehot)) @ kf
