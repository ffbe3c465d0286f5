"""The comparison table in every shape a reader wants: JSON-ready dicts, long CSV, wide text / Markdown / HTML."""

from __future__ import annotations

import csv
import io
import itertools

from results_api.queries import METRICS, Comparison
from results_api.reference import PAPER_EPOCHS

LONG_COLUMNS = ("kind", "dataset", "metric", "label", "shortcut", "augment", "layers", "epochs", "mean", "std",
                "count", "source")
DATASET_NAMES = {"cifar10": "CIFAR-10", "fashion-mnist": "Fashion-MNIST"}


def column_key(layers: int, epochs: int) -> str:
    return f"{layers}x{epochs}"


def column_title(layers: int, epochs: int) -> str:
    return f"{layers} layers, {epochs} ep" + (" (64k it)" if epochs == PAPER_EPOCHS else "")


def cell_text(cell: dict | None, metric: str) -> str:
    """`8.75`, or `8.75 ± 0.31 (3)` when the cell is a mean over several runs."""
    if cell is None:
        return ""

    def num(v: float) -> str:
        return f"{v:.2f}" if metric == "test_error" or abs(v) < 100 else f"{v:.0f}"

    text = num(cell["mean"])
    if cell["count"] > 1:
        text += f" ± {num(cell['std'] or 0.0)} ({cell['count']})"
    return text


def as_dict(table: Comparison) -> dict:
    return {
        "metrics": METRICS,
        "columns": [{"key": column_key(l, e), "layers": l, "epochs": e, "title": column_title(l, e)}
                    for l, e in table.columns],
        "rows": [{"kind": r.kind, "dataset": r.dataset, "metric": r.metric, "label": r.label, "shortcut": r.shortcut,
                  "augment": r.augment, "source": r.source,
                  "cells": {column_key(l, e): c for (l, e), c in r.cells.items()}} for r in table.rows],
        "runs_counted": table.runs_counted,
    }


def as_long_csv(table: Comparison) -> str:
    """One line per cell: what a script or a spreadsheet wants."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(LONG_COLUMNS)
    for r in table.rows:
        for (layers, epochs), c in sorted(r.cells.items()):
            w.writerow([r.kind, r.dataset, r.metric, r.label, r.shortcut or "", r.augment or "", layers, epochs,
                        repr(c["mean"]), "" if c["std"] is None else repr(c["std"]), c["count"], r.source or ""])
    return out.getvalue()


SHORT_LABELS = {"He et al. 2016, Table 6": "paper, Table 6", "Seed report 2024, Table 1": "seed report, Table 1"}


def short_label(row) -> str:
    if row.kind == "reference":
        return SHORT_LABELS.get(row.label, row.label)
    return f"{'plain' if row.shortcut == 'none' else 'ResNet ' + row.shortcut}, augment {row.augment}"


def wide(table: Comparison, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table as a person reads it: data set x metric x variant down, depth x epochs across.
    `compact`: short labels and two-line column titles, for a terminal."""
    if compact:
        header = ["data set", "metric", "row", *(f"{l} layers\n{e} ep" for l, e in table.columns)]
        metric_names = {"test_error": "error %", "train_seconds": "time s"}
    else:
        header = ["data set", "metric", "row", *(column_title(l, e) for l, e in table.columns)]
        metric_names = METRICS
    rows = [[DATASET_NAMES.get(r.dataset, r.dataset), metric_names[r.metric], short_label(r) if compact else r.label,
             *(cell_text(r.cells.get(c), r.metric) for c in table.columns)] for r in table.rows]
    return header, rows


def as_markdown(table: Comparison) -> str:
    header, rows = wide(table)

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    out = [line(header), "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|"]
    out += [line(r) for r in rows]
    out.append("")
    out.append("Cells: mean over completed runs (seeds) of the final test error (%) or training time (s); "
               "`± std (count)` when more than one run.")
    for source in dict.fromkeys(r.source for r in table.rows if r.source):
        out.append(f"- {source}")
    return "\n".join(out) + "\n"


def html_context(table: Comparison) -> dict:
    """The comparison table as the HTML template wants it."""
    columns = [{"layers": l, "epochs": e, "title": column_title(l, e)} for l, e in table.columns]
    spans = [(layers, len(list(group))) for layers, group in itertools.groupby(table.columns, key=lambda c: c[0])]
    rows = [{"kind": r.kind, "label": r.label, "source": r.source,
             "dataset_name": DATASET_NAMES.get(r.dataset, r.dataset), "metric_name": METRICS[r.metric],
             "texts": [cell_text(r.cells.get(c), r.metric) for c in table.columns]} for r in table.rows]
    return {"columns": columns, "layer_spans": spans, "rows": rows,
            "sources": list(dict.fromkeys(r.source for r in table.rows if r.source))}
