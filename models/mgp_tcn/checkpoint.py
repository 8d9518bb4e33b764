"""MGP-TCN training checkpoints: written after every epoch, resumed only by a fit with the
same parameters and data (fingerprints of both), discarded otherwise
(`models.mgp_tcn.classifier`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.mgp_tcn.net import _Arrays

logger = logging.getLogger("models.mgp_tcn.classifier")  # the classifier's messages

_CKPT = "checkpoint.pt"


class _Checkpoints:
    """The checkpoint methods of `MGPTCNClassifier` (its parameters, via `get_params`)."""

    def _params_key(self) -> str:
        skip = {"progress", "checkpoint_dir", "device"}
        return json.dumps(
            {k: v for k, v in self.get_params().items() if k not in skip}, sort_keys=True
        )

    @staticmethod
    def _data_key(tr: _Arrays, va: _Arrays, y: np.ndarray, y_val: np.ndarray) -> str:
        """sha256 of the training and validation tensors and labels the fit consumes."""
        h = hashlib.sha256()
        for arr in (tr, va):
            for t in (arr.times, arr.var_idx, arr.values, arr.mask, arr.grid_len):
                a = np.ascontiguousarray(t.numpy())
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
        for lab in (y, y_val):
            a = np.ascontiguousarray(np.asarray(lab, dtype=np.int64))
            h.update(f"{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def _write_checkpoint(self, path: Path, data_key: str, net, opt, sched, gen, state) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "params": self._params_key(),
            "data": data_key,
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "generator": gen.get_state(),
            **state,
        }
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: a crash never leaves half a checkpoint

    def _resume(
        self, path: Path, data_key: str, net, opt, sched, gen, device
    ) -> dict[str, Any] | None:
        """The saved training state, or None (checkpoint deleted) when it is for another fit."""
        try:
            ck = torch.load(path, map_location=device, weights_only=True)
        except Exception as err:  # a foreign or damaged file: never trusted, never fatal
            ck, why = None, f"unreadable ({type(err).__name__}: {err})"
        else:
            if not isinstance(ck, dict) or ck.get("data") != data_key:
                why = "written for other training data"
            elif ck.get("params") != self._params_key():
                why = f"written with other parameters {ck.get('params')}"
            else:
                why = ""
        if why:
            logger.warning("%s: checkpoint %s; discarded, training from scratch", path, why)
            path.unlink()
            return None
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck.get("scheduler") is not None:
            sched.load_state_dict(ck["scheduler"])
        gen.set_state(ck["generator"].cpu() if device.type == "cpu" else ck["generator"])
        logger.info("resuming from %s at epoch %d", path, ck["epoch"] + 1)
        keys = (
            "epoch",
            "history",
            "best_score",
            "best_epoch",
            "best_model",
            "bad_epochs",
            "stopped",
        )
        return {**{k: ck[k] for k in keys}, "stop_reason": ck.get("stop_reason", "epochs")}
