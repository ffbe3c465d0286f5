"""The study's figures, drawn with matplotlib's Agg backend (no display, no pyplot global state).

    error-curves       train error dashed, test error solid, vs epoch; one line per depth (and variant), a band from
                       the lowest to the highest seed; one panel per data set (the paper's Fig. 6 style)
    accuracy           test accuracy vs epoch, the same lines and bands
    depth-vs-accuracy  final test accuracy vs depth per epoch budget, with 95 % confidence intervals of the mean,
                       beside the paper's and the seed report's numbers at the depths measured (those at other
                       depths are named in the legend)
    time-to-accuracy   test error vs cumulative training seconds: how fast each depth and budget gets where
    time-vs-accuracy   final test accuracy vs training time, one point per run
    confusion          one run's test-set confusion matrix, with class names and counts
    plain-vs-resnet    plain nets next to ResNets of the same depths (the paper's Fig. 6 left vs middle)

Lines are cells (one experiment over its seeds: results_api/queries.py); a panel with several variants names them
in the legend. Axes are set from the data with a margin, and legends sit outside the axes: nothing is clipped or
covered. `render(name, fmt, db, params)` returns the image bytes (`draw` then `save`); the service caches them per data
version.
"""

from __future__ import annotations

import io
import math
import textwrap
import threading

import matplotlib
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

matplotlib.use("Agg")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..core.datasets import title as dataset_title  # noqa: E402
from ..core.vocab import DATASETS  # noqa: E402
from . import queries  # noqa: E402
from .reference import reference_rows  # noqa: E402

FIGURES = {  # name -> what it shows (the dashboard's alt text)
    "error-curves": "train (dashed) and test (solid) error vs epoch, mean over seeds with a min-max band",
    "accuracy": "test accuracy vs epoch, mean over seeds with a min-max band",
    "depth-vs-accuracy": "final test accuracy vs depth with 95 % confidence intervals, beside published numbers",
    "time-to-accuracy": "test error vs cumulative training time, one line per depth and budget",
    "time-vs-accuracy": "final test accuracy vs training time, one point per run",
    "confusion": "confusion matrix of the latest completed run",
    "plain-vs-resnet": "plain nets vs ResNets of the same depths",
}
FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
# Matplotlib's text layout and font cache are not thread-safe; figures are cached, so serialising costs little.
_RENDER_LOCK = threading.Lock()
REFERENCE_COLOURS = {20: "tab:orange", 50: "tab:green", 100: "tab:red", 182: "black"}
LINESTYLES = ("-", "--", ":", "-.")


class FigureUnavailable(Exception):
    """The figure cannot be drawn from this store (no such run, no plain runs): the service answers 404."""


def _new(panels: int = 1, rows: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Figure, list]:
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


def _fit(ax, values, floor: float | None = None, ceiling: float | None = None) -> None:
    """y limits from the data with a 6 % margin (clamped to [floor, ceiling]): no line is ever clipped."""
    values = [v for v in values if v is not None]
    if not values:
        return
    low, high = min(values), max(values)
    pad = max(0.06 * (high - low), 0.5)
    low, high = low - pad, high + pad
    ax.set_ylim(max(low, floor) if floor is not None else low, min(high, ceiling) if ceiling is not None else high)


def _legend(ax, handles_extra=()) -> None:
    """The legend right of the axes, its entries wrapped at 44 characters: a long variant label ("lr 0.05, train
    3000 of 60k images, ...") would otherwise narrow the axes until its title runs off the figure."""
    for label, style in handles_extra:
        ax.plot([], [], color="black", linestyle=style, label=label)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [textwrap.fill(l, 44, break_on_hyphens=False) for l in labels], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)


def _lines(points: list[dict]) -> dict[tuple, list[dict]]:
    """(variant, layers, budget) -> that cell's points in epoch order."""
    out: dict[tuple, list[dict]] = {}
    for p in points:
        out.setdefault((p["variant"], p["layers"], p["epochs"]), []).append(p)
    return out


