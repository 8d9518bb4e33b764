"""The estimator interface both learners share (scikit-learn's classifier contract).

`__init__` only stores keyword parameters; `fit(X, y, X_val=None, y_val=None)` validates,
learns, sets trailing-underscore attributes and returns self; `predict_proba(X)` returns
(n, 2) in `classes_` order; prediction before fit raises `NotFittedError`; `fit` never
mutates `get_params()`; `save(path)` / `load(path)` round-trip. `view` says which dataset
view (`data_prep.views.IrregularView` or `GridView`) the learner consumes.

Each learner declares `_parameter_constraints` (scikit-learn's `Interval` / `StrOptions`) for
every keyword parameter; `validate_params()` checks them (fit calls it, and so does config
loading) and raises `ParameterError` naming the key. Saved models are parameters (JSON) plus
arrays (`.npz` read with `allow_pickle=False`, or tensors read with `weights_only=True`):
nothing a model folder holds can run code when loaded, and a malformed one raises
`ModelFormatError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from data_prep.errors import DataError


class ParameterError(ValueError):
    """A learner parameter outside its declared range; `key` names the parameter."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


class ModelFormatError(DataError):
    """A saved model folder that is missing, malformed or in an unsafe (pickle) format."""


def read_model_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or ModelFormatError naming the file."""
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing; expected a model saved by this version")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the `.npz` at `path`, refusing pickled (object) arrays."""
    if not path.is_file():
        raise ModelFormatError(f"{path}: missing; expected a model saved by this version")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as err:  # numpy's refusal of object arrays is a ValueError
        raise ModelFormatError(
            f"{path}: cannot be read without unpickling ({err}); expected plain arrays"
        ) from None
    except (OSError, EOFError) as err:
        raise ModelFormatError(f"{path}: not a readable .npz archive ({err})") from None


def refuse_pickle_folder(path: Path, expected: str) -> None:
    """Raise when `path` holds an old pickle `model.joblib` instead of `expected`."""
    path = Path(path)
    if not (path / expected).exists() and (path / "model.joblib").exists():
        raise ModelFormatError(
            f"{path / 'model.joblib'}: a pickle (joblib) model, which is never loaded because "
            f"unpickling can run arbitrary code; expected {path / expected} - retrain with "
            "this version"
        )


class SepsisLearner(ClassifierMixin, BaseEstimator):
    """Base class: subclasses set `view` and implement fit / predict_proba / save / load."""

    view: ClassVar[str] = ""
    #: parameter -> scikit-learn constraints (see `validate_params`)
    _parameter_constraints: ClassVar[dict[str, list]] = {}

    def validate_params(self) -> None:
        """Check every parameter against `_parameter_constraints`; ParameterError names the key."""
        params = self.get_params(deep=False)
        unchecked = sorted(set(params) - set(self._parameter_constraints))
        if unchecked:  # a programming error: a new parameter needs a declared range
            raise TypeError(f"{type(self).__name__}: no constraints declared for {unchecked}")
        for key, constraints in self._parameter_constraints.items():
            value = params[key]
            # sklearn's Interval(Integral) accepts True/False; a bool is never a count here
            if isinstance(value, bool | np.bool_) and "boolean" not in constraints:
                raise ParameterError(key, f"expected a number, got {value!r}")
            try:
                validate_parameter_constraints(
                    {key: constraints}, {key: value}, caller_name=type(self).__name__
                )
            except InvalidParameterError as err:
                raise ParameterError(key, str(err)) from None
        self._check_more_params()

    def _check_more_params(self) -> None:
        """Checks `_parameter_constraints` cannot express (subclasses raise ParameterError)."""

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

    def save(self, path: str | Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | Path) -> SepsisLearner:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fitted(self) -> None:
        check_is_fitted(self, "classes_")
