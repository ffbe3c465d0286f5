"""The study's figures, drawn with matplotlib's Agg backend (no display, no pyplot global state).

    error-curves       train error dashed, test error solid, vs epoch; one line per depth, one panel per data set
                       (the paper's Fig. 6 style)
    accuracy           test accuracy vs epoch, one line per depth
    depth-vs-accuracy  final test accuracy vs depth, with the paper's and the seed report's numbers beside
    time-vs-accuracy   final test accuracy vs training time, one point per run
    confusion          one run's test-set confusion matrix, with class names and counts
    plain-vs-resnet    plain nets next to ResNets of the same depths (the paper's Fig. 6 left vs middle)

`render(name, fmt, db, params)` returns the image bytes; the service caches them per (figure, params, data version).
"""

from __future__ import annotations

import io
import threading

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from results_api import queries  # noqa: E402
from results_api.reference import reference_rows  # noqa: E402

FIGURES = ("error-curves", "accuracy", "depth-vs-accuracy", "time-vs-accuracy", "confusion", "plain-vs-resnet")
FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
DATASET_TITLES = {"cifar10": "CIFAR-10", "fashion-mnist": "Fashion-MNIST"}
# Matplotlib's text layout and font cache are not thread-safe; figures are cached, so serialising costs little.
_RENDER_LOCK = threading.Lock()
REFERENCE_COLOURS = {20: "tab:orange", 50: "tab:green", 100: "tab:red", 182: "black"}


class FigureUnavailable(Exception):
    """The figure cannot be drawn from this store (no such run, no plain runs): the service answers 404."""


def _new(panels: int = 1, rows: int = 1, width: float = 6.0, height: float = 4.2) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * panels, height * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, panels, squeeze=False)
    return fig, [ax for line in axes for ax in line]


