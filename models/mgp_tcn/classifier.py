"""MGP-TCN classifier: multitask GP adapter + TCN, trained end to end (PIPELINE.md section 4).

Each stay's irregular observations go through the GP adapter (`gp.MultitaskGP`), which draws
`n_mc_samples` posterior samples on the stay's hourly grid (reparameterised, so the
classification loss trains the GP too). Each sample is one TCN input; the prediction
averages the class-1 probability over samples. The grid is right-aligned at the prediction
time and the TCN input is left-padded, so the head reads each stay's last real hour.

Training: class-weighted cross-entropy (class-1 weight = negatives / positives, which makes
both classes weigh the same in total), Adam with L2 weight decay on the TCN only (not on the
GP parameters), validation AUPRC every epoch, early stopping with `patience`, best epoch
restored. Options beyond the paper, all off by default (the defaults train exactly the
paper's procedure): ``smoothing`` > 1 ranks epochs by the trailing mean of the last
``smoothing`` validation AUPRCs (early stopping and the restored epoch then follow that
smoothed curve, not one noisy epoch); ``lr_schedule`` ``cosine`` (annealed to lr/100 over
``epochs``) or ``plateau`` (halved after ``lr_patience`` epochs without a better smoothed
validation AUPRC); ``grad_clip`` clips the global gradient norm; ``mc_samples_predict``
draws more MC samples in `predict_proba` than in training (the per-epoch validation keeps
``n_mc_samples``, so epochs stay cheap). `fit(..., epoch_callback=f)` calls ``f(record)``
after every epoch with that epoch's history row; a true return stops training like early
stopping (best epoch restored), an exception (a pruned search trial) propagates. Without `X_val`, a stratified `val_fraction` of the training stays (seeded) is held
out for validation and not trained on. With `checkpoint_dir`, a checkpoint is written after
every epoch and a later `fit` with the same parameters and data continues from it: the
checkpoint carries a fingerprint of the parameters and of the training and validation
arrays and labels, and one whose fingerprint differs is discarded (logged) and training
starts from scratch.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import time
from collections.abc import Callable
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn
from tqdm.auto import tqdm

from data_prep.views import IrregularView
from models.base import ModelFormatError, ParameterError, SepsisLearner, read_model_json
from models.mgp_tcn.checkpoint import _CKPT, _Checkpoints
from models.mgp_tcn.gp import SAMPLERS
from models.mgp_tcn.net import MGPTCNNet, _Arrays  # noqa: F401  (MGPTCNNet re-exported)

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine", "plateau")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class MGPTCNClassifier(_Checkpoints, SepsisLearner):
    """MGP-TCN sepsis classifier on the irregular view (scikit-learn classifier contract).

    Defaults follow the paper where it states them (10 MC samples, lr 0.005, L2 0.01, 15
    epochs); `levels`/`kernel_size`/`hidden` are a small configuration to be tuned by
    `search_hyperparameters` (paper range: levels 9, kernel 3-5, hidden 15-81). The training
    options beyond the paper (``smoothing``, ``lr_schedule``, ``grad_clip``,
    ``mc_samples_predict``) default to the paper's behaviour; ``best_val_auprc_`` is the best
    (smoothed) per-epoch validation AUPRC and ``stop_reason_`` says why training ended
    (``epochs``, ``patience`` or ``callback``).
    """

    view = "irregular"
    _parameter_constraints = {
        "n_mc_samples": [Interval(Integral, 1, None, closed="left")],
        "levels": [Interval(Integral, 1, None, closed="left")],
        "kernel_size": [Interval(Integral, 2, None, closed="left")],
        "hidden": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "l2": [Interval(Real, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "smoothing": [Interval(Integral, 1, None, closed="left")],
        "lr_schedule": [StrOptions(set(LR_SCHEDULES))],
        "lr_patience": [Interval(Integral, 1, None, closed="left")],
        "grad_clip": [Interval(Real, 0, None, closed="neither"), None],
        "mc_samples_predict": [Interval(Integral, 1, None, closed="left"), None],
        "sampler": [StrOptions(set(SAMPLERS))],
        "jitter": [Interval(Real, 0, None, closed="neither")],
        "max_grid": [Interval(Integral, 1, None, closed="left")],
        "val_fraction": [Interval(Real, 0, 1, closed="neither")],
        "gp_dtype": [StrOptions(set(_DTYPES))],
        "device": [str],
        "mixed_precision": ["boolean"],
        "seed": [Interval(Integral, 0, None, closed="left")],
        "progress": ["boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
    }

    def __init__(
        self,
        n_mc_samples: int = 10,
        levels: int = 4,
        kernel_size: int = 3,
        hidden: int = 32,
        dropout: float = 0.0,
        l2: float = 0.01,
        lr: float = 0.005,
        batch_size: int = 32,
        epochs: int = 15,
        patience: int = 5,
        smoothing: int = 1,
        lr_schedule: str = "constant",
        lr_patience: int = 2,
        grad_clip: float | None = None,
        mc_samples_predict: int | None = None,
        sampler: str = "pathwise",
        jitter: float = 0.1,
        max_grid: int = 49,
        val_fraction: float = 0.2,
        gp_dtype: str = "float32",
        device: str = "auto",
        mixed_precision: bool = False,
        seed: int = 0,
        progress: bool = True,
        checkpoint_dir: str | None = None,
    ) -> None:
        self.n_mc_samples = n_mc_samples
        self.levels = levels
        self.kernel_size = kernel_size
        self.hidden = hidden
        self.dropout = dropout
        self.l2 = l2
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.smoothing = smoothing
        self.lr_schedule = lr_schedule
        self.lr_patience = lr_patience
        self.grad_clip = grad_clip
        self.mc_samples_predict = mc_samples_predict
        self.sampler = sampler
        self.jitter = jitter
        self.max_grid = max_grid
        self.val_fraction = val_fraction
        self.gp_dtype = gp_dtype
        self.device = device
        self.mixed_precision = mixed_precision
        self.seed = seed
        self.progress = progress
        self.checkpoint_dir = checkpoint_dir

    # --- helpers ------------------------------------------------------------------------
    def _check_more_params(self) -> None:
        dev = self.device
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", dev):
            raise ParameterError("device", f"expected auto | cpu | cuda[:k], got {dev!r}")

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.mixed_precision else None

    def _new_net(self, n_variables: int) -> MGPTCNNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return MGPTCNNet(
                n_variables, self.hidden, self.levels, self.kernel_size, self.dropout, self.jitter
            )

    def _generator(self, device: torch.device, offset: int) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + offset)

    def _proba(
        self, net: MGPTCNNet, arr: _Arrays, device: torch.device, n_samples: int | None = None
    ) -> np.ndarray:
        """Class-1 probability averaged over MC samples; deterministic for a seed."""
        n_samples = self.n_mc_samples if n_samples is None else n_samples
        net.eval()
        gen = self._generator(device, offset=1)
        dtype = _DTYPES[self.gp_dtype]
        out = []
        with torch.no_grad():
            for start in range(0, len(arr), self.batch_size):
                idx = np.arange(start, min(start + self.batch_size, len(arr)))
                b, gl = arr.batch(idx, device, dtype)
                logits = net(b, gl, n_samples, gen, self.sampler, self._autocast_dtype())
                out.append(torch.softmax(logits, -1)[..., 1].mean(1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    # --- public API ---------------------------------------------------------------------
    def _scheduler(self, opt: torch.optim.Optimizer):
        """The learning-rate schedule (None for a constant rate, the paper's)."""
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=self.epochs, eta_min=self.lr / 100
            )
        if self.lr_schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=0.5, patience=self.lr_patience
            )
        return None

    def fit(
        self,
        X: IrregularView,
        y,
        X_val: IrregularView | None = None,
        y_val=None,
        epoch_callback: Callable[[dict[str, Any]], bool | None] | None = None,
    ) -> MGPTCNClassifier:
        """Train end to end; returns self. See the module docstring for the procedure."""
        self._check_view(X)
        y = self._check_labels(X, y)
        self.validate_params()
        device = self._torch_device()
        if X_val is None:
            idx_tr, idx_va = train_test_split(
                np.arange(len(X)), test_size=self.val_fraction, stratify=y, random_state=self.seed
            )
            X, X_val, y, y_val = X.subset(idx_tr), X.subset(idx_va), y[idx_tr], y[idx_va]
            logger.info(
                "no X_val: held out a stratified %.0f%% (%d stays) for validation",
                100 * self.val_fraction,
                len(idx_va),
            )
        else:
            self._check_view(X_val)
            y_val = self._check_labels(X_val, y_val)
            if X_val.n_variables != X.n_variables:
                raise ValueError(f"X_val has {X_val.n_variables} variables, X has {X.n_variables}")
        tr, va = _Arrays(X, self.max_grid), _Arrays(X_val, self.max_grid)
        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        pos_weight = n_neg / n_pos
        net = self._new_net(X.n_variables).to(device)
        tcn_params = list(net.head.parameters())
        opt = torch.optim.Adam(
            [
                {"params": tcn_params, "weight_decay": self.l2},
                {"params": list(net.gp.parameters()), "weight_decay": 0.0},
            ],
            lr=self.lr,
        )
        sched = self._scheduler(opt)
        class_w = torch.tensor([1.0, pos_weight], device=device)
        gen = self._generator(device, offset=0)
        state: dict[str, Any] = {
            "epoch": 0,
            "history": [],
            "best_score": -1.0,
            "best_epoch": -1,
            "best_model": None,
            "bad_epochs": 0,
            "stopped": False,
            "stop_reason": "epochs",
        }
        ckpt_path = Path(self.checkpoint_dir) / _CKPT if self.checkpoint_dir else None
        data_key = self._data_key(tr, va, y, y_val) if ckpt_path is not None else ""
        if ckpt_path is not None and ckpt_path.exists():
            state = self._resume(ckpt_path, data_key, net, opt, sched, gen, device) or state
        y_t = torch.as_tensor(y, device=device)
        dtype = _DTYPES[self.gp_dtype]
        while state["epoch"] < self.epochs and not state["stopped"]:
            epoch = state["epoch"]
            t0 = time.perf_counter()
            net.train()
            perm = np.random.default_rng([self.seed, epoch]).permutation(len(tr))
            total, seen = 0.0, 0
            bar = tqdm(
                total=len(tr),
                desc=f"MGP-TCN epoch {epoch + 1}/{self.epochs}",
                unit="stay",
                disable=not self.progress,
                leave=False,
            )
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(self.seed * 7919 + epoch)  # dropout, reproducible on resume
                for start in range(0, len(tr), self.batch_size):
                    idx = perm[start : start + self.batch_size]
                    b, gl = tr.batch(idx, device, dtype)
                    logits = net(
                        b, gl, self.n_mc_samples, gen, self.sampler, self._autocast_dtype()
                    )
                    target = y_t[torch.as_tensor(idx, device=device)].repeat_interleave(
                        self.n_mc_samples
                    )
                    loss = nn.functional.cross_entropy(
                        logits.reshape(-1, 2), target, weight=class_w
                    )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.grad_clip is not None:
                        nn.utils.clip_grad_norm_(net.parameters(), self.grad_clip)
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
                    bar.update(len(idx))
                    bar.set_postfix(
                        loss=f"{total / seen:.4f}",
                        stays_s=f"{seen / (time.perf_counter() - t0):.1f}",
                    )
            train_secs = time.perf_counter() - t0
            val_score = float(average_precision_score(y_val, self._proba(net, va, device)))
            # the trailing mean of the last `smoothing` epochs (itself when smoothing = 1)
            recent = ([h["val_auprc"] for h in state["history"]] + [val_score])[-self.smoothing :]
            smoothed = sum(recent) / len(recent)
            secs = time.perf_counter() - t0
            bar.set_postfix(loss=f"{total / seen:.4f}", val_auprc=f"{val_score:.4f}")
            bar.close()
            state["history"].append(
                {
                    "epoch": epoch + 1,
                    "loss": total / seen,
                    "val_auprc": val_score,
                    "val_auprc_smoothed": smoothed,
                    "lr": float(opt.param_groups[0]["lr"]),
                    "seconds": secs,
                    "train_seconds": train_secs,
                    "train_stays_per_s": seen / train_secs,
                    "lengthscale": float(net.gp.lengthscale.detach()),
                }
            )
            logger.info(
                "epoch %d: loss %.4f, val AUPRC %.4f (prevalence %.3f), %.1f s",
                epoch + 1,
                total / seen,
                val_score,
                float(np.mean(y_val)),
                secs,
            )
            if smoothed > state["best_score"]:
                state.update(
                    best_score=smoothed,
                    best_epoch=epoch + 1,
                    bad_epochs=0,
                    best_model=copy.deepcopy(net.state_dict()),
                )
            else:
                state["bad_epochs"] += 1
                if state["bad_epochs"] >= self.patience:
                    state.update(stopped=True, stop_reason="patience")
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(smoothed)
            elif sched is not None:
                sched.step()
            state["epoch"] = epoch + 1
            if epoch_callback is not None and epoch_callback(dict(state["history"][-1])):
                state.update(stopped=True, stop_reason="callback")
            if ckpt_path is not None:
                self._write_checkpoint(ckpt_path, data_key, net, opt, sched, gen, state)
        if state["best_model"] is not None:
            net.load_state_dict(state["best_model"])
        net.eval()
        self.net_ = net
        self.classes_ = np.array([0, 1])
        self.n_variables_ = X.n_variables
        self.variables_ = tuple(X.variables)
        self.pos_weight_ = pos_weight
        self.history_ = list(state["history"])
        self.best_epoch_ = int(state["best_epoch"])
        self.best_val_auprc_ = float(state["best_score"])
        self.stop_reason_ = str(state.get("stop_reason", "epochs"))
        return self

    def predict_proba(self, X: IrregularView) -> np.ndarray:
        """(n, 2) probabilities in `classes_` order, class 1 averaged over MC samples
        (``mc_samples_predict`` of them, ``n_mc_samples`` when that is None)."""
        self._fitted()
        self._check_view(X)
        if X.n_variables != self.n_variables_:
            raise ValueError(
                f"X has {X.n_variables} variables, the model was fitted on {self.n_variables_}"
            )
        device = next(self.net_.parameters()).device
        n = self.n_mc_samples if self.mc_samples_predict is None else self.mc_samples_predict
        p1 = self._proba(self.net_, _Arrays(X, self.max_grid), device, n)
        return np.column_stack([1.0 - p1, p1])

    def save(self, path: str | Path) -> None:
        """Write params.json, meta.json and the state_dict (state.pt) into directory `path`."""
        self._fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "params.json").write_text(json.dumps(self.get_params(), indent=2, sort_keys=True))
        meta = {
            "classes": self.classes_.tolist(),
            "n_variables": self.n_variables_,
            "variables": list(self.variables_),
            "pos_weight": self.pos_weight_,
            "history": self.history_,
            "best_epoch": self.best_epoch_,
            "best_val_auprc": self.best_val_auprc_,
            "stop_reason": self.stop_reason_,
        }
        (path / "meta.json").write_text(json.dumps(meta, indent=2))
        torch.save(self.net_.state_dict(), path / "state.pt")

    @classmethod
    def load(cls, path: str | Path) -> MGPTCNClassifier:
        """Rebuild a fitted classifier written by `save` (tensors only, no pickled objects).

        A saved ``checkpoint_dir`` is ignored: a loaded model never writes checkpoints.
        """
        path = Path(path)
        params = read_model_json(path / "params.json")
        meta = read_model_json(path / "meta.json")
        try:
            params["checkpoint_dir"] = None
            model = cls(**params)
            model.validate_params()
            n_variables = int(meta["n_variables"])
            model.classes_ = np.array(meta["classes"])
            model.n_variables_ = n_variables
            model.variables_ = tuple(str(v) for v in meta["variables"])
            model.pos_weight_ = float(meta["pos_weight"])
            model.history_ = list(meta["history"])
            model.best_epoch_ = int(meta["best_epoch"])
            model.best_val_auprc_ = float(meta["best_val_auprc"])
            model.stop_reason_ = str(meta.get("stop_reason", "epochs"))
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFormatError(f"{path}: params.json / meta.json: {err}") from None
        if model.classes_.tolist() != [0, 1]:
            raise ModelFormatError(
                f"{path / 'meta.json'}: classes {meta['classes']}, expected [0, 1]"
            )
        device = model._torch_device()
        net = model._new_net(n_variables).to(device)
        try:
            state = torch.load(path / "state.pt", map_location=device, weights_only=True)
            net.load_state_dict(state)
        except Exception as err:  # weights_only refuses pickled objects (UnpicklingError)
            raise ModelFormatError(
                f"{path / 'state.pt'}: not this model's weights ({err})"
            ) from None
        net.eval()
        model.net_ = net
        return model
