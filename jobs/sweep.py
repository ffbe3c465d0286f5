"""Sweep specs: a YAML grid of experiments -> an ordered list of cells, each all seeds of one experiment.

    name: paper-cifar10            # optional; defaults to the file name; names the Kubernetes Job
    description: He et al. Table 6
    parallelism: 4                 # Kubernetes Job parallelism (pods, one cell each, at a time)
    fixed:  {dataset: cifar10, epochs: 164, milestones: [82, 123], val_split: 5000}
    grid:   {n: [3, 5, 7, 9], shortcut: [A, none]}
    extra:  [{n: 18, shortcut: A, warmup_epochs: 1}]
    seeds:  3                      # a count (seeds 0..k-1) or a list, e.g. [0, 1, 2]: the runs of every cell

Any `ExperimentConfig` field except `seed` may be a grid axis, a fixed field or an extra-cell field; `grid` may
also be a list of grids (each expanded on its own, in order). Unknown keys are rejected, naming the key.

A *cell* is one experiment with all its seeds (its runs); it is what is scheduled, trained (in one process, on one
device: core/cell.py), resumed and priced. Cell order (the index a Kubernetes Indexed Job hands each pod as
JOB_COMPLETION_INDEX) is stable and documented:

    index = position: grid cells first, in row-major order of the axes as written (the first axis varies
            slowest, the last fastest), one grid after another; then the `extra` cells in the order written

Seeds are not part of the index: adding seeds gives every cell more runs under the same index (running the
sweep again trains only the new runs), so nothing renumbers. Adding a grid value does renumber the cells after
it: to extend a running study, append an `extra` cell or a new grid at the end. Results live under run ids
(`ExperimentConfig.run_id`), never under indices.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core import EXIT_SIGTERM, EXIT_USER_ERROR, StudyError, store
from ..core.config import ExperimentConfig
from ..core.lease import read_holder
from ..core.records import RunRecord

SPEC_DIR = Path(__file__).resolve().parent  # the specs shipped with the package (jobs/*.yaml)
SPEC_FIELDS = tuple(f for f in ExperimentConfig.model_fields if f != "seed")  # what a spec may set
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
    runs: tuple[ExperimentConfig, ...]

    @property
    def config(self) -> ExperimentConfig:
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
    def runs(self) -> list[ExperimentConfig]:
        """Every run of every cell, cell by cell."""
        return [r for c in self.cells for r in c.runs]

    def cell(self, index: int) -> Cell:
        if not 0 <= index < len(self.cells):
            raise StudyError(f"cell index {index} is out of range: {self.path} has cells 0..{len(self.cells) - 1}")
        return self.cells[index]

    def varying(self) -> list[str]:
        """The fields (but the seed) that differ between cells, in `ExperimentConfig` order: the columns worth
        showing."""
        fields = [f for f in ExperimentConfig.model_fields if f != "seed"
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
                cfg = ExperimentConfig(**{**spec.fixed, **setting, "seed": seed})
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


# ---------------------------------------------------------------- Kubernetes manifest


class _Literal(str):
    """A string dumped as a YAML block scalar (`|`), so the spec in the ConfigMap reads like the file."""


def _literal(dumper: yaml.SafeDumper, data: _Literal):
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)

APP = "resnet-study"
DATA_CLAIM = "resnet-study-data"
RESULTS_CLAIM = "resnet-study-results"
IMAGE = "resnet-study:latest"
UID = 10001  # the image's non-root user (Dockerfile)
S3_SECRET = "resnet-study-s3"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL ...) as env variables
CACHE_DIR = "/cache"  # scratch (an emptyDir): a bucket's data set and snapshots, fetched once per pod


def labels(component: str, instance: str | None = None) -> dict[str, str]:
    """The recommended labels (app.kubernetes.io/*)."""
    out = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}
    if instance:
        out["app.kubernetes.io/instance"] = instance
    out["app.kubernetes.io/part-of"] = APP
    out["app.kubernetes.io/managed-by"] = "resnet-study-sweep-render"
    return out


def _claim(name: str, size: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels("storage")},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}},
    }


KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_MIN_PARALLELISM = "kueue.x-k8s.io/job-min-parallelism"  # Kueue may admit the Job with fewer pods at a time
INDEX_MODE_ANNOTATION = "resnet-study/index"  # what an index of the Job is: "cell" (all seeds of one experiment)
INDEX_MODE_ENV = "RESNET_STUDY_INDEX_MODE"  # the same, for `sweep run` in the pod (a Job of 0.1 has neither)
INDEX_MODE = "cell"
# SIGTERM lets the cell finish its step and checkpoint every run mid-epoch (core/cell.py); this is how long
# Kubernetes waits for that before SIGKILL. Measured: `resnet-study bench stop` (docs/benchmarks.md).
GRACE_SECONDS = 60


def cell_memory(runs: int) -> str:
    """Memory request and limit of a pod that trains a cell of `runs` runs: one copy of the data set and one torch
    for the process, plus a model, its optimizer and its activations per run (docs/benchmarks.md, "Memory")."""
    return f"{2 + runs}Gi"


@dataclass
class RenderOptions:
    image: str = IMAGE
    parallelism: int | None = None  # pods at a time; None: the spec's
    gpus: int = 1
    cpu: str = "4"
    memory: str | None = None  # None: cell_memory(seeds)
    backoff_limit_per_index: int = 3
    data_size: str = "10Gi"
    results_size: str = "20Gi"
    queue: str | None = None
    min_parallelism: int | None = None
    priority_class: str | None = None
    results_dir: str | None = None  # s3://bucket/prefix: no results volume; None: the results PVC
    data_dir: str | None = None  # s3://bucket/prefix filled by `resnet-study data push`; None: the data PVC
    s3_secret: str = S3_SECRET

    @property
    def buckets(self) -> bool:
        return bool(self.results_dir or self.data_dir)


def render(sweep: Sweep, opts: RenderOptions | None = None) -> str:
    """The multi-document manifest: data + results PVCs, the spec as a ConfigMap, one Indexed Job with one index
    (one pod) per cell, each training all its seeds on one GPU.

    `queue`: a Kueue LocalQueue. The Job gets Kueue's queue-name label and is created suspended; Kueue admits it
    (unsuspends it) when the queue's ClusterQueue has quota for its pods' requests; `min_parallelism` lets it admit
    the Job with fewer pods at a time. `priority_class`: the pods' PriorityClass (Kueue orders and preempts
    workloads by it too)."""
    opts = opts or RenderOptions()
    job = f"{APP}-{sweep.name}"
    claims = ([] if opts.data_dir else [_claim(DATA_CLAIM, opts.data_size)]) + \
        ([] if opts.results_dir else [_claim(RESULTS_CLAIM, opts.results_size)])
    docs = [*claims,
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"{job}-spec", "labels": labels("sweep", sweep.name)},
             "data": {f"{sweep.name}.yaml": _Literal(sweep.text)}},
            _job(sweep, job, opts)]
    if opts.results_dir:
        docs += results_service(opts)  # k8s/results-api.yaml reads the results volume; this one the bucket
    runs = len(sweep.runs)
    where = ""
    if opts.buckets:
        where = (f"# Storage: results {opts.results_dir or 'PVC ' + RESULTS_CLAIM}, data {opts.data_dir or 'PVC ' + DATA_CLAIM}; "
                 f"S3 credentials from the Secret {opts.s3_secret} (docs/cluster.md).\n")
    header = (f"# Generated by `resnet-study sweep render {sweep.path.name}`: do not edit; re-render instead.\n"
              f"# {len(sweep)} cells x {len(sweep.spec.seed_list)} seeds = {runs} runs ({sweep.name}): one index per "
              f"cell; apply with `kubectl apply -f` this file (or `kubectl apply -k k8s/`).\n{where}")
    return header + "---\n".join(yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=120) for d in docs)


def failure_rules() -> list[dict]:
    """The Job's podFailurePolicy: a configuration error (exit 2) fails its index at once, a preemption (the
    DisruptionTarget condition, or the exit code of a clean stop on SIGTERM) costs no retry, and any other failure
    (75: retry later, or a crash) counts against backoffLimitPerIndex."""
    return [
        {"action": "FailIndex", "onExitCodes": {"containerName": "cell", "operator": "In",
                                                "values": [EXIT_USER_ERROR]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore", "onExitCodes": {"containerName": "cell", "operator": "In", "values": [EXIT_SIGTERM]}},
    ]


def _job(sweep: Sweep, job: str, opts: RenderOptions) -> dict:
    memory = opts.memory or cell_memory(len(sweep.spec.seed_list))
    annotations = {INDEX_MODE_ANNOTATION: INDEX_MODE, "resnet-study/cells": str(len(sweep)),
                   "resnet-study/runs": str(len(sweep.runs)), "resnet-study/spec": f"{sweep.name}.yaml"}
    if opts.min_parallelism:
        annotations[KUEUE_MIN_PARALLELISM] = str(opts.min_parallelism)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job, "annotations": annotations,
                     "labels": labels("sweep", sweep.name) | ({KUEUE_QUEUE_LABEL: opts.queue} if opts.queue else {})},
        "spec": {
            **({"suspend": True} if opts.queue else {}),  # Kueue unsuspends it on admission
            "completionMode": "Indexed",
            "completions": len(sweep),
            "parallelism": min(opts.parallelism or sweep.spec.parallelism, len(sweep)),
            # Per index: a failed cell is retried (resuming every run from its checkpoint) without failing others.
            "backoffLimitPerIndex": opts.backoff_limit_per_index,
            "podFailurePolicy": {"rules": failure_rules()},
            # A replacement pod starts only once the old one has failed, never while it still terminates: one
            # trainer per cell (the runs' leases, core/lease.py, guard the rest).
            "podReplacementPolicy": "Failed",
            "template": {"metadata": {"labels": labels("sweep", sweep.name),
                                      "annotations": {INDEX_MODE_ANNOTATION: INDEX_MODE}},
                         "spec": _pod_spec(sweep, job, opts, memory)},
        },
    }


def _pod_spec(sweep: Sweep, job: str, opts: RenderOptions, memory: str) -> dict:
    limits: dict[str, Any] = {"memory": memory}
    if opts.gpus:
        limits["nvidia.com/gpu"] = opts.gpus
    container = {
        "name": "cell",
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["resnet-study", "sweep", "run", f"/spec/{sweep.name}.yaml", "--progress", "json"],
        "env": [{"name": "RESNET_STUDY_DATA", "value": opts.data_dir or "/data"},
                {"name": "RESNET_STUDY_RESULTS", "value": opts.results_dir or "/results"},
                # the CPU request in whole CPUs (rounded up): the run's default threads (core.runtime)
                {"name": "RESNET_STUDY_CPU_REQUEST", "valueFrom": {"resourceFieldRef": {
                    "containerName": "cell", "resource": "requests.cpu", "divisor": "1"}}},
                {"name": INDEX_MODE_ENV, "value": INDEX_MODE},
                *_cache_env(opts)],
        **_s3_credentials(opts),
        "resources": {"requests": {"cpu": opts.cpu, "memory": memory}, "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [*([] if opts.data_dir else [{"name": "data", "mountPath": "/data"}]),
                         *([] if opts.results_dir else [{"name": "results", "mountPath": "/results"}]),
                         *([{"name": "cache", "mountPath": CACHE_DIR}] if opts.buckets else []),
                         {"name": "spec", "mountPath": "/spec", "readOnly": True}],
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID},
        "containers": [container],
        "volumes": [
            *([] if opts.data_dir else [{"name": "data", "persistentVolumeClaim": {"claimName": DATA_CLAIM}}]),
            *([] if opts.results_dir else [{"name": "results", "persistentVolumeClaim": {"claimName": RESULTS_CLAIM}}]),
            *([{"name": "cache", "emptyDir": {"sizeLimit": opts.data_size}}] if opts.buckets else []),
            {"name": "spec", "configMap": {"name": f"{job}-spec"}},
        ],
    }
    if opts.priority_class:
        pod["priorityClassName"] = opts.priority_class
    return pod


def _cache_env(opts: RenderOptions) -> list[dict]:
    return [{"name": "RESNET_STUDY_CACHE", "value": CACHE_DIR}] if opts.buckets else []


def _s3_credentials(opts: RenderOptions) -> dict:
    """The bucket's credentials (and endpoint, region) as the standard AWS variables, from one Secret."""
    return {"envFrom": [{"secretRef": {"name": opts.s3_secret}}]} if opts.buckets else {}


SERVICE = f"{APP}-results-api"
SERVICE_PORT = 8000
API_TOKEN_SECRET = "resnet-study-api-token"


def results_service(opts: RenderOptions) -> list[dict]:
    """The read-only results service over a bucket: the Deployment and Service of k8s/results-api.yaml with the
    results volume replaced by the bucket (its credentials from the S3 Secret) and a scratch folder for the
    snapshot it downloads (tests/test_k8s.py holds the two to the same shape)."""
    probe = {"httpGet": {"path": "/healthz", "port": "http"}}
    container = {
        "name": "results-api", "image": opts.image, "imagePullPolicy": "IfNotPresent",
        "command": ["resnet-study", "serve", "--host", "0.0.0.0", "--port", str(SERVICE_PORT)],
        "env": [{"name": "RESNET_STUDY_RESULTS", "value": opts.results_dir},
                {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
                {"name": "RESNET_STUDY_API_TOKEN_FILE", "value": "/var/run/secrets/resnet-study-api/token"},
                *_cache_env(opts)],
        **_s3_credentials(opts),
        "ports": [{"name": "http", "containerPort": SERVICE_PORT}],
        "readinessProbe": {**probe, "periodSeconds": 10},
        "livenessProbe": {**probe, "initialDelaySeconds": 20, "periodSeconds": 20, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "cache", "mountPath": CACHE_DIR},
                         {"name": "api-token", "mountPath": "/var/run/secrets/resnet-study-api", "readOnly": True}],
    }
    selector = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "results-api"}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": SERVICE, "labels": labels("results-api")},
         "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": labels("results-api")},
                               "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID},
                                        "containers": [container],
                                        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                                                    {"name": "cache", "emptyDir": {"sizeLimit": opts.results_size}},
                                                    {"name": "api-token", "secret": {
                                                        "secretName": API_TOKEN_SECRET, "optional": True,
                                                        "items": [{"key": "token", "path": "token"}]}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "labels": labels("results-api")},
         "spec": {"selector": selector, "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}]}},
    ]


# ---------------------------------------------------------------- how many cells at a time

RUNS_PER_GPU = 8  # one ResNet-20 run leaves an H200 mostly idle; 8 fill it best (docs/benchmarks.md, GPU)


def default_parallel(device: str, runs_per_cell: int) -> int:
    """`sweep local`'s default cells at a time: on CUDA, RUNS_PER_GPU runs per visible GPU (a cell of K runs counts
    K); on a CPU 1 (a cell already uses every core)."""
    if device == "cpu":
        return 1
    import torch  # only here: listing, rendering and status never need it

    if not torch.cuda.is_available():
        return 1
    return max(1, RUNS_PER_GPU // max(1, runs_per_cell)) * torch.cuda.device_count()


# ---------------------------------------------------------------- state, from the store


STATES = ("completed", "running", "interrupted", "failed", "missing")
CELL_STATES = ("completed", "running", "partial", "interrupted", "failed", "missing")


def run_state(results_dir: Path, cfg: ExperimentConfig) -> tuple[str, RunRecord | None]:
    """(state, the run's `runs` record or None). States: see STATES.

    - completed / failed / interrupted: as the run's shard says (interrupted: stopped on a signal, resumable);
    - running: the shard says running and a live process holds the run's lease (core.lease): same host and its
      pid alive, or a fresh heartbeat; without one it is interrupted (killed, preempted, node lost);
    - missing: never started (or nothing stored yet)."""
    shard = store.read_shard(results_dir, cfg.run_id)
    if shard is None:
        return ("interrupted" if store.checkpoint_exists(results_dir, cfg.run_id) else "missing"), None
    row = shard.run
    if row.status == "running":
        holder = read_holder(store.run_storage(results_dir, cfg.run_id))
        return ("running" if holder is not None and holder.alive() else "interrupted"), row
    return row.status, row


def cell_state(run_states: list[str]) -> str:
    """A cell's state from its runs': completed (all), running (any), failed (any), missing (none started),
    partial (some completed, the rest never started: seeds added), else interrupted (resumable)."""
    kinds = set(run_states)
    if kinds == {"completed"}:
        return "completed"
    for state in ("running", "failed"):
        if state in kinds:
            return state
    if kinds == {"missing"}:
        return "missing"
    return "partial" if kinds == {"completed", "missing"} else "interrupted"


def states(sweep: Sweep, results_dir: Path) -> list[tuple[Cell, str, list[tuple[ExperimentConfig, str, RunRecord | None]]]]:
    """(cell, its state, [(run, its state, its record)]) for every cell."""
    out = []
    for cell in sweep.cells:
        runs = [(cfg, *run_state(results_dir, cfg)) for cfg in cell.runs]
        out.append((cell, cell_state([r[1] for r in runs]), runs))
    return out