def _empty(fig_title: str, message: str) -> Figure:
    fig, (ax,) = _new()
    ax.set_title(fig_title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _colours(keys) -> dict:
    cmap = matplotlib.colormaps["viridis"]
    keys = sorted(set(keys))
    return {k: cmap(0.85 * i / max(1, len(keys) - 1)) for i, k in enumerate(keys)}


def _style_legend(ax, curves_shown: bool) -> None:
    if curves_shown:
        ax.plot([], [], color="black", linestyle="-", label="test error")
        ax.plot([], [], color="black", linestyle="--", label="train error")
    ax.legend(fontsize=8, loc="upper right")


def _curve_panels(db, dataset, epochs, plain_filter, value, ylabel, title, train_dashed) -> Figure:
    points = [p for p in queries.curves(db, dataset, epochs) if plain_filter(p["plain"])]
    if not points:
        return _empty(title, "no runs with epochs yet")
    datasets = sorted({p["dataset"] for p in points})
    colours = _colours(p["layers"] for p in points)
    fig, axes = _new(len(datasets))
    for ax, ds in zip(axes, datasets):
        mine = [p for p in points if p["dataset"] == ds]
        for layers in sorted({p["layers"] for p in mine}):
            line = [p for p in mine if p["layers"] == layers]
            x = [p["epoch"] for p in line]
            runs = max(p["runs"] for p in line)
            label = f"{layers} layers ({runs} run{'s' if runs > 1 else ''}, {line[0]['budget']} ep)"
            ax.plot(x, [value(p) for p in line], color=colours[layers], linewidth=2, label=label)
            if train_dashed:
                ax.plot(x, [p["train_error"] for p in line], color=colours[layers], linestyle="--", linewidth=1)
        ax.set_title(f"{DATASET_TITLES.get(ds, ds)}: {title}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _style_legend(ax, train_dashed)
    return fig


def error_curves(db, dataset=None, epochs=None, **_) -> Figure:
    return _curve_panels(db, dataset, epochs, lambda plain: not plain, lambda p: p["test_error"], "error (%)",
                         "ResNet train (dashed) and test (solid) error", train_dashed=True)


def accuracy(db, dataset=None, epochs=None, **_) -> Figure:
    return _curve_panels(db, dataset, epochs, lambda plain: not plain, lambda p: 100 - p["test_error"],
                         "test accuracy (%)", "ResNet test accuracy by epoch", train_dashed=False)


def depth_vs_accuracy(db, dataset=None, **_) -> Figure:
    title = "Final test accuracy vs depth"
    groups = queries.final_by_depth(db, dataset)
    refs = [r for r in reference_rows() if r.metric == "test_error" and (dataset is None or r.dataset == dataset)]
    datasets = sorted({g["dataset"] for g in groups} | {r.dataset for r in refs})
    fig, axes = _new(len(datasets))
    markers = {"He et al. 2016, Table 6": "*", "Seed report 2024, Table 1": "D"}
    for ax, ds in zip(axes, datasets):
        mine = [g for g in groups if g["dataset"] == ds]
        series = sorted({(g["plain"], g["epochs"]) for g in mine})
        colours = _colours(series)
        for plain, ep in series:
            line = [g for g in mine if (g["plain"], g["epochs"]) == (plain, ep)]
            ax.errorbar([g["layers"] for g in line], [g["accuracy"] for g in line],
                        yerr=[g["accuracy_std"] or 0 for g in line], color=colours[(plain, ep)], marker="o",
                        capsize=3, linestyle=":" if plain else "-",
                        label=f"measured, {'plain' if plain else 'ResNet'}, {ep} ep")
        depths = {g["layers"] for g in mine}
        for ref in (r for r in refs if r.dataset == ds):
            for ep in sorted({e for _, e in ref.cells}):
                cells = sorted((l, 100 - v) for (l, e), v in ref.cells.items() if e == ep)
                depths |= {c[0] for c in cells}
                ax.plot([c[0] for c in cells], [c[1] for c in cells], marker=markers.get(ref.label, "s"),
                        color=REFERENCE_COLOURS.get(ep, "black"), linestyle="none", markersize=8, alpha=0.8,
                        label=f"{ref.label}, {ep} ep")
        ax.set_xscale("log")
        ax.set_xticks(sorted(depths), [str(d) for d in sorted(depths)])
        ax.minorticks_off()
        ax.set_title(f"{DATASET_TITLES.get(ds, ds)}: {title.lower()}")
        ax.set_xlabel("layers (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    if not datasets:
        return _empty(title, "no completed runs yet")
    return fig


def time_vs_accuracy(db, dataset=None, **_) -> Figure:
    title = "Final test accuracy vs training time"
    runs = queries.time_and_accuracy(db, dataset)
    if not runs:
        return _empty(title, "no completed runs yet")
    fig, (ax,) = _new(width=7.0)
    colours = _colours(r["layers"] for r in runs)
    markers = {"cifar10": "o", "fashion-mnist": "^"}
    for ds in sorted({r["dataset"] for r in runs}):
        for layers in sorted({r["layers"] for r in runs if r["dataset"] == ds}):
            pts = [r for r in runs if r["dataset"] == ds and r["layers"] == layers]
            ax.scatter([r["train_seconds"] for r in pts], [r["accuracy"] for r in pts], color=colours[layers],
                       marker=markers.get(ds, "s"), s=28, alpha=0.75, edgecolors="none",
                       label=f"{DATASET_TITLES.get(ds, ds)}, {layers} layers")
    seconds = [r["train_seconds"] for r in runs if r["train_seconds"]]
    log = bool(seconds) and max(seconds) > 20 * min(seconds)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_title(title)
    ax.set_xlabel("training time (s, log scale)" if log else "training time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    return fig


def confusion(db, run_id=None, **_) -> Figure:
    if run_id is None:
        latest = queries.latest_with_confusion(db)
        if not latest:
            return _empty("Confusion matrix", "no completed run yet")
        run_id = latest[0]["run_id"]
    cells = queries.run_confusion(db, run_id, "test")
    if not cells:
        raise FigureUnavailable(f"run {run_id!r} has no test confusion matrix (unknown run, or not completed yet)")
    classes = {c["true_label"]: c["true_class"] for c in cells}
    size = max(classes) + 1
    matrix = [[0] * size for _ in range(size)]
    for c in cells:
        matrix[c["true_label"]][c["predicted_label"]] = c["count"]
    total = sum(map(sum, matrix))
    right = sum(matrix[i][i] for i in range(size))
    fig, (ax,) = _new(width=7.4, height=6.4)
    im = ax.imshow(matrix, cmap="Blues")
    peak = max(max(r) for r in matrix) or 1
    for t in range(size):
        for p in range(size):
            ax.text(p, t, str(matrix[t][p]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[t][p] > 0.6 * peak else "black")
    names = [classes.get(i, str(i)) for i in range(size)]
    ax.set_xticks(range(size), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(size), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{run_id}\ntest set: {total} images, error {100 * (1 - right / max(total, 1)):.2f} %", fontsize=9)
    fig.colorbar(im, ax=ax, label="images")
    return fig


def plain_vs_resnet(db, dataset=None, epochs=None, **_) -> Figure:
    points = queries.curves(db, dataset, epochs)
    if not any(p["plain"] for p in points):
        raise FigureUnavailable("no plain runs (train with --shortcut none) in this store" +
                                (f" for dataset {dataset}" if dataset else ""))
    datasets = sorted({p["dataset"] for p in points if p["plain"]})
    colours = _colours(p["layers"] for p in points)
    fig, axes = _new(2, len(datasets), width=5.5)
    top = max(max(p["train_error"], p["test_error"]) for p in points)
    for row, ds in enumerate(datasets):
        for col, plain in enumerate((True, False)):
            ax = axes[2 * row + col]
            mine = [p for p in points if p["dataset"] == ds and p["plain"] == plain]
            for layers in sorted({p["layers"] for p in mine}):
                line = [p for p in mine if p["layers"] == layers]
                x = [p["epoch"] for p in line]
                ax.plot(x, [p["test_error"] for p in line], color=colours[layers], linewidth=2,
                        label=f"{'plain' if plain else 'ResNet'}-{layers}")
                ax.plot(x, [p["train_error"] for p in line], color=colours[layers], linestyle="--", linewidth=1)
            ax.set_title(f"{DATASET_TITLES.get(ds, ds)}: {'plain nets' if plain else 'ResNets'}")
            ax.set_xlabel("epoch")
            ax.set_ylabel("error (%)")
            ax.set_ylim(0, top * 1.05)
            ax.grid(alpha=0.3)
            _style_legend(ax, True)
    return fig


DRAW = {"error-curves": error_curves, "accuracy": accuracy, "depth-vs-accuracy": depth_vs_accuracy,
        "time-vs-accuracy": time_vs_accuracy, "confusion": confusion, "plain-vs-resnet": plain_vs_resnet}


def render(name: str, fmt: str, db, **params) -> bytes:
    """Draw figure `name` (one of FIGURES) as `fmt` (png | svg). Raises FigureUnavailable."""
    with _RENDER_LOCK:
        fig = DRAW[name](db, **params)
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        metadata = {"Software": None} if fmt == "png" else {"Date": None}
        fig.savefig(buf, format=fmt, metadata=metadata)
        return buf.getvalue()
