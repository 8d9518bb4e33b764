"""Tests for sepsis.evaluation.report and plots: files, numbers, self-contained HTML."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sepsis.evaluation import plots
from sepsis.evaluation.metrics import metrics_table, summarise_over_seeds
from sepsis.evaluation.report import cohort_table, format_summary_table, write_report

sys.path.insert(0, str(Path(__file__).parent))
from test_metrics import fake_predictions  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pred = fake_predictions(
        n=150, learners=("dtw_knn", "mgp_tcn"), horizons=(0, 1, 7), seeds=(0, 1)
    )
    once = pred[pred.learner == "mgp_tcn"].assign(regime="train_once")
    sofa = pred[pred.learner == "dtw_knn"].assign(learner="sofa_increase", score=np.nan)
    pred = pd.concat([pred, once, sofa], ignore_index=True)
    tab = metrics_table(pred, n_resamples=60, seed=0)
    summ = summarise_over_seeds(tab)
    rng = np.random.default_rng(0)
    cohort = pd.DataFrame(
        {
            "stay_id": np.arange(50),
            "label": (np.arange(50) % 5 == 0).astype(np.int8),
            "onset_hour": rng.uniform(7, 90, 50),
        }
    )
    splits = pd.DataFrame(
        {
            "stay_id": np.arange(50),
            "seed": 0,
            "split": np.where(
                np.arange(50) < 40, "train", np.where(np.arange(50) < 45, "val", "test")
            ),
        }
    )
    history = pd.DataFrame(
        [
            dict(learner="mgp_tcn", seed=s, horizon=0, epoch=e, loss=1 / (e + 1), val_auprc=0.1 * e)
            for s in (0, 1)
            for e in range(5)
        ]
    )
    ctx = dict(
        command="sepsis evaluate --config configs/x.yaml",
        config_hash="deadbeef",
        run_time="now",
        attrition=[dict(step="all", removed=0, remaining=50, cases=10, controls=40)],
        cohort=cohort,
        splits=splits,
        history=history,
        onsets=pd.DataFrame(
            {"onset_hour": [10.0, 20.0, np.nan], "components_rose": ["resp,renal", "cns", None]}
        ),
        n_resamples=50,
    )
    out = tmp_path_factory.mktemp("report")
    paths = write_report(out, pred, tab, summ, ctx)
    return out, paths, pred, tab, summ


def test_files_written_and_no_temporaries(run):
    out, paths, *_ = run
    for key in (
        "metrics_csv",
        "report_md",
        "report_html",
        "plot_auprc_vs_horizon",
        "plot_training_curves",
        "plot_pr_0h",
        "plot_roc_7h",
        "plot_onset_hours",
        "plot_sofa_components",
    ):
        assert paths[key].exists() and paths[key].stat().st_size > 0, key
    for p in paths.values():
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG_MAGIC
    assert not list(out.rglob("*.tmp"))


def test_metrics_csv_round_trips(run):
    _, paths, _, tab, _ = run
    back = pd.read_csv(paths["metrics_csv"])
    assert len(back) == len(tab)
    np.testing.assert_allclose(back["auprc"].to_numpy(), tab["auprc"].to_numpy(), equal_nan=True)


def _md_row(md: str, section: str, label: str) -> list[str]:
    sec = md.split(f"## {section}")[1].split("\n## ")[0]
    line = next(ln for ln in sec.splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_md_auprc_table_equals_metrics_table(run):
    _, paths, _, tab, _ = run
    md = paths["report_md"].read_text()
    for learner, regime, label in (
        ("dtw_knn", "per_horizon", "dtw_knn (per-horizon)"),
        ("mgp_tcn", "train_once", "mgp_tcn (train-once)"),
    ):
        cells = _md_row(md, "AUPRC by horizon", label)
        assert cells[1] == "2"  # seeds
        for k, h in enumerate((0, 1, 7)):
            g = tab[(tab.learner == learner) & (tab.regime == regime) & (tab.horizon == h)]
            assert cells[2 + k].startswith(f"{g['auprc'].mean():.3f} [")
            assert f"{g['auprc_low'].mean():.3f}, {g['auprc_high'].mean():.3f}]" in cells[2 + k]
    prev = _md_row(md, "AUPRC by horizon", "prevalence (random score)")
    assert prev[2] == f"{tab[tab.horizon == 0]['prevalence'].mean():.3f}"
    assert _md_row(md, "AUPRC by horizon", "sofa_increase (per-horizon)")[2:] == ["n/a"] * 3
    auroc = _md_row(md, "AUROC by horizon", "dtw_knn (per-horizon)")
    g = tab[(tab.learner == "dtw_knn") & (tab.horizon == 7)]
    assert auroc[4].startswith(f"{g['auroc'].mean():.3f}")


def test_md_has_context_cohort_and_paired_differences(run):
    _, paths, *_ = run
    md = paths["report_md"].read_text()
    assert "sepsis evaluate --config configs/x.yaml" in md and "deadbeef" in md
    assert "| 0 | train | 8 | 32 | 0.200 |" in md  # 40 train stays, every 5th a case
    assert "| all | 0 | 50 | 10 | 40 |" in md
    assert "dtw_knn - mgp_tcn" in md
    assert "train-once" in md and "per-horizon" in md and "0.40 for DTW-KNN" in md


def test_html_is_self_contained(run):
    _, paths, *_ = run
    text = paths["report_html"].read_text()
    n_png = sum(1 for k in paths if k.startswith("plot_"))
    assert text.count("data:image/png;base64,") == n_png
    srcs = re.findall(r"src='([^']*)'", text) + re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for bad in ("http://", "https://", "<link", "<script", "href="):
        assert bad not in text


def test_format_summary_table(run):
    *_, summ = run
    text = format_summary_table(summ)
    lines = text.splitlines()
    assert lines[0].startswith("AUPRC") and any(ln.startswith("AUROC") for ln in lines)
    row = next(ln for ln in lines if ln.startswith("dtw_knn (per-horizon)"))
    want = summ[(summ.learner == "dtw_knn") & (summ.horizon == 0)]["auprc_mean"].iloc[0]
    assert f"{want:.3f}" in row.split()
    header = lines[1]
    assert len(row) == len(header)  # right-aligned columns end at the same place
    assert format_summary_table(summ.iloc[:0]) == "(no results)"


def test_cohort_table_counts():
    cohort = pd.DataFrame({"stay_id": [1, 2, 3, 4], "label": [1, 0, 0, 0]})
    splits = pd.DataFrame(
        {
            "stay_id": [1, 2, 3, 4, 1, 2, 3, 4],
            "seed": [0] * 4 + [1] * 4,
            "split": ["train", "train", "test", "val", "test", "train", "train", "val"],
        }
    )
    t = cohort_table(cohort, splits)
    assert t[(t.seed == 1) & (t.split == "test")][["cases", "controls"]].values.tolist() == [[1, 0]]
    assert t[(t.seed == 0) & (t.split == "train")]["prevalence"].iloc[0] == 0.5
    with pytest.raises(ValueError, match="not in the cohort"):
        cohort_table(cohort.iloc[:2], splits)


def test_plots_handle_empty_inputs(tmp_path):
    empty_pred = fake_predictions().iloc[:0]
    empty_summ = summarise_over_seeds(metrics_table(empty_pred))
    for p in (
        plots.plot_metric_vs_horizon(empty_summ, "auprc", tmp_path / "a.png"),
        plots.plot_curves(empty_pred, 0, tmp_path / "b.png"),
        plots.plot_calibration(empty_pred, 0, tmp_path / "c.png"),
        plots.plot_training_curves(pd.DataFrame(), tmp_path / "d.png"),
        plots.plot_onset_hours(np.array([np.nan]), tmp_path / "e.png"),
        plots.plot_sofa_components(pd.DataFrame({"x": [1]}), tmp_path / "f.png"),
    ):
        assert p.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="kind"):
        plots.plot_curves(empty_pred, 0, tmp_path / "g.png", kind="det")


def test_sofa_component_shares():
    s = plots.sofa_component_counts(
        pd.DataFrame({"components_rose": ["resp,renal", "resp", "", None]})
    )
    assert s["resp"] == 1.0 and s["renal"] == 0.5 and s["cns"] == 0.0


def test_pipeline_style_context(tmp_path):
    """The keys sepsis.pipeline.report_context passes: name, source, command per stage, etc."""
    from sepsis.evaluation.metrics import paired_differences

    pred = fake_predictions(n=80, learners=("a", "b"), horizons=(0, 7), seeds=(0,))
    tab = metrics_table(pred, n_resamples=20)
    diffs = paired_differences(pred, n_resamples=20)
    diffs.loc[:, "diff"] = (
        0.123456  # a marker: the report must reuse the given table, not recompute
    )
    ctx = dict(
        name="demo",
        source="physionet2019",
        config_hash="c0ffee",
        command={
            "prepared": "sepsis prepare --config c.yaml",
            "models": "sepsis train --config c.yaml",
        },
        wall_seconds={"prepared": 1.5, "models": 20.0},
        config={"cohort": {"ratio": 10}},
        paired_differences=diffs,
        attrition_full={
            "matching": {"cases": 5, "controls": 50, "final_ratio": 10.0, "cases_short": 0},
            "variables": {"kept": ["hr", "sbp"], "dropped": ["x"], "min_observations": 500},
            "dropped_values": {"hr": 3},
        },
    )
    paths = write_report(tmp_path, pred, tab, summarise_over_seeds(tab), ctx)
    md = paths["report_md"].read_text()
    assert "# Sepsis early-warning evaluation: demo" in md
    assert "models: sepsis train --config c.yaml" in md and "physionet2019" in md and "c0ffee" in md
    assert "0.123" in md.split("## Paired differences")[1]
    assert "final_ratio 10.00" in md and "Variables kept: 2" in md and "| hr | 3 |" in md
    assert '"ratio": 10' in md
    assert "src='data:image/png;base64," in paths["report_html"].read_text()


def test_sofa_chart_uses_only_cohort_cases(tmp_path, monkeypatch):
    from sepsis.evaluation import report

    seen = {}
    real = plots.plot_sofa_components

    def spy(df, path):
        seen["df"] = df
        return real(df, path)

    monkeypatch.setattr(report.plots, "plot_sofa_components", spy)
    pred = fake_predictions(n=40, learners=("a",), horizons=(0,), seeds=(0,))
    tab = metrics_table(pred, n_resamples=10)
    onsets = pd.DataFrame(
        {
            "stay_id": [1, 2, 3],
            "onset_hour": [10.0, 11.0, 12.0],
            "components_rose": ["resp", "cns", "renal"],
        }
    )
    cohort = pd.DataFrame({"stay_id": [1, 2], "label": [1, 0], "onset_hour": [10.0, 10.0]})
    write_report(
        tmp_path,
        pred,
        tab,
        summarise_over_seeds(tab),
        dict(onsets=onsets, cohort=cohort, n_resamples=10),
    )
    assert seen["df"]["stay_id"].tolist() == [1]
