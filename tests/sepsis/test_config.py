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


# ------------------------------------------------------------------ extends chains


def test_extends_chain_of_three_keeps_the_grandparents_keys(tmp_path):
    # each parent is found relative to the file that names it
    (tmp_path / "sub").mkdir()
    (tmp_path / "base").mkdir()
    write(
        tmp_path / "base",
        {
            "source": "mimic3",
            "data_dir": str(tmp_path / "data"),
            "cohort": {"min_age": 20, "control_ratio": 2, "split_seeds": [0, 1]},
        },
        "c.yaml",
    )
    write(
        tmp_path / "sub",
        {"extends": "../base/c.yaml", "cohort": {"control_ratio": 4}, "train": {"threads": 1}},
        "b.yaml",
    )
    path = write(tmp_path, {"extends": "sub/b.yaml", "cohort": {"control_ratio": 5}})
    cfg = load_config(path, check_paths=False)
    assert cfg.source == "mimic3" and cfg.data_dir == tmp_path / "data"
    assert cfg.cohort.min_age == 20 and tuple(cfg.cohort.split_seeds) == (0, 1)
    assert cfg.cohort.control_ratio == 5 and cfg.train.threads == 1
    assert "extends" not in cfg.raw


def test_extends_itself_is_a_cycle(tmp_path):
    path = write(tmp_path, {"extends": "run.yaml"})
    with pytest.raises(ConfigError, match="cycle") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_extends_two_cycle_lists_the_chain(tmp_path):
    write(tmp_path, {"extends": "a.yaml", "train": {"threads": 1}}, "b.yaml")
    path = write(tmp_path, {"extends": "b.yaml"}, "a.yaml")
    with pytest.raises(ConfigError, match="cycle") as err:
        load_config(path)
    msg = str(err.value)
    assert "a.yaml -> " in msg and "b.yaml -> " in msg


def test_extends_missing_parent_is_named(tmp_path):
    write(tmp_path, {"extends": "gone.yaml"}, "b.yaml")
    path = write(tmp_path, {"extends": "b.yaml"})
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_config(path)
    msg = str(err.value)
    assert str(tmp_path / "gone.yaml") in msg and str(tmp_path / "b.yaml") in msg
    with pytest.raises(ConfigError, match="expected a config file name"):
        load_config(write(tmp_path, {"extends": [1]}))
    with pytest.raises(ConfigError, match="extends"):
        load_config(write(tmp_path, {}), ["extends=b.yaml"])


# ------------------------------------------------------------------ run-folder safety


def _paths_config(tmp_path, output_dir, name="run.yaml", source="mimic3"):
    data = tmp_path / "store" / "data"
    data.mkdir(parents=True, exist_ok=True)
    return write(
        tmp_path, {"source": source, "data_dir": str(data), "output_dir": str(output_dir)}, name
    )


