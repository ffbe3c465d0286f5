"""Sweep specs: a YAML grid of experiments -> an ordered list of cells, each all seeds of one experiment.

    name: paper-cifar10            # optional; defaults to the file name; names the Kubernetes Job
    description: He et al. Table 6
    parallelism: 4                 # Kubernetes Job parallelism (pods, one cell each, at a time)
    fixed:  {dataset: cifar10, epochs: 164, milestones: [82, 123], val_split: 5000}
    grid:   {n: [3, 5, 7, 9], shortcut: [A, none]}
    extra:  [{n: 18, shortcut: A, warmup_epochs: 1}]
    seeds:  3                      # a count (seeds 0..k-1) or a list, e.g. [0, 1, 2]: the runs of every cell

Any `RunConfig` field except `seed` may be a grid axis, a fixed field or an extra-cell field; `grid` may
also be a list of grids (each expanded on its own, in order). Unknown keys are rejected, naming the key.

A *cell* is one experiment with all its seeds (its runs); it is what is scheduled, trained (by one task, on one
machine; in one process or a process per run: jobs/packing.py), resumed and priced. Cell order (the index a
Kubernetes Indexed Job hands each pod as JOB_COMPLETION_INDEX) is stable and documented:

    index = position: grid cells first, in row-major order of the axes as written (the first axis varies
            slowest, the last fastest), one grid after another; then the `extra` cells in the order written

Seeds are not part of the index: adding seeds gives every cell more runs under the same index (running the
sweep again trains only the new runs), so nothing renumbers. Adding a grid value does renumber the cells after
it: to extend a running study, append an `extra` cell or a new grid at the end. Results live under run ids
(`RunConfig.run_id`), never under indices.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core import StudyError, settings
from ..core.config import RunConfig

SPEC_DIR = Path(__file__).resolve().parent  # the specs shipped with the package (jobs/*.yaml)
SPEC_FIELDS = tuple(f for f in RunConfig.model_fields if f != "seed")  # what a spec may set
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"  # a DNS label short enough for Job + pod names


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, pattern=NAME_PATTERN, description="lower-case letters, digits and '-'")
    description: str = ""
    parallelism: int = Field(4, ge=1, le=1000)
    fixed: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = Field(default_factory=dict)
    extra: list[dict[str, Any]] = Field(default_factory=list)
    seeds: int | list[int] = 1

    @field_validator("fixed", "extra", "grid")
    @classmethod
    def _known_fields(cls, v):
        tables = v if isinstance(v, list) else [v]
        for table in tables:
            for key in table:
                if key == "seed":
                    raise ValueError("'seed' is set by the top-level `seeds` (a count or a list), not here")
                if key not in SPEC_FIELDS:
                    raise ValueError(f"{key!r} is not an experiment field; use one of: {', '.join(SPEC_FIELDS)}")
        return v

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, v):
        for table in v if isinstance(v, list) else [v]:
            for key, values in table.items():
                if not values:
                    raise ValueError(f"axis {key!r} has no values")
        return v

    @field_validator("seeds")
    @classmethod
    def _seed_list(cls, v):
        if isinstance(v, int):
            if v < 1:
                raise ValueError("a seed count must be >= 1")
        elif not v or len(set(v)) != len(v) or min(v) < 0:
            raise ValueError("seeds must be distinct integers >= 0")
        return v

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    @property
    def grids(self) -> list[dict[str, list[Any]]]:
        return [g for g in (self.grid if isinstance(self.grid, list) else [self.grid]) if g]  # {}: no grid cells


@dataclass(frozen=True)
class Cell:
    """All seeds of one experiment: its runs in the spec's seed order."""

    index: int
    runs: tuple[RunConfig, ...]

    @property
    def config(self) -> RunConfig:
        """The experiment (its first run): every field but the seed is the same for all runs."""
        return self.runs[0]

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]


