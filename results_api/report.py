"""`resnet-study report --out DIR`: the whole study as a static report, readable without the service.

    DIR/index.html        table, figures, comparison with the published numbers, every run's config
    DIR/README.md         the same in Markdown
    DIR/figures/*.png|svg the service's figures; DIR/confusion/<run_id>.png for the latest completed runs
    DIR/comparison.csv    the comparison table, one line per cell
    DIR/runs.csv          every run: config columns, full config JSON, final metrics
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader

from core import StudyError, store
from results_api import figures, queries, tables
from results_api.reference import anchors, reference_rows

CONFIG_COLUMNS = ("run_id", "status", "dataset", "layers", "n", "shortcut", "augment", "epochs", "epochs_done",
                  "seed", "batch_size", "lr", "momentum", "weight_decay", "milestones", "warmup_epochs", "val_split",
                  "train_limit", "test_limit", "train_size", "val_size", "test_size", "params", "device",
                  "precision")
RESULT_COLUMNS = ("test_error_pct", "train_error_pct", "train_seconds")
REPORT_FIGURES = ("error-curves", "accuracy", "depth-vs-accuracy", "time-vs-accuracy", "plain-vs-resnet")


def _measured_for(groups: list[dict], dataset: str, layers: int, epochs: int) -> dict | None:
    """The residual-net group to set beside a published number: same data set and depth, the same epoch budget when
    measured, else the longest one; the group with most runs when several (shortcut, augment) variants qualify."""
    mine = [g for g in groups if g["dataset"] == dataset and g["layers"] == layers and g["shortcut"] != "none"]
    if not mine:
        return None
    exact = [g for g in mine if g["epochs"] == epochs]
    pool = exact or [g for g in mine if g["epochs"] == max(x["epochs"] for x in mine)]
    return max(pool, key=lambda g: (g["shortcut"] == "A", g["count"]))


def paper_comparison(db: queries.Store) -> list[dict]:
    groups = queries.measured_groups(db, None)
    published = [(r.dataset, l, e, v, r.label) for r in reference_rows() if r.metric == "test_error"
                 for (l, e), v in sorted(r.cells.items())]
    published += [(a["dataset"], a["layers"], a["epochs"], a["test_error_percent"], a["source"]) for a in anchors()]
    out = []
    for dataset, layers, epochs, value, source in published:
        g = _measured_for(groups, dataset, layers, epochs)
        measured = None
        if g:
            measured = (f"{tables.cell_text({'mean': g['test_error_mean'], 'std': g['test_error_std'], 'count': g['count']}, 'test_error')}"
                        f" (option {g['shortcut']}, augment {g['augment']}, {g['epochs']} ep)")
        out.append({"dataset": tables.DATASET_NAMES.get(dataset, dataset), "layers": layers, "epochs": epochs,
                    "published": f"{value:.2f}", "source": source, "measured": measured or "not measured",
                    "difference": f"{g['test_error_mean'] - value:+.2f}" if g else ""})
    return out


def _runs(db: queries.Store) -> list[dict]:
    rows = db.rows(f"SELECT {', '.join(store.RUN_COLUMNS)} FROM runs ORDER BY dataset, layers, shortcut, epochs, seed")
    for r in rows:
        r["test_error_pct"] = None if r["test_error"] is None else round(100 * r["test_error"], 2)
        r["train_error_pct"] = None if r["train_error"] is None else round(100 * r["train_error"], 2)
        r["train_seconds"] = None if r["train_seconds"] is None else round(r["train_seconds"], 1)
    return rows


def _md_table(header, rows) -> str:
    def cell(v):
        return "" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(results_dir: Path, out: Path, max_confusion: int = 24) -> Path:
    results_dir, out = Path(results_dir), Path(out)
    if not store.db_path(results_dir).exists():
        raise StudyError(f"no results store at {results_dir} (no {store.DB_NAME}); run `resnet-study train "
                         f"--results-dir {results_dir}` first or pass --results-dir")
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "confusion").mkdir(exist_ok=True)
    except OSError as e:
        raise StudyError(f"cannot write the report to {out} ({e.strerror}); pass a writable --out") from None
    db = queries.Store(results_dir)
    table = queries.comparison(db)
    runs = _runs(db)

    figs = []
    for name in REPORT_FIGURES:
        if name == "plain-vs-resnet" and not queries.has_plain_runs(db):
            continue
        for fmt in figures.FORMATS:
            (out / "figures" / f"{name}.{fmt}").write_bytes(figures.render(name, fmt, db))
        figs.append(name)
    completed = sorted((r for r in runs if r["status"] == "completed"), key=lambda r: str(r["finished_at"]),
                       reverse=True)
    confusions = []
    for r in completed[:max_confusion]:
        try:
            (out / "confusion" / f"{r['run_id']}.png").write_bytes(figures.render("confusion", "png", db,
                                                                                  run_id=r["run_id"]))
            confusions.append(r["run_id"])
        except figures.FigureUnavailable:
            continue

    (out / "comparison.csv").write_text(tables.as_long_csv(table))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(store.RUN_COLUMNS)
        w.writerows([r[c] for c in store.RUN_COLUMNS] for r in runs)

    context = {
        "title": "resnet-study report", "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results_dir": str(results_dir), "runs": runs, "total_runs": len(runs), "completed": len(completed),
        "status_counts": queries.status_counts(db), "figures": figs, "confusions": confusions,
        "confusion_omitted": max(0, len(completed) - len(confusions)), "paper": paper_comparison(db),
        "config_columns": CONFIG_COLUMNS, "result_columns": RESULT_COLUMNS,
    }
    (out / "README.md").write_text(_markdown(context, table))
    env = Environment(loader=PackageLoader("results_api", "templates"), autoescape=True)
    (out / "index.html").write_text(env.get_template("report.html").render(table=tables.html_context(table), **context))
    return out


def _markdown(c: dict, table: queries.Comparison) -> str:
    status = ", ".join(f"{s['runs']} {s['status']}" for s in c["status_counts"])
    parts = [
        f"# {c['title']}",
        f"Generated {c['generated']} from `{c['results_dir']}` by `resnet-study report`: {c['total_runs']} runs "
        f"({status}).",
        "## Comparison table", tables.as_markdown(table),
        "## Figures",
        *(f"![{name}](figures/{name}.png)" for name in c["figures"]),
        "## Comparison with published numbers (test error, %)",
        "Measured: mean ± sample std (runs) of completed residual-net runs at the same depth, at the same epoch "
        "budget when measured, else the longest measured budget (so a difference can be a difference in budget).",
        _md_table(("data set", "layers", "epochs", "published", "source", "measured", "measured − published"),
                  [(p["dataset"], p["layers"], p["epochs"], p["published"], p["source"], p["measured"],
                    p["difference"]) for p in c["paper"]]),
        "## Confusion matrices (test set)",
        *(f"![{rid}](confusion/{rid}.png)" for rid in c["confusions"]),
    ]
    if c["confusion_omitted"]:
        parts.append(f"{c['confusion_omitted']} older completed runs omitted (`--max-confusion`).")
    parts += [
        "## Every run: config and results",
        "Full config JSON per run in [runs.csv](runs.csv).",
        _md_table(c["config_columns"] + c["result_columns"],
                  [[r[k] for k in c["config_columns"] + c["result_columns"]] for r in c["runs"]]),
    ]
    return "\n\n".join(parts) + "\n"
