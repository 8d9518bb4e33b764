"""TCN: causality (property test) and padding invariance."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("levels,kernel,hidden", [(9, 5, 81), (4, 3, 32), (1, 2, 4), (6, 4, 16)])
@pytest.mark.parametrize("total", [1, 2, 7, 49, 60])
def test_forward_last_equals_full_forward_and_gradients(levels, kernel, hidden, total):
    """The pruned last-step path is the full TCN read at step T-1, values and gradients."""
    torch.manual_seed(levels * 100 + total)
    net = TCN(5, hidden, levels, kernel).double()
    x = torch.randn(6, 5, total, dtype=torch.double, requires_grad=True)
    lengths = torch.tensor([total, 1, max(total // 2, 1), total, min(3, total), total])
    mask = left_pad_mask(lengths, total)
    full = net(x, mask)[:, :, -1]
    last = net.forward_last(x.transpose(1, 2), mask)
    torch.testing.assert_close(last, full, rtol=0, atol=1e-12)
    (g_full,) = torch.autograd.grad(full.square().sum(), x)
    (g_last,) = torch.autograd.grad(last.square().sum(), x)
    torch.testing.assert_close(g_last, g_full, rtol=0, atol=1e-12)
    w_full = torch.autograd.grad(net(x, mask)[:, :, -1].sum(), list(net.parameters()))
    w_last = torch.autograd.grad(
        net.forward_last(x.transpose(1, 2), mask).sum(), list(net.parameters())
    )
    for a, b in zip(w_full, w_last, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-10)


def test_forward_last_computes_fewer_steps_for_deep_stacks():
    net = TCN(5, 8, 9, 5)
    plans = net.plan(49, torch.device("cpu"))
    evaluated = sum(len(p.mid_pos) + len(p.out_pos) for p in plans)
    assert evaluated < 0.25 * 2 * 9 * 49  # vs every step at every conv of the full pass
    assert plans[-1].out_pos.tolist() == [48]
    assert plans[0].in_pos.tolist() == list(range(49))  # the first layer still reads all steps
