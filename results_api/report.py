"""`resnet-study report --out DIR`: the whole study as a static report, readable without the service.

    DIR/index.html        table, findings (the claims, tested), comparisons, figures, the published numbers,
                          every run's config
    DIR/README.md         the same in Markdown
    DIR/figures/*.png|svg the service's figures; DIR/confusion/<run_id>.png for the latest completed runs
    DIR/comparison.csv    the comparison table, one line per cell
    DIR/comparisons.csv   every comparison with its test (test error)
    DIR/runs.csv          every run: config columns, full config JSON, final metrics
"""

from __future__ import annotations

import csv
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader

from ..core import StudyError, store
from ..core.records import RUN_COLUMNS
from ..core.datasets import title as dataset_title
from . import figures, queries, stats, tables
from .models import CompareRow, ComparisonTable
from .reference import published_numbers

CONFIG_COLUMNS = ("run_id", "status", "dataset", "layers", "n", "shortcut", "augment", "epochs", "epochs_done",
                  "seed", "batch_size", "lr", "momentum", "weight_decay", "milestones", "warmup_epochs", "val_split",
                  "train_limit", "test_limit", "train_size", "val_size", "test_size", "params", "device_type", "device_name",
                  "precision")
RESULT_COLUMNS = ("test_error_pct", "train_error_pct", "train_seconds")
REPORT_FIGURES = tuple(name for name in figures.FIGURES if name != "confusion")  # confusion: one per run, below


def published_comparison(db: queries.Store) -> list[dict]:
    """Each published test error beside the measured cells of the same experiment (data set, depth, epoch budget,
    training set, shortcut: queries.matches_published), with a one-sample test; "not measured" otherwise."""
    measured = queries.cell_values(db)
    out = []
    for pub in (p for p in published_numbers(anchors=True) if p.metric == "test_error_pct"):
        matched = [(k, v) for k, v in measured.items() if queries.matches_published(pub, *k)]
        line = {"dataset": dataset_title(pub.dataset), "layers": pub.layers, "epochs": pub.epochs,
                "published": f"{pub.value:.2f}", "source": pub.source, "training set":
                "full" if pub.val_split == 0 else f"{pub.val_split} held out"}
        if not matched:
            out.append({**line, "measured": "not measured", "difference": "", "verdict": ""})
        for (variant, layers, epochs), values in matched:
            test = stats.against(pub.value, values)
            out.append({**line, "measured": f"{tables.cell_text(stats.summarize(values), 'test_error_pct')}, "
                                            f"{variant.label}",
                        "difference": f"{test.diff:+.2f}" + (f" [{test.ci_low:+.2f}, {test.ci_high:+.2f}]"
                                                             if test.ci_low is not None else ""),
                        "verdict": stats.verdict(test, test.p_value, None, len(values))})
    return out


PUBLISHED_COLUMNS = ("dataset", "layers", "epochs", "published", "source", "training set", "measured",
                     "difference", "verdict")
PUBLISHED_NOTE = ("A published number is set only beside measured runs of the same experiment: data set, depth, "
                  "epoch budget, training set (the paper: the 45k/5k split; the seed report and the other READMEs: "
                  "the full set) and shortcut A. Measured: mean ± 95 % half-width (n seeds), and the variant; "
                  "difference: measured − published [95 % CI], one-sample t-test per line, not adjusted.")


def _runs(db: queries.Store) -> list[dict]:
    rows = queries.all_runs(db)
    for r in rows:
        r["test_error_pct"] = None if r["test_error"] is None else round(100 * r["test_error"], 2)
        r["train_error_pct"] = None if r["train_error"] is None else round(100 * r["train_error"], 2)
        r["train_seconds"] = None if r["train_seconds"] is None else round(r["train_seconds"], 1)
    return rows


