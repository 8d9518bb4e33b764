"""Export the hourly Sepsis-3 labels of a prepared run as MEDS task labels.

MEDS stores task labels as ``$TASK_ROOT/$TASK_NAME/**/*.parquet`` in its label schema
(subject_id int64, prediction_time timestamp[us], boolean_value bool, integer_value int64,
float_value float64, categorical_value string; a model may use the subject's data up to and
including prediction_time). From ``prepared/stays.parquet`` and
``prepared/labels_hourly.parquet`` this writes, under ``out`` (the task root):

* ``sepsis3_hourly/labels.parquet``: one row per labelled stay-hour. Hour ``k`` covers
  ``[intime + k h, intime + (k + 1) h)``; the prediction is made at the end of the hour,
  ``prediction_time = intime + (k + 1) h``, and ``boolean_value`` = Sepsis-3 at hour ``k``
  (onset at or before that hour). The other value columns are null. subject_id = the
  stay's patient_id (the MEDS subject for the meds source).
* ``sepsis3_events/events.parquet``: MEDS has no convention for onsets, so the onsets are
  written as derived events in the MEDS *data* schema, which can be added to a MEDS dataset:
  code ``SEPSIS3//ONSET`` at the onset time (numeric_value = SOFA at onset) and
  ``SEPSIS3//SUSPECTED_INFECTION`` at the suspected-infection time, with the stay id as an
  extra column ``stay_id``.

Each task folder is written atomically (a temporary folder renamed into place) and its
file's schema is checked against the MEDS schema after writing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep import io as dio
from data_prep.errors import DataError

LABEL_TASK = "sepsis3_hourly"
EVENTS_TASK = "sepsis3_events"
ONSET_CODE = "SEPSIS3//ONSET"
SI_CODE = "SEPSIS3//SUSPECTED_INFECTION"

# MEDS label schema (meds 0.3 label_schema / 0.4 LabelSchema)
LABEL_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("prediction_time", pa.timestamp("us")),
        ("boolean_value", pa.bool_()),
        ("integer_value", pa.int64()),
        ("float_value", pa.float64()),
        ("categorical_value", pa.string()),
    ]
)
# MEDS data schema (subject_id, time, code, numeric_value float32) + text_value + stay_id
EVENTS_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("time", pa.timestamp("us")),
        ("code", pa.string()),
        ("numeric_value", pa.float32()),
        ("text_value", pa.large_string()),
        ("stay_id", pa.int64()),
    ]
)
US_PER_HOUR = 3_600_000_000


def label_table(stays: pd.DataFrame, labels: pd.DataFrame) -> pa.Table:
    """MEDS label rows of `labels_hourly` (stays give patient_id and intime)."""
    s = stays.set_index("stay_id")
    missing = ~labels["stay_id"].isin(s.index)
    if missing.any():
        raise DataError(
            f"labels_hourly: stay {int(labels.loc[missing, 'stay_id'].iloc[0])} is not in stays.parquet"
        )
    intime = labels["stay_id"].map(s["intime"])
    no_in = intime.isna()
    if no_in.any():
        raise DataError(
            f"stays.parquet: stay {int(labels.loc[no_in, 'stay_id'].iloc[0])} has no intime; "
            "its hours cannot be placed in time"
        )
    t = (
        intime.to_numpy("datetime64[us]").astype(np.int64)
        + (labels["hour"].to_numpy(np.int64) + 1) * US_PER_HOUR
    )
    df = pd.DataFrame(
        {
            "subject_id": labels["stay_id"].map(s["patient_id"]).to_numpy(np.int64),
            "prediction_time": t.astype("datetime64[us]"),
            "boolean_value": labels["sepsis"].to_numpy(bool),
        }
    ).sort_values(["subject_id", "prediction_time"], kind="stable")
    n = len(df)
    return pa.table(
        {
            "subject_id": pa.array(df["subject_id"].to_numpy(), pa.int64()),
            "prediction_time": pa.array(df["prediction_time"].to_numpy(), pa.timestamp("us")),
            "boolean_value": pa.array(df["boolean_value"].to_numpy(), pa.bool_()),
            "integer_value": pa.nulls(n, pa.int64()),
            "float_value": pa.nulls(n, pa.float64()),
            "categorical_value": pa.nulls(n, pa.string()),
        },
        schema=LABEL_SCHEMA,
    )


def onset_events(stays: pd.DataFrame, onsets: pd.DataFrame) -> pa.Table:
    """Onset and suspected-infection times as MEDS data rows (derived events)."""
    pid = stays.set_index("stay_id")["patient_id"]
    parts = []
    for code, tcol, vcol in (
        (SI_CODE, "si_time", None),
        (ONSET_CODE, "onset_time", "sofa_at_onset"),
    ):
        o = onsets[onsets[tcol].notna()] if tcol in onsets else onsets.iloc[:0]
        parts.append(
            pd.DataFrame(
                {
                    "subject_id": o["stay_id"].map(pid).to_numpy(np.int64),
                    "time": pd.to_datetime(o[tcol]).to_numpy("datetime64[us]"),
                    "code": code,
                    "numeric_value": (
                        pd.to_numeric(o[vcol], errors="coerce")
                        .astype("float64")
                        .to_numpy(np.float32)
                        if vcol and vcol in o
                        else np.full(len(o), np.nan, np.float32)
                    ),
                    "stay_id": o["stay_id"].to_numpy(np.int64),
                }
            )
        )
    df = pd.concat(parts, ignore_index=True).sort_values(["subject_id", "time"], kind="stable")
    return pa.table(
        {
            "subject_id": pa.array(df["subject_id"].to_numpy(np.int64)),
            "time": pa.array(df["time"].to_numpy("datetime64[us]"), pa.timestamp("us")),
            "code": pa.array(df["code"].to_numpy(object), pa.string()),
            "numeric_value": pa.array(
                df["numeric_value"].to_numpy(np.float32), pa.float32(), from_pandas=True
            ),
            "text_value": pa.nulls(len(df), pa.large_string()),
            "stay_id": pa.array(df["stay_id"].to_numpy(np.int64)),
        },
        schema=EVENTS_SCHEMA,
    )


def _write_task(table: pa.Table, out: Path, task: str, name: str, schema: pa.Schema) -> Path:
    with dio.atomic_dir(out / task) as tmp:
        path = tmp / name
        pq.write_table(table, path)
        got = pq.read_schema(path)
        if not got.equals(schema, check_metadata=False):
            raise DataError(
                f"{out / task / name}: written schema {got} is not the MEDS schema {schema}"
            )
    return out / task / name


def export_meds(prepared: Path, out: Path) -> dict:
    """Write the MEDS label and onset files of `prepared` under `out`; returns counts."""
    prepared, out = Path(prepared), Path(out)
    if not (prepared / "labels_hourly.parquet").is_file():
        raise DataError(f"{prepared}: no labels_hourly.parquet (run `sepsis prepare` first)")
    stays = dio.read_parquet(
        prepared / "stays.parquet", dio.STAYS, columns=["stay_id", "patient_id", "intime"]
    )
    labels = dio.read_parquet(
        prepared / "labels_hourly.parquet", dio.LABELS_HOURLY, columns=["stay_id", "hour", "sepsis"]
    )
    table = label_table(stays, labels)
    label_file = _write_task(table, out, LABEL_TASK, "labels.parquet", LABEL_SCHEMA)
    counts = {
        "labels": table.num_rows,
        "positive": int(np.sum(table.column("boolean_value").to_numpy(zero_copy_only=False))),
        "subjects": len(set(table.column("subject_id").to_pylist())),
        "label_file": str(label_file),
    }
    if (prepared / "onsets.parquet").is_file():
        onsets = dio.read_parquet(
            prepared / "onsets.parquet",
            dio.ONSETS,
            columns=["stay_id", "si_time", "onset_time", "sofa_at_onset"],
        )
        ev = onset_events(stays, onsets)
        counts["events_file"] = str(
            _write_task(ev, out, EVENTS_TASK, "events.parquet", EVENTS_SCHEMA)
        )
        codes = ev.column("code").to_pylist()
        counts["onsets"] = codes.count(ONSET_CODE)
    return counts
