"""Every figure drawn once per store, then read back from matplotlib's own layout: tick labels that do not overlap,
whole epochs on epoch axes, legends that count a cell's completed runs as the table does, a depth axis fitted to the
depths measured.

Two committed stores: the 0.1.0 fixture (tests/fixtures/results-0.1.0: 2-3 epochs, a plain net, an interrupted run)
and the GPU study's shards (docs/results/gpu-2026-11-26/runs: 20 epochs, ResNet-44 seed 2 stopped at epoch 17)."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

import pytest
from matplotlib.figure import Figure

from resnet_study.core import store
from resnet_study.results_api import figures, queries
from tests.conftest import FIXTURE_STORE
from tests.helpers import ROOT, assert_png

GPU_STUDY = ROOT / "docs" / "results" / "gpu-2026-11-26"


@dataclass
class Drawn:
    fig: Figure
    png: bytes


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, queries.Store]:
    gpu = tmp_path_factory.mktemp("gpu-2026-11-26")
    shutil.copytree(GPU_STUDY / "runs", gpu / "runs")
    assert store.sync(store.results_location(gpu))
    old = shutil.copytree(FIXTURE_STORE, tmp_path_factory.mktemp("old") / "results")  # read as served: unsynced
    return {"gpu-2026-11-26": queries.Store(store.results_location(gpu)), "0.1.0": queries.Store(store.results_location(old))}


@pytest.fixture(scope="module")
def drawn(stores) -> dict[str, dict[str, Drawn]]:
    """store -> figure name -> the figure as saved to png (laid out by that save), for every figure the store has."""
    out: dict[str, dict[str, Drawn]] = {}
    for label, db in stores.items():
        out[label] = {}
        for name in figures.FIGURES:
            try:
                fig = figures.draw(name, db)
            except figures.FigureUnavailable:  # plain-vs-resnet on a store without plain runs
                continue
            out[label][name] = Drawn(fig, figures.save(fig, "png"))
    return out


def _drawn_ticks(axis) -> list:
    """The ticks the axis draws (major and minor): matplotlib keeps spare Tick objects and ticks outside the view,
    so keep those whose location falls inside the view interval, as Axis.draw does."""
    to_screen = axis.get_transform().transform  # a log axis compares log positions
    low, high = sorted(to_screen(list(axis.get_view_interval())))
    slack = 1e-9 * (high - low)
    out = []
    for locs, ticks in ((axis.get_majorticklocs(), axis.get_major_ticks), (axis.get_minorticklocs(),
                                                                           axis.get_minor_ticks)):
        for tick, loc in zip(ticks(len(locs)), locs):
            if low - slack <= to_screen(loc) <= high + slack:
                out.append((loc, tick))
    return out


def _tick_labels(fig: Figure) -> list[tuple[str, str, object]]:
    """(axes title + axis, text, Text) of every visible, non-empty tick label of every axes (colour bars included)."""
    out = []
    for ax in fig.axes:
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for _, tick in _drawn_ticks(axis):
                for label in (tick.label1, tick.label2):
                    if label.get_visible() and label.get_text().strip():
                        out.append((f"{ax.get_title()!r} {which}", label.get_text(), label))
    return out


def _texts(fig: Figure) -> list[tuple[str, str, object]]:
    """Every visible label: tick labels, titles, axis labels, legend entries, texts in the axes."""
    out = _tick_labels(fig)
    for ax in fig.axes:
        where = repr(ax.get_title())
        legend = ax.get_legend().get_texts() if ax.get_legend() else []
        for t in (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts, *legend):
            if t.get_visible() and t.get_text().strip():
                out.append((where, t.get_text(), t))
    return out


def _overlap(a, b) -> bool:
    """Boxes sharing more than half a pixel each way (Bbox.overlaps also counts boxes that only touch)."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5


