"""Config validation: each bad case is rejected with a message naming the file and the key."""

from pathlib import Path

import pytest
import yaml

from sepsis.config import ConfigError, coerce, expand_path, load_config, parse_override

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, data, name="run.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_default_config_loads_with_defaults(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config("configs/default.yaml")
    assert cfg.source == "synthetic" and cfg.name == "default"
    assert cfg.output_dir == Path("runs/default")
    assert tuple(cfg.train.horizons) == (0, 1, 2, 3, 4, 5, 6, 7)
    d = cfg.to_dict()
    assert d["cohort"]["min_onset_hour"] == 7 and "mgp_tcn" in d


def test_every_shipped_config_parses(monkeypatch):
    monkeypatch.chdir(REPO)
    for path in sorted(Path("configs").glob("*.yaml")):
        cfg = load_config(path, check_paths=False)
        assert cfg.name == path.stem or cfg.name


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"sourse": "synthetic"}, "sourse", "did you mean 'source'"),
        ({"source": "eicu"}, "source", "expected one of"),
        ({"cohort": {"contol_ratio": 3}}, "cohort.contol_ratio", "unknown key"),
        ({"cohort": {"control_ratio": "five"}}, "cohort.control_ratio", "expected"),
        ({"cohort": {"control_ratio": 0}}, "cohort.control_ratio", ""),
        ({"train": {"horizons": [-1, 0]}}, "train.horizons", "non-negative"),
        ({"train": {"horizons": "seven"}}, "train.horizons", "expected a list"),
        ({"train": {"per_horizon": ["xgboost"]}}, "train.per_horizon", "unknown learner"),
        ({"labels": {"si_time": "later"}}, "labels.si_time", ""),
        ({"mgp_tcn": {"epoch": 3}}, "mgp_tcn.epoch", "did you mean 'epochs'"),
        ({"mgp_tcn": {"epochs": "many"}}, "mgp_tcn.epochs", "expected an integer"),
        ({"evaluate": {"n_bootstrap": 0}}, "evaluate.n_bootstrap", ">= 1"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path, data, key, words):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and words in msg


def test_missing_data_path_is_rejected(tmp_path):
    path = write(tmp_path, {"source": "physionet2019", "data_dir": str(tmp_path / "nope.zip")})
    with pytest.raises(ConfigError, match="data_dir.*does not exist"):
        load_config(path)
    path = write(tmp_path, {"source": "mimic3"})
    with pytest.raises(ConfigError, match="data_dir: required"):
        load_config(path)


def test_overrides_apply_and_are_checked(tmp_path):
    path = write(tmp_path, {"source": "synthetic"})
    cfg = load_config(path, ["data_dir=/tmp/x", "cohort.control_ratio=3", "train.horizons=[0,7]"])
    assert cfg.data_dir == Path("/tmp/x") and cfg.cohort.control_ratio == 3
    assert tuple(cfg.train.horizons) == (0, 7)
    with pytest.raises(ConfigError, match="cohort.control_ratio"):
        load_config(path, ["cohort.control_ratio=-2"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["data_dir"])


def test_train_horizons_must_be_prepared(tmp_path):
    path = write(tmp_path, {"cohort": {"horizons": [0, 1]}, "train": {"horizons": [0, 5]}})
    with pytest.raises(ConfigError, match="train.horizons"):
        load_config(path)


def test_env_var_paths(monkeypatch):
    monkeypatch.setenv("SEPSIS_TEST_DIR", "/data/here")
    assert expand_path("${SEPSIS_TEST_DIR}/a.zip") == Path("/data/here/a.zip")
    monkeypatch.delenv("SEPSIS_TEST_DIR")
    assert expand_path("${SEPSIS_TEST_DIR:-../shared}/a.zip") == Path("../shared/a.zip")
    with pytest.raises(ConfigError, match="SEPSIS_TEST_DIR"):
        expand_path("${SEPSIS_TEST_DIR}/a.zip")


def test_coerce_and_parse_override():
    assert coerce([1, 2], tuple[int, ...], "k") == (1, 2)
    assert coerce(None, int | None, "k") is None
    assert coerce(3, float, "k") == 3.0
    with pytest.raises(ConfigError):
        coerce(True, int, "k")
    with pytest.raises(ConfigError):
        coerce(1.5, int, "k")
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
