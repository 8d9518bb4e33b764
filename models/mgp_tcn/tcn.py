"""Temporal convolutional network (Bai, Kolter & Koltun 2018; cf. locuslab/TCN), padding-safe.

Sequences are LEFT-padded: a stay's real steps sit at the end of the time axis, so its last
real step is always index T-1 and the head reads ``out[..., -1]``. Every sub-layer output is
multiplied by the step mask, so a padded step is exactly zero wherever a convolution can read
it; together with the causal left zero-padding of each convolution this makes a stay's output
identical whether it is alone or in a batch padded to a longer length. The normalisation is a
LayerNorm over channels at each time step (it never mixes time steps or padding; the
reference code normalised over time and padding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ChannelNorm(nn.Module):
    """LayerNorm over channels only, per time step, for (B, C, T) tensors."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class CausalConv1d(nn.Conv1d):
    """Conv1d that pads only on the left, so output t sees inputs <= t.

    Taps whose lag reaches before the first step of a length-T input only ever read the
    zero padding; they are skipped (exactly the same output). With 9 levels the dilations
    reach 256 on 49-hour grids, so without this the deep layers would convolve ~1,000
    padding zeros per step.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int) -> None:
        super().__init__(c_in, c_out, kernel_size, dilation=dilation)
        self.left = (kernel_size - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        k, d = self.kernel_size[0], self.dilation[0]
        taps = min(k, (x.shape[-1] - 1) // d + 1)  # lags 0, d, ..., (taps-1)*d fit inside T
        # weight[..., j] multiplies lag (k-1-j)*d, so the useful taps are the last `taps`
        w = self.weight[..., k - taps :]
        x = nn.functional.pad(x, ((taps - 1) * d, 0))
        return nn.functional.conv1d(x, w, self.bias, dilation=d if taps > 1 else 1)


class TemporalBlock(nn.Module):
    """Two causal dilated convolutions (norm, ReLU, dropout) plus a residual connection."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float
    ) -> None:
        super().__init__()
        self.conv1 = CausalConv1d(c_in, c_out, kernel_size, dilation)
        self.norm1 = ChannelNorm(c_out)
        self.conv2 = CausalConv1d(c_out, c_out, kernel_size, dilation)
        self.norm2 = ChannelNorm(c_out)
        self.drop = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor, m: Tensor) -> Tensor:
        """x: (B, C, T) with zeros at padded steps; m: (B, 1, T) float mask."""
        h = self.drop(torch.relu(self.norm1(self.conv1(x)))) * m
        h = self.drop(torch.relu(self.norm2(self.conv2(h)))) * m
        res = x if self.downsample is None else self.downsample(x)
        return torch.relu(h + res) * m


class TCN(nn.Module):
    """Stack of temporal blocks with dilation 2^i; returns features (B, hidden, T)."""

    def __init__(
        self,
        n_inputs: int,
        hidden: int = 32,
        levels: int = 4,
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        chans = [n_inputs] + [hidden] * levels
        self.blocks = nn.ModuleList(
            TemporalBlock(chans[i], chans[i + 1], kernel_size, 2**i, dropout) for i in range(levels)
        )

    @property
    def receptive_field(self) -> int:
        """Number of input steps the last output step can see."""
        return 1 + sum(2 * b.conv1.left for b in self.blocks)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, T) left-padded; mask: (B, T) bool, True at real steps."""
        m = mask[:, None, :].to(x.dtype)
        h = x * m
        for block in self.blocks:
            h = block(h, m)
        return h


class TCNHead(nn.Module):
    """TCN plus a linear classifier on the last (real) time step."""

    def __init__(
        self,
        n_inputs: int,
        hidden: int = 32,
        levels: int = 4,
        kernel_size: int = 3,
        dropout: float = 0.0,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        self.tcn = TCN(n_inputs, hidden, levels, kernel_size, dropout)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Logits (B, n_classes) from the last step (index T-1: inputs are left-padded)."""
        return self.out(self.tcn(x, mask)[:, :, -1])


def left_pad_mask(lengths: Tensor, total: int) -> Tensor:
    """(B, total) bool mask, True on the last `lengths[b]` steps of row b."""
    pos = torch.arange(total, device=lengths.device)
    return pos[None, :] >= (total - lengths)[:, None]
