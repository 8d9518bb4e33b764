"""The MGP-TCN network (GP posterior samples on the hourly grid -> TCN -> logits) and an
IrregularView as tensors cut into GP batches (`models.mgp_tcn.classifier`)."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from torch import Tensor, nn

from data_prep.views import IrregularView
from models.mgp_tcn.gp import GPBatch, MultitaskGP, hourly_grid
from models.mgp_tcn.tcn import TCNHead, left_pad_mask


class MGPTCNNet(nn.Module):
    """The end-to-end network: GP posterior samples on the grid -> TCN -> logits."""

    def __init__(
        self,
        n_variables: int,
        hidden: int,
        levels: int,
        kernel_size: int,
        dropout: float,
        jitter: float,
    ) -> None:
        super().__init__()
        self.gp = MultitaskGP(n_variables, jitter=jitter)
        self.head = TCNHead(n_variables, hidden, levels, kernel_size, dropout)

    def forward(
        self,
        b: GPBatch,
        grid_lengths: Tensor,
        n_samples: int,
        generator: torch.Generator | None = None,
        sampler: str = "pathwise",
        autocast_dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Logits (S, n_samples, 2); `b` holds the GP inputs in the GP's dtype."""
        z = self.gp.sample(b, n_samples, generator, sampler)  # (S, n, G, V), float32/64
        s, n, g, v = z.shape
        x = z.reshape(s * n, g, v).float()  # (B, G, V): the TCN runs channels-last
        mask = left_pad_mask(grid_lengths, g).repeat_interleave(n, 0)
        ctx = (
            torch.autocast(device_type=x.device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else nullcontext()
        )
        with ctx:  # only the TCN runs in reduced precision; the GP stays float32/64
            logits = self.head(x, mask, channels_last=True)
        return logits.float().reshape(s, n, -1)


class _Arrays:
    """An IrregularView as tensors, cut into GP batches (compacted, trimmed, grid-clipped)."""

    def __init__(self, X: IrregularView, max_grid: int) -> None:
        order = np.argsort(~X.mask, axis=1, kind="stable")  # real observations first
        take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
        self.times = torch.as_tensor(take(X.times).astype(np.float64))
        self.var_idx = torch.as_tensor(take(X.var_idx).astype(np.int64))
        self.values = torch.as_tensor(take(X.values).astype(np.float64))
        self.mask = torch.as_tensor(take(X.mask))
        self.n_obs = self.mask.sum(1)
        # stays longer than max_grid keep their last max_grid hours (earlier observations
        # still condition the GP)
        self.grid_len = torch.as_tensor(np.minimum(X.grid_len, max_grid).astype(np.int64))

    def __len__(self) -> int:
        return len(self.grid_len)

    def batch(
        self, idx: np.ndarray, device: torch.device, dtype: torch.dtype
    ) -> tuple[GPBatch, Tensor]:
        idx_t = torch.as_tensor(idx)
        m = max(int(self.n_obs[idx_t].max()), 1)
        gl = self.grid_len[idx_t]
        b = GPBatch(
            self.times[idx_t, :m],
            self.var_idx[idx_t, :m],
            self.values[idx_t, :m],
            self.mask[idx_t, :m],
            hourly_grid(int(gl.max()), dtype=torch.float64),
        )
        return b.to(device, dtype), gl.to(device)