def _legend_texts(fig: Figure) -> list[str]:
    """Legend entries with their line wrapping undone."""
    return [" ".join(t.get_text().split()) for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_every_figure_is_drawn(drawn):
    for name in figures.FIGURES:
        assert any(name in by_name for by_name in drawn.values()), f"{name} drawn from no committed store"
    for by_name in drawn.values():
        for d in by_name.values():
            assert_png(d.png)


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_no_two_tick_labels_overlap(drawn, name):
    for label, by_name in drawn.items():
        if name not in by_name:
            continue
        fig = by_name[name].fig
        renderer = fig.canvas.get_renderer()
        labels = [(where, text, t.get_window_extent(renderer)) for where, text, t in _tick_labels(fig)]
        assert labels, f"{name} on {label}: no tick labels found"
        clashes = [f"{wa} {ta!r} / {wb} {tb!r}" for i, (wa, ta, a) in enumerate(labels)
                   for wb, tb, b in labels[i + 1:] if _overlap(a, b)]
        assert not clashes, f"{name} on the {label} store: tick labels overlap: {'; '.join(clashes)}"


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_every_label_is_inside_the_figure_and_clear_of_the_others(drawn, name):
    for label, by_name in drawn.items():
        if name not in by_name:
            continue
        fig = by_name[name].fig
        renderer, page = fig.canvas.get_renderer(), fig.bbox
        texts = [(where, text, t.get_window_extent(renderer)) for where, text, t in _texts(fig)]
        cut = [f"{where} {text!r}" for where, text, b in texts
               if b.x0 < page.x0 - 0.5 or b.y0 < page.y0 - 0.5 or b.x1 > page.x1 + 0.5 or b.y1 > page.y1 + 0.5]
        assert not cut, f"{name} on the {label} store: cut off at the figure's edge: {'; '.join(cut)}"
        clashes = [f"{wa} {ta!r} / {wb} {tb!r}" for i, (wa, ta, a) in enumerate(texts)
                   for wb, tb, b in texts[i + 1:] if _overlap(a, b)]
        assert not clashes, f"{name} on the {label} store: labels overlap: {'; '.join(clashes)}"


def test_epoch_axes_tick_whole_epochs(drawn):
    seen = set()
    for label, by_name in drawn.items():
        for name, d in by_name.items():
            for ax in d.fig.axes:
                if ax.get_xlabel() != "epoch":
                    continue
                seen.add(name)
                ticks = _drawn_ticks(ax.xaxis)
                assert len(ticks) >= 2, f"{name} on {label}: {len(ticks)} epoch ticks"
                for loc, tick in ticks:
                    assert loc == int(loc) and tick.label1.get_text() == str(int(loc)), (
                        f"{name} on {label}: epoch tick {tick.label1.get_text()!r} at {loc}")
    assert seen == {"error-curves", "accuracy", "plain-vs-resnet"}


LEGEND_COUNT = re.compile(r"^(ResNet|plain)-(\d+), (\d+) ep \((.*)\)")


def test_legends_count_the_completed_runs_the_table_counts(drawn, stores):
    table = queries.comparison(stores["gpu-2026-11-26"], "fashion-mnist", "test_error_pct")
    (row,) = [r for r in table.rows if r.kind == "measured"]
    completed = {layers_epochs: cell.count for layers_epochs, cell in row.by_column().items()}
    assert completed == {(20, 20): 3, (32, 20): 3, (44, 20): 2}  # the committed shards: ResNet-44 seed 2 unfinished
    for name in ("error-curves", "accuracy", "time-to-accuracy"):
        found = {}
        for text in _legend_texts(drawn["gpu-2026-11-26"][name].fig):
            if m := LEGEND_COUNT.match(text):
                found[(int(m[2]), int(m[3]))] = m[4]
        assert found == {(20, 20): "3 runs", (32, 20): "3 runs", (44, 20): "2 runs, 1 unfinished"}, name
    depth_legend = _legend_texts(drawn["gpu-2026-11-26"]["depth-vs-accuracy"].fig)
    assert "paper recipe, 20 ep (n = 3/3/2)" in depth_legend


def test_a_cell_with_no_completed_run_says_so(drawn):
    """The 0.1.0 store's 3-epoch ResNet-8 was killed after epoch 1: its line counts no completed run."""
    legend = _legend_texts(drawn["0.1.0"]["error-curves"].fig)
    assert any(t.startswith("ResNet-8, 3 ep (1 unfinished), ") for t in legend), legend


def _depth_ticks(fig: Figure) -> dict[str, list[int]]:
    return {ax.get_title().split(":")[0]: [int(loc) for loc, _ in _drawn_ticks(ax.xaxis)] for ax in fig.axes}


def test_the_depth_axis_spans_the_measured_depths(drawn):
    """gpu-2026-11-26 measured ResNet-20/32/44 on Fashion-MNIST: the CIFAR-10 panel's published points past 44 layers
    (He et al.'s 56, 110, 1202) are named in the legend, not drawn on an axis that would crowd 20..44 into a corner."""
    fig = drawn["gpu-2026-11-26"]["depth-vs-accuracy"].fig
    assert _depth_ticks(fig) == {"CIFAR-10": [20, 32, 44], "Fashion-MNIST": [20, 32, 44]}
    for ax in fig.axes:
        low, high = ax.get_xlim()
        assert 16 < low < 20 and 44 < high < 55, (ax.get_title(), low, high)
    assert any("56, 110, 1202" in t for t in _legend_texts(fig)), _legend_texts(fig)
    old = drawn["0.1.0"]["depth-vs-accuracy"].fig
    assert _depth_ticks(old)["Fashion-MNIST"] == [8, 14]
