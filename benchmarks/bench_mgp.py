"""Benchmark the MGP adapter's samplers and the MGP-TCN training throughput.

1. Posterior sampling for a batch of 32 stays, 49-point hourly grid, 44 variables, ~300
   observations per stay, 10 samples, forward + backward (to the GP parameters): pathwise
   (Matheron) in float64 and float32 against the dense-Cholesky reference in float64, in
   one process so the ratio is fair on a shared machine. The dense path needs a
   (G*V)^2 = 2156^2 covariance and its Cholesky per stay; by default it runs on the first
   `--dense-stays` (4) stays, in chunks, and the time is scaled linearly to 32 (per-stay cost
   is independent of the batch); `--full` runs it on all 32.
2. Same distribution: for one stay of that batch, many pathwise draws against the dense
   posterior mean and variance (largest standardised error over the 2,156 grid values).
3. Training throughput (stays/s) of a full MGP-TCN step (pathwise GP in float32 + TCN
   forward/backward + Adam) on a PhysioNet-shaped batch: 34 variables, 49 grid hours, ~350
   observations per stay, 10 MC samples, the paper's largest TCN (levels 9, kernel 5,
   hidden 81; PIPELINE.md 4), and the default small TCN; and the TCN alone, last-step path
   against the all-steps reference. (A real PhysioNet epoch: bench_mgp_epoch.py.)

Usage: python benchmarks/bench_mgp.py [--full] [--dense-stays 4] [--repeats 3] [--threads 2]
Writes docs/benchmarks/mgp.md (and mgp.json beside it).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.mgp_tcn.classifier import MGPTCNNet  # noqa: E402
from models.mgp_tcn.gp import GPBatch, MultitaskGP, hourly_grid  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"


def make_batch(s: int, m: int, g: int, v: int, seed: int, dtype: torch.dtype) -> GPBatch:
    """Synthetic stays: ~m observations (80-100% of m real) over 48 h, skewed variable use."""
    rng = np.random.default_rng(seed)
    n_obs = rng.integers(int(0.8 * m), m + 1, s)
    mask = np.arange(m)[None, :] < n_obs[:, None]
    p = rng.dirichlet(np.full(v, 0.5))  # vitals frequent, some labs rare
    times = -rng.random((s, m)) * (g - 1)
    var_idx = rng.choice(v, (s, m), p=p)
    values = rng.normal(0, 1, (s, m))
    return GPBatch(
        torch.tensor(times),
        torch.tensor(var_idx),
        torch.tensor(values),
        torch.tensor(mask),
        hourly_grid(g, dtype=torch.float64),
    ).to(dtype=dtype)


def make_gp(v: int, dtype: torch.dtype, seed: int = 0) -> MultitaskGP:
    torch.manual_seed(seed)
    gp = MultitaskGP(v, jitter=0.1, init_lengthscale=3.0, init_noise=0.2)
    with torch.no_grad():
        gp.task_chol.copy_(torch.eye(v) + 0.1 * torch.randn(v, v))
    return gp.to(dtype)


def time_sampling(gp: MultitaskGP, b: GPBatch, n: int, method: str, chunk: int) -> float:
    """Seconds for sampling + backward over the whole batch (chunks of `chunk` stays)."""
    gen = torch.Generator().manual_seed(0)
    gp.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    s = b.times.shape[0]
    for start in range(0, s, chunk):
        sl = slice(start, start + chunk)
        part = GPBatch(b.times[sl], b.var_idx[sl], b.values[sl], b.mask[sl], b.grid_times)
        out = gp.sample(part, n, gen, method)
        (out * out.detach().sin()).sum().backward()  # a loss that depends on every draw
    return time.perf_counter() - t0


def distribution_check(gp: MultitaskGP, b: GPBatch, n_draws: int) -> dict:
    one = GPBatch(b.times[:1], b.var_idx[:1], b.values[:1], b.mask[:1], b.grid_times)
    with torch.no_grad():
        mean, cov = gp.posterior_moments(one)
        draws = gp.sample(one, n_draws, torch.Generator().manual_seed(1), "pathwise")
    x = draws.reshape(n_draws, -1)
    var = cov[0].diagonal()
    z_mean = (x.mean(0) - mean.reshape(-1)) / (var / n_draws).sqrt()
    ratio = x.var(0) / var
    z_var = (ratio - 1) / np.sqrt(2 / (n_draws - 1))  # Gaussian: SE of a variance ratio
    return {
        "draws": n_draws,
        "values": int(x.shape[1]),
        "max_abs_z_mean": float(z_mean.abs().max()),
        "max_abs_z_var": float(z_var.abs().max()),
        "mean_var_ratio": float(ratio.mean()),
    }


def time_training(
    v: int, m: int, levels: int, kernel: int, hidden: int, n_mc: int, stays: int, repeats: int
) -> dict:
    """stays/s of full training steps and of TCN-only steps (same batch)."""
    torch.manual_seed(0)
    net = MGPTCNNet(v, hidden, levels, kernel, 0.0, 0.1)
    opt = torch.optim.Adam(net.parameters(), lr=0.005)
    b = make_batch(stays, m, 49, v, seed=3, dtype=torch.float32)
    gl = torch.full((stays,), 49)
    gl[::3] = 30  # some shorter stays, left-padded
    y = torch.randint(0, 2, (stays,)).repeat_interleave(n_mc)
    gen = torch.Generator().manual_seed(0)

    def step(mode: str) -> float:
        t0 = time.perf_counter()
        if mode == "full":
            logits = net(b, gl, n_mc, gen, "pathwise").reshape(-1, 2)
        else:
            from models.mgp_tcn.tcn import left_pad_mask

            x = torch.randn(stays * n_mc, 49, v)
            mask = left_pad_mask(gl, 49).repeat_interleave(n_mc, 0)
            if mode == "tcn_all_steps":  # reference: every layer at every step, read the last
                logits = net.head.out(net.head.tcn(x.transpose(1, 2).contiguous(), mask)[:, :, -1])
            else:  # what training runs: only the steps the last output depends on
                logits = net.head(x, mask, channels_last=True)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    step("full")  # warm-up
    full = statistics.median(step("full") for _ in range(repeats))
    tcn = statistics.median(step("tcn") for _ in range(repeats))
    tcn_all = statistics.median(step("tcn_all_steps") for _ in range(repeats))
    n_params = sum(p.numel() for p in net.head.parameters())
    return {
        "levels": levels,
        "kernel": kernel,
        "hidden": hidden,
        "tcn_params": n_params,
        "receptive_field_h": net.head.tcn.receptive_field,
        "step_s": full,
        "tcn_step_s": tcn,
        "stays_per_s": stays / full,
        "tcn_stays_per_s": stays / tcn,
        "tcn_all_steps_stays_per_s": stays / tcn_all,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--full", action="store_true", help="dense reference on all 32 stays (slow, ~1.5 GB)"
    )
    ap.add_argument("--dense-stays", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--draws", type=int, default=1000, help="pathwise draws for the distribution check"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    command = "python benchmarks/bench_mgp.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    S, G, V, M, N = 32, 49, 44, 300, 10
    res: dict = {
        "command": command.strip(),
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "shape": {"stays": S, "grid": G, "variables": V, "max_obs": M, "samples": N},
    }

    b64 = make_batch(S, M, G, V, seed=0, dtype=torch.float64)
    gp64 = make_gp(V, torch.float64)
    gp32 = make_gp(V, torch.float32)
    b32 = b64.to(dtype=torch.float32)
    time_sampling(gp64, b64, N, "pathwise", S)  # warm-up
    pw64 = statistics.median(
        time_sampling(gp64, b64, N, "pathwise", S) for _ in range(args.repeats)
    )
    pw32 = statistics.median(
        time_sampling(gp32, b32, N, "pathwise", S) for _ in range(args.repeats)
    )
    dense_stays = S if args.full else min(args.dense_stays, S)
    db = GPBatch(
        b64.times[:dense_stays],
        b64.var_idx[:dense_stays],
        b64.values[:dense_stays],
        b64.mask[:dense_stays],
        b64.grid_times,
    )
    dense_measured = time_sampling(gp64, db, N, "dense", chunk=4)
    dense32 = dense_measured * S / dense_stays
    res["sampling"] = {
        "pathwise_float64_s": pw64,
        "pathwise_float32_s": pw32,
        "dense_float64_s": dense32,
        "dense_measured_on_stays": dense_stays,
        "dense_measured_s": dense_measured,
        "speedup_float64": dense32 / pw64,
        "speedup_float32": dense32 / pw32,
    }
    print(json.dumps(res["sampling"], indent=1), flush=True)
    res["distribution"] = distribution_check(gp64, b64, args.draws)
    print(json.dumps(res["distribution"], indent=1), flush=True)
    res["training"] = [
        time_training(34, 350, 9, 5, 81, N, 32, args.repeats),
        time_training(34, 350, 4, 3, 32, N, 32, args.repeats),
    ]
    print(json.dumps(res["training"], indent=1), flush=True)
    write_report(res)
    return 0


def write_report(r: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "mgp.json").write_text(json.dumps(r, indent=2))
    s, d = r["sampling"], r["distribution"]
    sh = r["shape"]
    scaled = (
        ""
        if s["dense_measured_on_stays"] == sh["stays"]
        else (
            f" (measured {s['dense_measured_s']:.2f} s on {s['dense_measured_on_stays']} stays, scaled "
            f"linearly to {sh['stays']}; `--full` measures all)"
        )
    )
    lines = [
        "# MGP adapter and MGP-TCN throughput",
        "",
        f"Command: `{r['command']}` (torch {r['torch']}, {r['threads']} threads, {r['machine']}; "
        "shared machine: the ratios are the result, absolute times are noisy).",
        "",
        f"## Posterior sampling, forward + backward ({sh['stays']} stays, {sh['grid']}-hour grid, "
        f"{sh['variables']} variables, <= {sh['max_obs']} observations each, {sh['samples']} samples)",
        "",
        "| sampler | dtype | seconds | speed-up vs dense |",
        "| --- | --- | ---: | ---: |",
        f"| dense Cholesky (reference) | float64 | {s['dense_float64_s']:.2f} | 1x |",
        f"| pathwise (Matheron) | float64 | {s['pathwise_float64_s']:.3f} | {s['speedup_float64']:.0f}x |",
        f"| pathwise (Matheron) | float32 | {s['pathwise_float32_s']:.3f} | {s['speedup_float32']:.0f}x |",
        "",
        f"Dense{scaled}. Target: >= 30x.",
        "",
        "## Same distribution",
        "",
        f"One stay of that batch, {d['draws']} pathwise draws against the exact (dense) posterior over "
        f"{d['values']} grid values: largest |z| of the sample means {d['max_abs_z_mean']:.2f}, of the "
        f"sample variances {d['max_abs_z_var']:.2f} (the largest of {d['values']} standard normals is "
        f"typically ~3.5-4), mean variance ratio {d['mean_var_ratio']:.4f}. The unit tests "
        "(tests/models/test_mgp_gp.py) check full covariances on small stays.",
        "",
        "## Training throughput (PhysioNet-shaped: 34 variables, 49 grid hours, <= 350 observations, "
        "10 MC samples, batch 32)",
        "",
        "| TCN (levels / kernel / hidden) | TCN params | receptive field (h) | full step: stays/s | "
        "TCN only, last-step path: stays/s | TCN only, all steps (reference): stays/s | speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in r["training"]:
        lines.append(
            f"| {t['levels']} / {t['kernel']} / {t['hidden']} | {t['tcn_params']:,} | "
            f"{t['receptive_field_h']} | {t['stays_per_s']:.0f} | {t['tcn_stays_per_s']:.0f} | "
            f"{t['tcn_all_steps_stays_per_s']:.0f} | "
            f"{t['tcn_stays_per_s'] / t['tcn_all_steps_stays_per_s']:.1f}x |"
        )
    lines += [
        "",
        "Full step = pathwise GP sampling in float32 + TCN forward/backward + Adam (float32). The "
        "last-step path computes each TCN layer only at the steps the classifier's last output "
        "depends on (same logits and gradients, tests/models/test_tcn.py); the reference computes "
        "every step. A real PhysioNet epoch is measured in `mgp_epoch.md` "
        "(`benchmarks/bench_mgp_epoch.py`); target <= 3 min/epoch on 2 cores.",
        "",
    ]
    (OUT / "mgp.md").write_text("\n".join(lines))
    print(f"wrote {OUT / 'mgp.md'}")


if __name__ == "__main__":
    sys.exit(main())
