"""The comparison table and the comparisons in every shape a reader wants: JSON-ready dicts, CSV, wide text /
Markdown / HTML. A measured cell reads `mean ± half-width (n)`: the mean over n seeds and the half-width of its 95 %
confidence interval; one run reads `mean (1)`, with no interval."""

from __future__ import annotations

import csv
import io
import itertools
from ..core.datasets import title as dataset_title
from .models import COMPARE_COLUMNS, METRICS, CompareRow, ComparisonTable
from .queries import Finding
from .stats import Summary

CELL_FIELDS = ("count", "mean", "std", "ci_low", "ci_high", "min", "max")
LONG_COLUMNS = ("kind", "dataset", "metric", "label", "shortcut", "augment", "layers", "epochs", *CELL_FIELDS,
                "source")
CELL_NOTE = ("Cells: mean ± half-width of the 95 % confidence interval of the mean (Student t) over n completed "
             "runs (seeds) of one experiment, written `mean ± h (n)`; one run has no interval. Rows are experiments: "
             "the paper recipe, then each variant by what differs from it. Reference rows are published numbers.")


def number(v: float, metric: str) -> str:
    return f"{v:.2f}" if metric == "test_error_pct" or abs(v) < 100 else f"{v:.0f}"


def cell_text(cell: Summary | None, metric: str, kind: str = "measured") -> str:
    """`8.75` (published), `24.80 (1)`, or `8.75 ± 0.31 (3)`."""
    if cell is None:
        return ""
    text = number(cell.mean, metric)
    if kind == "reference":
        return text
    if cell.half_width is not None:
        text += f" ± {number(cell.half_width, metric)}"
    return f"{text} ({cell.count})"


def _csv(header, rows) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue()


def _plain(v) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def as_long_csv(table: ComparisonTable) -> str:
    """One line per cell: what a script or a spreadsheet wants."""
    lines = []
    for r in table.rows:
        for (layers, epochs), c in sorted(r.by_column().items()):
            lines.append([r.kind, r.dataset, r.metric, r.label, r.shortcut or "", r.augment or "", layers, epochs,
                          *(_plain(getattr(c, k)) for k in CELL_FIELDS), r.source or ""])
    return _csv(LONG_COLUMNS, lines)


SHORT_LABELS = {"He et al. 2016, Table 6": "paper, Table 6", "Seed report 2024, Table 1": "seed report, Table 1"}


def wide(table: ComparisonTable, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table as a person reads it: data set x metric x variant down, depth x epochs across.
    `compact`: short labels and two-line column titles, for a terminal."""
    if compact:
        header = ["data set", "metric", "row", *(f"{c.layers} layers\n{c.epochs} ep" for c in table.columns)]
        metric_names = {"test_error_pct": "error %", "train_seconds": "time s"}
    else:
        header = ["data set", "metric", "row", *(c.title for c in table.columns)]
        metric_names = METRICS
    rows = [[dataset_title(r.dataset), metric_names[r.metric],
             SHORT_LABELS.get(r.label, r.label) if compact else r.label,
             *(cell_text(r.cells.get(c.key), r.metric, r.kind) for c in table.columns)] for r in table.rows]
    return header, rows


def markdown_table(header, rows, numeric_from: int = 0) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    rule = "|" + "|".join("---:" if numeric_from and i >= numeric_from else "---" for i in range(len(header))) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def as_markdown(table: ComparisonTable) -> str:
    header, rows = wide(table)
    out = [markdown_table(header, rows, numeric_from=3), "", CELL_NOTE, ""]
    for source in dict.fromkeys(r.source for r in table.rows if r.source):
        out.append(f"- {source}")
    return "\n".join(out) + "\n"


def html_context(table: ComparisonTable) -> dict:
    """The comparison table as the HTML template wants it."""
    spans = [(layers, len(list(group))) for layers, group in itertools.groupby(table.columns, key=lambda c: c.layers)]
    rows = [{"kind": r.kind, "label": r.label, "source": r.source,
             "dataset_name": dataset_title(r.dataset), "metric_name": METRICS[r.metric],
             "texts": [cell_text(r.cells.get(c.key), r.metric, r.kind) for c in table.columns]} for r in table.rows]
    return {"columns": table.columns, "layer_spans": spans, "rows": rows, "note": CELL_NOTE,
            "sources": list(dict.fromkeys(r.source for r in table.rows if r.source))}


# ---------------------------------------------------------------- comparisons and findings


def compare_dicts(rows: list[CompareRow]) -> list[dict]:
    return [r.model_dump() for r in rows]


def compare_csv(rows: list[CompareRow]) -> str:
    return _csv(COMPARE_COLUMNS, [[_plain(getattr(r, c)) for c in COMPARE_COLUMNS] for r in rows])


def _p(p: float | None) -> str:
    return "" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _diff(r: CompareRow) -> str:
    text = f"{r.diff:+.2f}"
    if r.diff_ci_low is not None:
        text += f" [{r.diff_ci_low:+.2f}, {r.diff_ci_high:+.2f}]"
    return text


COMPARE_HEADER = ["data set", "kind", "a", "b", "n a/b", "mean a", "mean b", "b − a [95 % CI]", "p", "p (Holm)",
                  "verdict", "seeds for 80 % power"]


def compare_wide(rows: list[CompareRow]) -> list[list[str]]:
    return [[dataset_title(r.dataset), r.kind, r.a, r.b,
             f"{'-' if r.n_a is None else r.n_a}/{r.n_b}", number(r.mean_a, r.metric), number(r.mean_b, r.metric),
             _diff(r), _p(r.p_value), _p(r.p_holm), r.verdict,
             "" if r.seeds_for_80pct_power is None else str(r.seeds_for_80pct_power)] for r in rows]


COMPARE_NOTE = ("b − a in the metric's unit with its 95 % interval (Welch's t-test between two cells; a one-sample "
                "t-test against a published number, n a = -). p (Holm): adjusted over all rows above. A verdict is "
                "evidence at a 5 % family-wise error rate, not proof; \"no detectable difference\" means these runs "
                "cannot tell the two apart, and a cell with one run is never compared. Seeds for 80 % power: runs per "
                "side that would detect the observed difference 80 % of the time.")


def compare_markdown(rows: list[CompareRow]) -> str:
    if not rows:
        return "No comparisons yet: a comparison needs two measured cells that differ in one thing.\n"
    return markdown_table(COMPARE_HEADER, compare_wide(rows)) + "\n\n" + COMPARE_NOTE + "\n"


def finding_dict(f: Finding) -> dict:
    return {"id": f.claim.id, "claim": f.claim.claim, "source": f.claim.source, "dataset": f.claim.dataset,
            "verdict": f.verdict, "summary": f.summary, "spec": f.claim.spec, "missing": f.missing,
            "comparisons": compare_dicts(f.rows)}


def findings_markdown(findings: list[Finding]) -> str:
    parts = []
    for f in findings:
        parts.append(f"- **{f.claim.claim}** ({f.claim.source}): **{f.summary}**")
        if f.rows:
            parts.append("")
            parts.append("  " + markdown_table(COMPARE_HEADER, compare_wide(f.rows)).replace("\n", "\n  "))
            parts.append("")
    return "\n".join(parts) + "\n"
