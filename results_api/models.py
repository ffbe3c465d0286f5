"""The study's answers as typed rows, each defined once: queries.py builds them (SQL and statistics), tables.py
renders them (CSV, Markdown, HTML, a terminal table), the routes return them as their response models, and
client.py parses a service's JSON back into them (`resnet-study results table --url`), so a remote table prints
exactly as a local one."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

from .reference import PAPER_EPOCHS
from .stats import VERDICTS, Summary

METRICS = {"test_error_pct": "test error (%)", "train_seconds": "training time (s)"}
COMPARISON_KINDS = ("depth", "epochs", "plain vs ResNet", "option A vs B", "published")
Metric = Literal[tuple(METRICS)]  # type: ignore[valid-type]


def column_key(layers: int, epochs: int) -> str:
    return f"{layers}x{epochs}"


def column_of(key: str) -> tuple[int, int]:
    layers, epochs = key.split("x")
    return int(layers), int(epochs)


def column_title(layers: int, epochs: int) -> str:
    return f"{layers} layers, {epochs} ep" + (" (64k it)" if epochs == PAPER_EPOCHS else "")


class Column(BaseModel):
    """A column of the comparison table: one depth at one epoch budget."""

    key: str
    layers: int
    epochs: int
    title: str

    @classmethod
    def of(cls, layers: int, epochs: int) -> "Column":
        return cls(key=column_key(layers, epochs), layers=layers, epochs=epochs, title=column_title(layers, epochs))


class ComparisonRow(BaseModel):
    """A row of the comparison table: one variant's measured cells on one data set and metric (its `variant`: every
    field a cell fixes besides depth and budget), or a published row (`source`)."""

    kind: Literal["measured", "reference"]
    dataset: str
    metric: Metric
    label: str
    shortcut: Optional[str] = None
    augment: Optional[str] = None
    variant: Optional[dict[str, Any]] = None
    source: Optional[str] = None
    cells: dict[str, Summary] = Field(description="column key (as in `columns`) -> the cell: one experiment over its "
                                                  "seeds, or one published number")

    def by_column(self) -> dict[tuple[int, int], Summary]:
        """The cells keyed by (layers, epochs)."""
        return {column_of(k): c for k, c in self.cells.items()}


class ComparisonTable(BaseModel):
    metrics: dict[str, str]
    columns: list[Column]
    rows: list[ComparisonRow]
    runs_counted: int


class CompareRow(BaseModel):
    """One question the study asks, answered with a test: cell b against cell a (or against a published number)."""

    dataset: str
    metric: Metric
    kind: Literal[COMPARISON_KINDS]  # type: ignore[valid-type]
    a: str
    b: str
    n_a: Optional[int] = Field(None, description="None: a published number")
    n_b: int
    mean_a: float
    mean_b: float
    diff: float = Field(description="mean_b - mean_a, in the metric's unit")
    diff_ci_low: Optional[float] = None
    diff_ci_high: Optional[float] = None
    p_value: Optional[float] = None
    p_holm: Optional[float] = None
    verdict: Literal[VERDICTS]  # type: ignore[valid-type]
    seeds_for_80pct_power: Optional[int] = None


COMPARE_COLUMNS = tuple(CompareRow.model_fields)


class FindingOut(BaseModel):
    """A claim of the original study or of the paper, tested on the store."""

    id: str
    claim: str
    source: str
    dataset: str
    verdict: str
    summary: str
    spec: str
    missing: list[str]
    comparisons: list[CompareRow]