def write_report(results_dir: Path, out: Path, max_confusion: int = 24) -> Path:
    results_dir, out = store.results_location(results_dir), Path(out)
    if not store.has_snapshot(results_dir):
        raise StudyError(f"no results store at {results_dir} (no snapshot); run `resnet-study train "
                         f"--results-dir {results_dir}` first or pass --results-dir")
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        (out / "confusion").mkdir(exist_ok=True)
    except OSError as e:
        raise StudyError(f"cannot write the report to {out} ({e.strerror}); pass a writable --out") from None
    db = queries.Store(results_dir).pinned()  # the whole report from one generation
    table = queries.comparison(db)
    compared = queries.comparisons(db)
    findings = queries.findings(db)
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
    (out / "comparisons.csv").write_text(tables.compare_csv(compared))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RUN_COLUMNS)
        w.writerows([r[c] for c in RUN_COLUMNS] for r in runs)

    context = {
        "title": "resnet-study report", "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results_dir": str(results_dir), "runs": runs, "total_runs": len(runs), "completed": len(completed),
        "status_counts": queries.status_counts(db), "figures": figs, "confusions": confusions,
        "confusion_omitted": max(0, len(completed) - len(confusions)), "published": published_comparison(db),
        "published_columns": PUBLISHED_COLUMNS, "published_note": PUBLISHED_NOTE,
        "config_columns": CONFIG_COLUMNS, "result_columns": RESULT_COLUMNS, "findings": findings,
        "compare_header": tables.COMPARE_HEADER, "compare_rows": tables.compare_wide(compared),
        "compare_note": tables.COMPARE_NOTE, "provenance_columns": queries.PROVENANCE_COLUMNS,
    }
    context["provenance"], context["mixed"] = queries.provenance(db)
    (out / "README.md").write_text(_markdown(context, table, compared))
    env = Environment(loader=PackageLoader("resnet_study.results_api", "templates"), autoescape=True)
    (out / "index.html").write_text(env.get_template("report.html").render(table=tables.html_context(table), **context))
    return out


def _md_table(header, rows) -> str:
    return tables.markdown_table(header, [["" if v is None else v for v in r] for r in rows])


def _markdown(c: dict, table: ComparisonTable, compared: list[CompareRow]) -> str:
    status = ", ".join(f"{s['runs']} {s['status']}" for s in c["status_counts"])
    parts = [
        f"# {c['title']}",
        f"Generated {c['generated']} from `{c['results_dir']}` by `resnet-study report`: {c['total_runs']} runs "
        f"({status}).",
        "## Comparison table", tables.as_markdown(table),
        "## Findings: the claims, tested",
        "Each claim of the original study and of the paper (core/reference/claims.yaml), with its comparison rows "
        "(Welch's t-test, Holm-adjusted within the claim, 5 %): evidence at a stated error rate, not proof.",
        tables.findings_markdown(c["findings"]),
        "## Comparisons (test error, %)", tables.compare_markdown(compared),
        "## Figures",
        *(f"![{name}](figures/{name}.png)" for name in c["figures"]),
        "## Comparison with published numbers (test error, %)",
        c["published_note"],
        _md_table(c["published_columns"], [[p[k] for k in c["published_columns"]] for p in c["published"]]),
        "## Confusion matrices (test set)",
        *(f"![{rid}](confusion/{rid}.png)" for rid in c["confusions"]),
    ]
    if c["confusion_omitted"]:
        parts.append(f"{c['confusion_omitted']} older completed runs omitted (`--max-confusion`).")
    parts += [
        "## Provenance: what produced these runs",
        "Code (git commit, or the image's), a hash of the package's source, software, device and a fingerprint of "
        "the data files read, per run (columns of `runs`; the full list per run in runs.csv).",
        _md_table(c["provenance_columns"], [[p[k] for k in c["provenance_columns"]] for p in c["provenance"]]),
        ("Runs resumed on other code or data (each epoch row records its own): "
         + ", ".join(f"`{m['run_id']}` ({m['code_versions']} code, {m['data_versions']} data versions)"
                     for m in c["mixed"])) if c["mixed"] else "Every run was trained by one version of the code on "
                                                              "one version of the data.",
        "## Every run: config and results",
        "Full config JSON per run in [runs.csv](runs.csv).",
        _md_table(c["config_columns"] + c["result_columns"],
                  [[r[k] for k in c["config_columns"] + c["result_columns"]] for r in c["runs"]]),
    ]
    return "\n\n".join(parts) + "\n"
