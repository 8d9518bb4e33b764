"""TCN: causality (property test) and padding invariance."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.mgp_tcn.tcn import TCN, TCNHead, left_pad_mask


def _net(seed: int = 0, **kw) -> TCN:
    torch.manual_seed(seed)
    return TCN(3, hidden=8, levels=3, kernel_size=3, dropout=0.2, **kw).eval()


@settings(max_examples=30, deadline=None)
@given(t_len=st.integers(2, 20), cut=st.integers(0, 19), seed=st.integers(0, 10**6))
def test_output_at_t_ignores_inputs_after_t(t_len, cut, seed):
    cut = cut % (t_len - 1)  # perturb steps cut+1 .. t_len-1
    net = _net()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, t_len, generator=g)
    mask = torch.ones(2, t_len, dtype=torch.bool)
    x2 = x.clone()
    x2[:, :, cut + 1 :] += 10 * torch.randn(2, 3, t_len - cut - 1, generator=g)
    with torch.no_grad():
        y1, y2 = net(x, mask), net(x2, mask)
    assert torch.allclose(y1[:, :, : cut + 1], y2[:, :, : cut + 1], atol=1e-6)
    assert not torch.allclose(y1[:, :, cut + 1 :], y2[:, :, cut + 1 :])  # the test can fail


@settings(max_examples=20, deadline=None)
@given(length=st.integers(1, 12), pad=st.integers(1, 20), seed=st.integers(0, 10**6))
def test_padding_never_changes_a_stays_prediction(length, pad, seed):
    torch.manual_seed(0)
    head = TCNHead(3, hidden=8, levels=3, kernel_size=3).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, length, generator=g)
    alone = head(x, torch.ones(1, length, dtype=torch.bool))
    total = length + pad
    batch = torch.randn(3, 3, total, generator=g) * 7  # garbage in the padded steps
    batch[1, :, pad:] = x[0]
    lengths = torch.tensor([total, length, max(1, total - 3)])
    with torch.no_grad():
        out = head(batch, left_pad_mask(lengths, total))
    assert torch.allclose(out[1], alone[0].detach(), atol=1e-5)


def test_residual_projection_and_receptive_field():
    net = TCN(5, hidden=7, levels=4, kernel_size=3)
    assert net.blocks[0].downsample is not None and net.blocks[1].downsample is None
    assert net.receptive_field == 1 + 2 * 2 * (1 + 2 + 4 + 8)
    y = net(torch.randn(2, 5, 30), torch.ones(2, 30, dtype=torch.bool))
    assert y.shape == (2, 7, 30)


def test_skipping_taps_that_read_only_padding_is_exact():
    from models.mgp_tcn.tcn import CausalConv1d

    torch.manual_seed(0)
    for k, d, t in [(5, 64, 49), (5, 16, 49), (3, 4, 5), (3, 1, 1), (5, 8, 33)]:
        conv = CausalConv1d(3, 4, k, d)
        x = torch.randn(2, 3, t)
        full = torch.nn.functional.conv1d(
            torch.nn.functional.pad(x, (conv.left, 0)), conv.weight, conv.bias, dilation=d
        )
        assert torch.allclose(conv(x), full, atol=1e-6), (k, d, t)
