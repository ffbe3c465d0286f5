"""The run record, typed once: what a run writes to its shard, what results.duckdb's tables hold (their columns
and DuckDB types are derived from these models) and what the results service returns.

    RunRecord        one row of `runs`: the run id, every RunConfig field (derived from it: milestones an
                     integer list, BIGINT[] in DuckDB), then what the run measured and where it ran
    EpochRecord      one row of `epochs` per finished epoch
    ConfusionRecord  one row of `confusion` per (split, true class, predicted class) of the finished model
    Shard            runs/<run_id>/run.json: the run's own rows, rewritten atomically after every epoch

Records are filled by keyword and reject unknown fields, so a misspelt field fails at once instead of becoming a
NULL. Fields added in later versions default to None: shards and snapshots written before them stay readable.
Errors are fractions in [0, 1]; times are seconds; timestamps naive UTC.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from .config import RunConfig
from .vocab import Status

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)


class _RunOutcome(BaseModel):
    """The `runs` columns after the experiment's own fields."""

    layers: Optional[int] = Field(None, description="6n + 2")
    train_size: Optional[int] = Field(None, description="training images actually used (after limit and split)")
    val_size: Optional[int] = None
    test_size: Optional[int] = None
    params: Optional[int] = None
    status: Optional[Status] = None
    epochs_done: Optional[int] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    device_type: Optional[Literal["cpu", "cuda"]] = Field(None, description="what it trained on: --device, resolved")
    device_name: Optional[str] = Field(None, description="the GPU's name, or the CPU's model and cores")
    cell_runs: Optional[int] = Field(None, description="runs trained together in this run's process (its cell's "
                                                       "seeds; 1: alone)")
    precision: Optional[str] = Field(None, description="fp32 or bf16 (autocast)")
    threads: Optional[int] = Field(None, description="intra-op CPU threads (core.runtime.default_threads)")
    torch_version: Optional[str] = None
    train_seconds: Optional[float] = Field(None, description="training loop only, summed over epochs")
    train_error: Optional[float] = None
    test_loss: Optional[float] = None
    test_error: Optional[float] = Field(None, description="final (last epoch's) test error, a fraction")
    val_loss: Optional[float] = None
    val_error: Optional[float] = None
    error_message: Optional[str] = None
    config: Optional[str] = Field(None, description="the full RunConfig as JSON")
    # provenance (core.runtime): what produced the run; the last process's, when it was resumed
    package_version: Optional[str] = None
    code_commit: Optional[str] = Field(None, description="git commit of the checkout, or the image's build arg")
    code_dirty: Optional[bool] = Field(None, description="the checkout had uncommitted changes (None: unknown)")
    source_hash: Optional[str] = Field(None, description="SHA-256 of the package's source (16 hex)")
    python_version: Optional[str] = None
    cuda_version: Optional[str] = None
    cudnn_version: Optional[str] = None
    gpu_name: Optional[str] = None
    gpu_driver: Optional[str] = None
    cpu_model: Optional[str] = None
    hostname: Optional[str] = Field(None, description="the host, or the pod's name on Kubernetes")
    command: Optional[str] = None
    data_fingerprint: Optional[str] = Field(None, description="SHA-256 over the data files read (16 hex)")
    precision_reason: Optional[str] = Field(None, description="what chose `precision`: the option, or for auto the "
                                                              "CPU flag (avx512_bf16, amx_bf16) or GPU that decided")


def _optional(annotation):
    return annotation if _is_optional(annotation) else Optional[annotation]


def _is_optional(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)


def _experiment_fields() -> dict:
    """RunConfig's fields as record columns: the same names and value types, all nullable (a record of an
    older version may lack one), without the validation."""
    return {name: (_optional(f.annotation), None) for name, f in RunConfig.model_fields.items()}


RunRecord = create_model(
    "RunRecord", __config__=_STRICT, __doc__="One row of `runs`.",
    run_id=(str, ...), **_experiment_fields(),
    **{name: (f.annotation, f) for name, f in _RunOutcome.model_fields.items()},
)


class EpochRecord(BaseModel):
    """One row of `epochs`: the state after 1-based `epoch`."""

    model_config = _STRICT

    run_id: str
    epoch: int
    lr: Optional[float] = None
    train_loss: Optional[float] = None
    train_error: Optional[float] = None
    test_loss: Optional[float] = None
    test_error: Optional[float] = None
    val_loss: Optional[float] = None
    val_error: Optional[float] = None
    epoch_seconds: Optional[float] = None
    images_per_second: Optional[float] = None
    source_hash: Optional[str] = Field(None, description="the code that trained this epoch")
    data_fingerprint: Optional[str] = Field(None, description="the data it was trained on")


class ConfusionRecord(BaseModel):
    """One row of `confusion`: how many `split` images of `true_label` the finished model called `predicted_label`."""

    model_config = _STRICT

    run_id: str
    split: Literal["test", "val"]
    true_label: int
    predicted_label: int
    true_class: Optional[str] = None
    predicted_class: Optional[str] = None
    count: int


class Shard(BaseModel):
    """runs/<run_id>/run.json."""

    model_config = ConfigDict(extra="forbid")

    run: RunRecord
    epochs: list[EpochRecord] = []
    confusion: list[ConfusionRecord] = []


def upgrade_run_row(row: dict) -> dict:
    """A `runs` row written before 0.2, as this version writes it: the one migration path, for a shard's row and for
each row of a 0.1 snapshot (core.store._migrate):

    - a run stopped by Ctrl-C / SIGTERM was stored as failed with a KeyboardInterrupt message: it is interrupted;
    - milestones were text, "82,123": an integer list;
    - `device` held the hardware's name: it is `device_name`, and `device_type` says cpu or cuda."""
    row = dict(row)
    if row.get("status") == "failed" and (row.get("error_message") or "").startswith("KeyboardInterrupt"):
        row["status"] = "interrupted"
    if isinstance(row.get("milestones"), str):
        row["milestones"] = [int(m) for m in row["milestones"].split(",") if m]
    if "device" in row:
        row["device_name"] = row.pop("device")
        row["device_type"] = legacy_device_type(row["device_name"])
    return row


def legacy_device_type(name: str | None) -> str | None:
    """The device type of a run recorded before 0.2, from its device name: a CPU's began with "cpu" ("cpu (2 cores, 1
    threads)" in 0.1.0, "CPU <model> (<n> cores)" later), a GPU's is its name. Only old records need this guess."""
    return None if name is None else "cpu" if name.lower().startswith("cpu") else "cuda"


# ---------------------------------------------------------------- the DuckDB schema, derived

_SQL_TYPES = {str: "VARCHAR", int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN", datetime: "TIMESTAMP"}


def sql_type(annotation) -> str:
    """The DuckDB type of a record field's annotation (`X | None` -> X's; a Literal of strings -> VARCHAR;
    list[X] -> X[])."""
    if _is_optional(annotation):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return "VARCHAR"
    if typing.get_origin(annotation) is list:
        return sql_type(typing.get_args(annotation)[0]) + "[]"
    return _SQL_TYPES[annotation]


def sql_columns(record: type[BaseModel]) -> dict[str, str]:
    return {name: sql_type(f.annotation) for name, f in record.model_fields.items()}


RECORDS: dict[str, type[BaseModel]] = {"runs": RunRecord, "epochs": EpochRecord, "confusion": ConfusionRecord}
TABLES: dict[str, dict[str, str]] = {table: sql_columns(record) for table, record in RECORDS.items()}
RUN_COLUMNS, EPOCH_COLUMNS, CONFUSION_COLUMNS = TABLES["runs"], TABLES["epochs"], TABLES["confusion"]
