"""The report's rendering: one list of blocks (headings, paragraphs, tables, figures) as
Markdown (figures linked) or as self-contained HTML (figures embedded as base64 PNG, inline
CSS), number formatting, and atomic file writes (temporary file + rename)."""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #4477aa;padding-bottom:.2em}h2{margin-top:1.8em;color:#234}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#eef2f7}
td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}code,pre{background:#f4f4f4;padding:.1em .3em}
pre{padding:.6em;overflow-x:auto}.note{color:#555;font-size:.9em}
"""


@dataclass
class _Block:
    kind: str  # h1 | h2 | p | pre | table | img
    content: Any
    caption: str = ""


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not np.isfinite(xf):
        return "n/a"
    return f"{xf:.{digits}f}"


def _write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def _write_text(path: Path, text: str) -> Path:
    return _write_bytes(path, text.encode("utf-8"))


def _write_csv(path: Path, df: pd.DataFrame) -> Path:
    return _write_text(path, df.to_csv(index=False))


def _df_to_strings(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(_fmt)
        else:
            out[c] = out[c].map(
                lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            )
    return out


def _md_table(df: pd.DataFrame) -> str:
    if df is None or len(df) == 0:
        return "_(none)_\n"
    s = _df_to_strings(df)
    head = "| " + " | ".join(str(c) for c in s.columns) + " |"
    sep = "| " + " | ".join("---" for _ in s.columns) + " |"
    body = [
        "| " + " | ".join(v.replace("|", "\\|") for v in row) + " |"
        for row in s.itertuples(index=False)
    ]
    return "\n".join([head, sep, *body]) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    if df is None or len(df) == 0:
        return "<p class='note'>(none)</p>"
    s = _df_to_strings(df)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in s.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in s.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render_md(blocks: list[_Block], out_dir: Path) -> str:
    parts = []
    for b in blocks:
        if b.kind == "h1":
            parts.append(f"# {b.content}\n")
        elif b.kind == "h2":
            parts.append(f"## {b.content}\n")
        elif b.kind == "p":
            parts.append(f"{b.content}\n")
        elif b.kind == "pre":
            parts.append(f"```\n{b.content}\n```\n")
        elif b.kind == "table":
            if b.caption:
                parts.append(f"**{b.caption}**\n")
            parts.append(_md_table(b.content))
        elif b.kind == "img":
            rel = Path(b.content).relative_to(out_dir).as_posix()
            parts.append(f"![{b.caption}]({rel})\n")
    return "\n".join(parts)


def _render_html(blocks: list[_Block], title: str) -> str:
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>"
    ]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{html.escape(str(b.content))}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{html.escape(str(b.content))}</p>")
        elif b.kind == "pre":
            parts.append(f"<pre>{html.escape(str(b.content))}</pre>")
        elif b.kind == "table":
            if b.caption:
                parts.append(f"<p><b>{html.escape(b.caption)}</b></p>")
            parts.append(_html_table(b.content))
        elif b.kind == "img":
            data = base64.b64encode(Path(b.content).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(b.caption, quote=True)}' "
                f"src='data:image/png;base64,{data}'><figcaption>{html.escape(b.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