class Sweep:
    """A loaded spec: its name, the file's text (shipped to Kubernetes as is) and its cells in index order."""

    def __init__(self, spec: SweepSpec, path: Path, text: str):
        self.spec = spec
        self.path = path
        self.text = text
        self.name = spec.name or path.stem
        self.cells = expand(spec, where=str(path))

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def runs(self) -> list[RunConfig]:
        """Every run of every cell, cell by cell."""
        return [r for c in self.cells for r in c.runs]

    def cell(self, index: int) -> Cell:
        if not 0 <= index < len(self.cells):
            raise StudyError(f"cell index {index} is out of range: {self.path} has cells 0..{len(self.cells) - 1}")
        return self.cells[index]

    def varying(self) -> list[str]:
        """The fields (but the seed) that differ between cells, in `RunConfig` order: the columns worth
        showing."""
        fields = [f for f in RunConfig.model_fields if f != "seed"
                  and len({json.dumps(getattr(c.config, f)) for c in self.cells}) > 1]
        return fields or ["n"]


def expand(spec: SweepSpec, where: str = "spec") -> list[Cell]:
    """All cells in index order (see the module docstring), each with a run per seed."""
    settings: list[tuple[str, dict[str, Any]]] = []
    for g, grid in enumerate(spec.grids):
        axes = list(grid)
        for values in itertools.product(*(grid[a] for a in axes)):
            settings.append((f"grid[{g}]" if len(spec.grids) > 1 else "grid", dict(zip(axes, values))))
    settings += [(f"extra[{i}]", extra) for i, extra in enumerate(spec.extra)]
    if not settings:
        raise StudyError(f"{where}: no cells; give `grid` axes or `extra` cells")

    cells: list[Cell] = []
    seen: dict[str, int] = {}
    for index, (origin, setting) in enumerate(settings):
        runs = []
        for seed in spec.seed_list:
            try:
                cfg = RunConfig(**{**spec.fixed, **setting, "seed": seed})
            except ValidationError as e:
                err = e.errors()[0]
                key = str(err["loc"][0]) if err["loc"] else "cell"
                if key in spec.fixed and key not in setting:
                    key = f"fixed.{key}"
                msg = err["msg"].removeprefix("Value error, ")
                raise StudyError(f"{where}: {origin} cell {setting}: {key}: {msg}") from None
            if cfg.run_id in seen:
                raise StudyError(f"{where}: cells {seen[cfg.run_id]} and {index} are the same experiment "
                                 f"({cfg.run_id}); remove the duplicate")
            seen[cfg.run_id] = index
            runs.append(cfg)
        cells.append(Cell(index, tuple(runs)))
    return cells


def resolve_path(spec: str | Path) -> Path:
    """A spec path as given, else one of the shipped specs by file name (`demo.yaml` or `demo`)."""
    path = Path(spec)
    if path.is_file():
        return path
    for candidate in (SPEC_DIR / path.name, SPEC_DIR / f"{path.name}.yaml"):
        if path.parent == Path(".") and candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.name for p in SPEC_DIR.glob("*.yaml")))
    raise StudyError(f"sweep spec {spec} not found; give a path to a YAML spec or one of the shipped: {shipped}")


def load(spec: str | Path) -> Sweep:
    path = resolve_path(spec)
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: a sweep spec is a mapping with keys grid, fixed, extra, seeds, ...")
    try:
        parsed = SweepSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(part) for part in err["loc"] if "[" not in str(part)) or "spec"  # no union type names
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg += f"; the keys are: {', '.join(SweepSpec.model_fields)}"
        raise StudyError(f"{path}: {key}: {msg}") from None
    return Sweep(parsed, path, text)


# ---------------------------------------------------------------- what every engine shares

IMAGE = "resnet-study:latest"  # the container image (Dockerfile)
INDEX_MODE_ENV = settings.INDEX_MODE.name  # what an engine's task index is, for `sweep cell` ("cell"; a Job of 0.1 has none)
INDEX_MODE = "cell"
# SIGTERM lets the cell finish its step and checkpoint every run mid-epoch (core/cell.py); this is how long an
# engine waits for that before SIGKILL. Measured: `resnet-study bench stop` (docs/benchmarks.md).
GRACE_SECONDS = 60


def cell_memory(runs: int, processes: int = 1) -> str:
    """Memory for a task that trains a cell of `runs` runs in `processes` processes (jobs/packing.py): one copy of
    the data set and one torch per process, plus a model, its optimizer and its activations per run
    (docs/benchmarks.md, "Memory")."""
    return f"{2 * processes + runs}Gi"