class _Counts:
    """A line's legend count: the cell's completed runs, as the table counts them (queries.cell_values), and the
    runs still without a final result whose epochs the line also draws (a run in progress, or one that stopped)."""

    def __init__(self, db, dataset):
        self.completed = {key: len(values) for key, values in queries.cell_values(db, dataset).items()}

    def __call__(self, variant, layers: int, budget: int, line: list[dict]) -> str:
        completed = self.completed.get((variant, layers, budget), 0)
        unfinished = max(p["runs"] for p in line) - completed  # every run of the line has its epoch 1
        parts = [f"{completed} run{'s' if completed > 1 else ''}"] if completed else []
        return ", ".join(parts + ([f"{unfinished} unfinished"] if unfinished > 0 else []))


def _label(variant, layers: int, budget: int, runs: str, several_variants: bool) -> str:
    text = f"{queries.net_name(variant, layers)}, {budget} ep ({runs})"
    return f"{text}, {variant.label}" if several_variants else text


def _epoch_axis(ax) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs: the default locator ticks 2.5, 7.5, ...


def _seconds_axis(ax, seconds) -> bool:
    """A log axis when the times span more than 20x (returns whether it is one), labelled at 1-2-5 steps over two
    decades or less, 1-3 up to four, decades beyond. Minor ticks stay unlabelled: matplotlib labels them on a short
    log span, where "3x10^1" and "4x10^1" run into each other."""
    if not seconds or max(seconds) <= 20 * min(seconds):
        return False
    decades = math.log10(max(seconds) / min(seconds))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if decades <= 2 else (1, 3) if decades <= 4 else (1,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    return True


def _panels(points: list[dict]):
    """The figure of per-epoch curve points, a panel per data set: (figure, [(axes, data set, its lines, its
    variants in table order)])."""
    datasets = sorted({p["dataset"] for p in points})
    fig, axes = _new(len(datasets), width=7.4)
    panels = []
    for ax, ds in zip(axes, datasets):
        lines = _lines([p for p in points if p["dataset"] == ds])
        panels.append((ax, ds, lines, sorted({k[0] for k in lines}, key=queries.variant_order)))
    return fig, panels


def _curve_panels(db, dataset, epochs, keep, title: str, accuracy: bool) -> Figure:
    points = [p for p in queries.curves(db, dataset, epochs) if keep(p["variant"])]
    if not points:
        return _empty(title, "no runs with epochs yet")
    runs = _Counts(db, dataset)
    fig, panels = _panels(points)
    for ax, ds, lines, variants in panels:
        colours = _colours(k[1] for k in lines)
        shown = []
        for (variant, layers, budget), line in sorted(lines.items(), key=lambda kv: (variants.index(kv[0][0]),
                                                                                     kv[0][1])):
            style = LINESTYLES[variants.index(variant) % len(LINESTYLES)]
            x = [p["epoch"] for p in line]
            label = _label(variant, layers, budget, runs(variant, layers, budget, line), len(variants) > 1)
            mean = [p["test_error_pct"] for p in line]
            low, high = [p["test_error_pct_min"] for p in line], [p["test_error_pct_max"] for p in line]
            if accuracy:
                mean, low, high = [100 - v for v in mean], [100 - v for v in high], [100 - v for v in low]
            ax.plot(x, mean, color=colours[layers], linewidth=2, linestyle=style, label=label)
            ax.fill_between(x, low, high, color=colours[layers], alpha=0.18, linewidth=0)
            shown += low + high
            if not accuracy:
                ax.plot(x, [p["train_error_pct"] for p in line], color=colours[layers], linestyle="--", linewidth=1)
                shown += [p["train_error_pct"] for p in line]
        ax.set_title(f"{dataset_title(ds)}: {title}", fontsize=10)
        _epoch_axis(ax)
        ax.set_ylabel("test accuracy (%)" if accuracy else "error (%)")
        _fit(ax, shown, 0, 100)
        ax.grid(alpha=0.3)
        _legend(ax, () if accuracy else (("test error", "-"), ("train error", "--")))
    return fig


def error_curves(db, dataset=None, epochs=None, **_) -> Figure:
    return _curve_panels(db, dataset, epochs, lambda v: v.get("shortcut") != "none",
                         "ResNet train (dashed) and test (solid) error", accuracy=False)


def accuracy(db, dataset=None, epochs=None, **_) -> Figure:
    return _curve_panels(db, dataset, epochs, lambda v: v.get("shortcut") != "none", "ResNet test accuracy by epoch",
                         accuracy=True)


def _depth_span(measured, refs) -> tuple[int, int] | None:
    """The depths the figure spans: those measured, in every panel (the published numbers alone when nothing is
    measured). The paper's ResNet-1202 beside a study of 20..44 layers would leave the measured points a corner."""
    depths = {l for r in measured for l, _ in r.by_column()} or {l for r in refs for l, _ in r.cells}
    return (min(depths), max(depths)) if depths else None


def depth_vs_accuracy(db, dataset=None, **_) -> Figure:
    title = "Final test accuracy vs depth"
    table = queries.comparison(db, dataset, "test_error_pct", all_columns=True)
    measured = [r for r in table.rows if r.kind == "measured"]
    refs = [r for r in reference_rows() if r.metric == "test_error_pct" and (dataset is None or r.dataset == dataset)]
    span = _depth_span(measured, refs)
    inside = (lambda layers: span[0] <= layers <= span[1]) if span else None
    # A panel per data set with something in the span: a data set with published numbers only at other depths has none.
    datasets = sorted({r.dataset for r in measured} | {r.dataset for r in refs if any(inside(l) for l, _ in r.cells)})
    if not datasets:
        return _empty(title, "no completed runs yet")
    fig, axes = _new(len(datasets), width=7.4)
    markers = {"He et al. 2016, Table 6": "*", "Seed report 2024, Table 1": "D"}
    for ax, ds in zip(axes, datasets):
        series = [(r, ep) for r in measured if r.dataset == ds for ep in sorted({e for _, e in r.by_column()})]
        colours = _colours((r.label, ep) for r, ep in series)
        depths, shown = set(), []
        for r, ep in series:
            cells = sorted((l, c) for (l, e), c in r.by_column().items() if e == ep)
            depths |= {l for l, _ in cells}
            y = [100 - c.mean for _, c in cells]
            err = [c.half_width or 0 for _, c in cells]
            shown += [v - e for v, e in zip(y, err)] + [v + e for v, e in zip(y, err)]
            ax.errorbar([l for l, _ in cells], y, yerr=err, color=colours[(r.label, ep)], marker="o", capsize=3,
                        linestyle=":" if r.shortcut == "none" else "-",
                        label=f"{r.label}, {ep} ep (n = {'/'.join(str(c.count) for _, c in cells)})")
        for ref in (r for r in refs if r.dataset == ds):
            for ep in sorted({e for _, e in ref.cells}):
                cells = sorted((l, 100 - v) for (l, e), v in ref.cells.items() if e == ep and inside(l))
                if cells:
                    depths |= {c[0] for c in cells}
                    shown += [c[1] for c in cells]
                    ax.plot([c[0] for c in cells], [c[1] for c in cells], marker=markers.get(ref.label, "s"),
                            color=REFERENCE_COLOURS.get(ep, "black"), linestyle="none", markersize=8, alpha=0.8,
                            label=f"{ref.label}, {ep} ep")
            outside = sorted({l for l, _ in ref.cells if not inside(l)})
            if outside:  # named, so that the reader knows they exist (the report's table has their numbers)
                ax.plot([], [], linestyle="none", label=f"not drawn, outside {span[0]}-{span[1]} layers: "
                                                        f"{ref.label} at {', '.join(map(str, outside))}")
        ax.set_xscale("log")
        low, high = math.log10(span[0]), math.log10(span[1])
        pad = max(0.05 * (high - low), math.log10(1.08))  # room for the end markers
        ax.set_xlim(10 ** (low - pad), 10 ** (high + pad))  # the same span in every panel
        ax.set_xticks(sorted(depths), [str(d) for d in sorted(depths)])
        ax.minorticks_off()
        _fit(ax, shown, 0, 100)
        ax.set_title(f"{dataset_title(ds)}: {title.lower()} (bars: 95 % CI of the mean)", fontsize=10)
        ax.set_xlabel("layers (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        _legend(ax)
    return fig


def time_to_accuracy(db, dataset=None, epochs=None, **_) -> Figure:
    title = "Test error vs training time"
    points = queries.curves(db, dataset, epochs, every_budget=True)
    if not points:
        return _empty(title, "no runs with epochs yet")
    runs = _Counts(db, dataset)
    fig, panels = _panels(points)
    for ax, ds, lines, variants in panels:
        colours = _colours((k[1], k[2]) for k in lines)
        shown, seconds = [], []
        for (variant, layers, budget), line in sorted(lines.items(), key=lambda kv: (variants.index(kv[0][0]),
                                                                                     kv[0][1:])):
            x, y = [p["seconds"] for p in line], [p["test_error_pct"] for p in line]
            ax.plot(x, y, color=colours[(layers, budget)], marker=".", linewidth=1.5,
                    linestyle=LINESTYLES[variants.index(variant) % len(LINESTYLES)],
                    label=_label(variant, layers, budget, runs(variant, layers, budget, line), len(variants) > 1))
            shown += y
            seconds += x
        _seconds_axis(ax, seconds)
        _fit(ax, shown, 0, 100)
        ax.set_title(f"{dataset_title(ds)}: {title.lower()} (mean over seeds)", fontsize=10)
        ax.set_xlabel("cumulative training time (s)")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3, which="both")
        _legend(ax)
    return fig


def time_vs_accuracy(db, dataset=None, **_) -> Figure:
    title = "Final test accuracy vs training time"
    runs = queries.time_and_accuracy(db, dataset)
    if not runs:
        return _empty(title, "no completed runs yet")
    fig, (ax,) = _new(width=7.4)
    colours = _colours(r["layers"] for r in runs)
    markers = dict(zip(DATASETS, "o^v<>"))  # a marker per data set of the vocabulary
    for ds in sorted({r["dataset"] for r in runs}):
        for layers in sorted({r["layers"] for r in runs if r["dataset"] == ds}):
            pts = [r for r in runs if r["dataset"] == ds and r["layers"] == layers]
            ax.scatter([r["train_seconds"] for r in pts], [r["accuracy_pct"] for r in pts], color=colours[layers],
                       marker=markers.get(ds, "s"), s=28, alpha=0.75, edgecolors="none",
                       label=f"{dataset_title(ds)}, {layers} layers")
    log = _seconds_axis(ax, [r["train_seconds"] for r in runs if r["train_seconds"]])
    _fit(ax, [r["accuracy_pct"] for r in runs], 0, 100)
    ax.set_title(title)
    ax.set_xlabel("training time (s, log scale)" if log else "training time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    _legend(ax)
    return fig


NUMBERED_CLASSES = 20  # up to this many classes a cell shows its count; beyond, a heatmap and the worst pairs
CONFUSED_PAIRS = 15


def most_confused(matrix: list[list[int]], names: list[str], k: int = CONFUSED_PAIRS) -> list[tuple[str, str, int]]:
    """The k largest off-diagonal cells: (true class, predicted class, images), largest first."""
    cells = [(matrix[t][p], t, p) for t in range(len(matrix)) for p in range(len(matrix)) if t != p and matrix[t][p]]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(names[t], names[p], n) for n, t, p in cells[:k]]


def _confusion_heatmap(matrix: list[list[int]], names: list[str], title: str) -> Figure:
    """Many classes (CIFAR-100): each row as a fraction of its class (log colour scale, no numbers), beside it the
    most confused pairs and the classes with the highest error."""
    size = len(matrix)
    rows = [[v / max(sum(r), 1) for v in r] for r in matrix]
    fig, axes = _new(panels=2, width=7.4, height=7.6)
    ax, side = axes

    im = ax.imshow([[max(v, 1e-4) for v in r] for r in rows], cmap="Blues", norm=LogNorm(1e-3, 1), aspect="equal")
    step = max(1, size // 25)
    ticks = list(range(0, size, step))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=6)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=6)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="fraction of the true class", shrink=0.8)
    errors = sorted(((1 - matrix[i][i] / max(sum(matrix[i]), 1), names[i]) for i in range(size)), reverse=True)
    lines = ["most confused (true -> predicted: images)"]
    lines += [f"  {t} -> {p}: {n}" for t, p, n in most_confused(matrix, names)]
    lines += ["", "highest error per class"] + [f"  {name}: {100 * e:.1f} %" for e, name in errors[:10]]
    side.axis("off")
    side.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8, transform=side.transAxes)
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
    names = [classes.get(i, str(i)) for i in range(size)]
    title = f"{run_id}\ntest set: {total} images, error {100 * (1 - right / max(total, 1)):.2f} %"
    if size > NUMBERED_CLASSES:
        return _confusion_heatmap(matrix, names, title)
    fig, (ax,) = _new(width=7.4, height=6.4)
    im = ax.imshow(matrix, cmap="Blues")
    peak = max(max(r) for r in matrix) or 1
    for t in range(size):
        for p in range(size):
            ax.text(p, t, str(matrix[t][p]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[t][p] > 0.6 * peak else "black")
    ax.set_xticks(range(size), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(size), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="images")
    return fig


def plain_vs_resnet(db, dataset=None, epochs=None, **_) -> Figure:
    points = queries.curves(db, dataset, epochs)
    if not any(p["variant"].get("shortcut") == "none" for p in points):
        raise FigureUnavailable("no plain runs (train with --shortcut none) in this store" +
                                (f" for dataset {dataset}" if dataset else ""))
    datasets = sorted({p["dataset"] for p in points if p["variant"].get("shortcut") == "none"})
    colours = _colours(p["layers"] for p in points)
    runs = _Counts(db, dataset)
    fig, axes = _new(2, len(datasets), width=6.2)
    shown = [v for p in points for v in (p["train_error_pct"], p["test_error_pct"])]
    for row, ds in enumerate(datasets):
        for col, plain in enumerate((True, False)):
            ax = axes[2 * row + col]
            lines = _lines([p for p in points
                            if p["dataset"] == ds and (p["variant"].get("shortcut") == "none") == plain])
            several = len({k[0] for k in lines}) > 1
            for (variant, layers, budget), line in sorted(lines.items(), key=lambda kv: (kv[0][1], kv[0][0].label)):
                x = [p["epoch"] for p in line]
                ax.plot(x, [p["test_error_pct"] for p in line], color=colours[layers], linewidth=2,
                        label=_label(variant, layers, budget, runs(variant, layers, budget, line), several))
                ax.plot(x, [p["train_error_pct"] for p in line], color=colours[layers], linestyle="--", linewidth=1)
            ax.set_title(f"{dataset_title(ds)}: {'plain nets' if plain else 'ResNets'}", fontsize=10)
            _epoch_axis(ax)
            ax.set_ylabel("error (%)")
            _fit(ax, shown, 0, 100)  # the same scale in both panels
            ax.grid(alpha=0.3)
            _legend(ax, (("test error", "-"), ("train error", "--")))
    return fig


DRAW = {"error-curves": error_curves, "accuracy": accuracy, "depth-vs-accuracy": depth_vs_accuracy,
        "time-to-accuracy": time_to_accuracy, "time-vs-accuracy": time_vs_accuracy, "confusion": confusion,
        "plain-vs-resnet": plain_vs_resnet}


def draw(name: str, db, **params) -> Figure:
    """Figure `name` (a key of FIGURES) on an Agg canvas, not yet laid out. Raises FigureUnavailable."""
    fig = DRAW[name](db, **params)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, fmt: str) -> bytes:
    """`fig` as `fmt` (png | svg) bytes, without the version or date stamps that would change them between runs."""
    buf = io.BytesIO()
    metadata = {"Software": None} if fmt == "png" else {"Date": None}
    fig.savefig(buf, format=fmt, metadata=metadata)
    return buf.getvalue()


def render(name: str, fmt: str, db, **params) -> bytes:
    """Draw figure `name` (a key of FIGURES) as `fmt` (png | svg). Raises FigureUnavailable."""
    with _RENDER_LOCK:
        return save(draw(name, db, **params), fmt)