@pytest.mark.parametrize(
    "output_dir, words",
    [
        ("/", "filesystem root"),
        ("{home}", "is the home directory"),
        ("{home}/..", "contains the home directory"),
        ("{cwd}", "is the current directory"),
        (".", "is the current directory"),
        ("..", "contains the current directory"),
        (str(REPO), "repository root"),
        ("{data}", "is data_dir"),
        ("{data}/runs/x", "inside data_dir"),
        ("{tmp}", "contains data_dir"),
    ],
)
def test_output_dir_must_not_hold_user_files(tmp_path, monkeypatch, output_dir, words):
    home, cwd = tmp_path / "home", tmp_path / "work" / "checkout"
    home.mkdir()
    cwd.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    data, store = tmp_path / "store" / "data", tmp_path / "store"
    out = output_dir.format(home=home, cwd=cwd, data=data, tmp=store)
    path = _paths_config(tmp_path, out)
    with pytest.raises(ConfigError, match="output_dir") as err:
        load_config(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_separate_output_dir_is_accepted(tmp_path):
    cfg = load_config(_paths_config(tmp_path, tmp_path / "runs" / "x"))
    assert cfg.output_dir == tmp_path / "runs" / "x"


def test_generated_data_dir_must_not_be_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write(tmp_path, {"data_dir": "~", "output_dir": str(tmp_path / "runs" / "x")})
    with pytest.raises(ConfigError, match="data_dir: .* is the home directory"):
        load_config(path)


@pytest.mark.parametrize("name", [".", "..", "--", "._"])
def test_name_needs_a_letter_or_digit(tmp_path, name):
    with pytest.raises(ConfigError, match="name: expected at least one letter or digit"):
        load_config(write(tmp_path, {"name": name}))


# ------------------------------------------------------------------ YAML safety

# Billion laughs: 10**9 zeros once expanded, as the first item of a list value (today's code
# puts the whole first item into its "expected an integer" message). Refused after composing
# ~100 nodes, never constructed in full.
_LEVELS = "abcdefghi"
BOMB = (
    "[["
    + ", ".join(
        ["&a [0,0,0,0,0,0,0,0,0,0]"]
        + [f"&{c} [{','.join(['*' + p] * 10)}]" for p, c in zip(_LEVELS, _LEVELS[1:], strict=False)]
    )
    + "]]"
)


def test_alias_bomb_in_a_list_is_refused_fast(tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(f"train:\n  horizons: {BOMB}\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than .* alias bomb") as err:
        load_config(path)
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match="override 'train.horizons=.*alias bomb"):
        load_config(write(tmp_path, {}), [f"train.horizons={BOMB}"])
    assert time.perf_counter() - t0 < 5


def test_recursive_alias_and_object_tags_are_refused(tmp_path):
    path = tmp_path / "rec.yaml"
    path.write_text("train:\n  horizons: &a [0, *a]\n")
    with pytest.raises(ConfigError, match="recursive"):
        load_config(path)
    path.write_text("train: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="not valid YAML.*python/object"):
        load_config(path)
    with pytest.raises(ConfigError, match="override 'cohort.horizons=\\[0,'.*not valid YAML"):
        load_config(write(tmp_path, {}), ["cohort.horizons=[0,"])


def test_ordinary_anchors_still_work(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("cohort:\n  horizons: &h [0, 3, 7]\ntrain:\n  horizons: *h\n")
    cfg = load_config(path)
    assert tuple(cfg.train.horizons) == (0, 3, 7) == tuple(cfg.cohort.horizons)


def test_extends_does_not_inherit_the_run_folder(tmp_path):
    """A child without its own name/output_dir gets its own run folder, not its parent's
    (whose stages it would otherwise replace)."""
    (tmp_path / "base.yaml").write_text(
        "name: base\nsource: synthetic\noutput_dir: runs/base-x\ncohort: {min_age: 30}\n"
    )
    (tmp_path / "child.yaml").write_text("extends: base.yaml\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.name == "child" and cfg.output_dir == Path("runs/child")
    assert cfg.cohort.min_age == 30  # everything else is inherited


def test_removed_search_key_points_at_the_new_section(tmp_path):
    path = write(tmp_path, {"train": {"mgp_search_trials": 10}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "train.mgp_search_trials" in msg and "mgp_tcn_search" in msg


def test_search_section_defaults_off_and_is_validated(tmp_path):
    cfg = load_config(write(tmp_path, {}))
    s = cfg.mgp_tcn_search
    assert s.trials == 0 and not s.enabled and s.pruner == "median"
    assert s.learners == ("mgp_tcn_tuned",) and s.budget_minutes is None
    ok = load_config(
        write(
            tmp_path,
            {
                "mgp_tcn_search": {
                    "trials": 30,
                    "budget_minutes": 45,
                    "pruner": "hyperband",
                    "predict_samples": [20, 40],
                    "space": {"levels": [4, 9], "dropout": {"choices": [0.0, 0.1]}},
                }
            },
        )
    )
    assert ok.mgp_tcn_search.predict_samples == (20, 40) and ok.mgp_tcn_search.enabled
    for bad, key in (
        ({"pruner": "asha"}, "mgp_tcn_search.pruner"),
        ({"trial": 3}, "mgp_tcn_search.trial"),
        ({"budget_minutes": -1}, "mgp_tcn_search.budget_minutes"),
        ({"space": {"levels": [9, 4]}}, "mgp_tcn_search.space.levels"),
        ({"learners": ["dtw_knn"]}, "mgp_tcn_search.learners"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(write(tmp_path, {"mgp_tcn_search": bad}))


def test_tuned_variants_have_their_own_sections_and_the_paper_defaults_stay(tmp_path):
    from models.dtw_knn import DTWKNNClassifier
    from models.mgp_tcn import MGPTCNClassifier

    cfg = load_config(write(tmp_path, {"mgp_tcn_tuned": {"epochs": 12}}))
    tuned = cfg.learners["mgp_tcn_tuned"]
    assert tuned["epochs"] == 12 and tuned["lr_schedule"] == "plateau" and tuned["smoothing"] == 3
    assert cfg.learners["mgp_tcn"] == {} and cfg.learners["dtw_knn"] == {}
    dtw = cfg.learners["dtw_knn_tuned"]
    assert dtw["combine"] == "logistic" and dtw["per_variable"] is True
    assert dtw["weights_grid"] == ("uniform", "distance")
    # the paper learners' own defaults are the paper's procedure
    p = MGPTCNClassifier().get_params()
    assert (p["smoothing"], p["lr_schedule"], p["grad_clip"], p["mc_samples_predict"]) == (
        1,
        "constant",
        None,
        None,
    )
    assert (p["n_mc_samples"], p["lr"], p["l2"], p["epochs"]) == (10, 0.005, 0.01, 15)
    d = DTWKNNClassifier().get_params()
    assert (d["combine"], d["per_variable"], d["weights_grid"]) == ("mean", False, ())
    with pytest.raises(ConfigError, match="dtw_knn_tuned.combine"):
        load_config(write(tmp_path, {"dtw_knn_tuned": {"combine": "vote"}}))
