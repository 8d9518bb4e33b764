"""The estimator interface both learners share (scikit-learn's classifier contract).

`__init__` only stores keyword parameters; `fit(X, y, X_val=None, y_val=None)` validates,
learns, sets trailing-underscore attributes and returns self; `predict_proba(X)` returns
(n, 2) in `classes_` order; prediction before fit raises `NotFittedError`; `fit` never
mutates `get_params()`; `save(path)` / `load(path)` round-trip. `view` says which dataset
view (`data_prep.views.IrregularView` or `GridView`) the learner consumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted


class SepsisLearner(ClassifierMixin, BaseEstimator):
    """Base class: subclasses set `view` and implement fit / predict_proba / save / load."""

    view: ClassVar[str] = ""

    def _check_view(self, X) -> None:
        if getattr(X, "view", None) != self.view:
            raise TypeError(
                f"{type(self).__name__} consumes the '{self.view}' view, got {type(X).__name__}"
            )
        X.validate()

    @staticmethod
    def _check_labels(X, y) -> np.ndarray:
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise ValueError(f"y has shape {y.shape}, expected ({len(X)},)")
        if not set(np.unique(y)) <= {0, 1}:
            raise ValueError(f"y must be binary 0/1, got values {np.unique(y)[:5]}")
        if len(np.unique(y)) < 2:
            raise ValueError("y must contain both classes (cases and controls)")
        return y.astype(np.int64)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def decision_scores(self, X) -> np.ndarray:
        """Class-1 probability, the score that AUPRC/AUROC rank."""
        return self.predict_proba(X)[:, 1]

    def save(self, path: str | Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> SepsisLearner:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fitted(self) -> None:
        check_is_fitted(self, "classes_")
