"""One run's configuration (`RunConfig`: an experiment and its seed): the single source of truth for a run, and the
run's identity.

A run's id is `<label>-<hash>`: the label is `--run-name` when given, else `resnet<layers><shortcut>-<dataset>-
e<epochs>-s<seed>`; the hash is the first 10 hex digits of the SHA-256 of the identity fields in canonical JSON.
Every field of `RunConfig` is an identity field unless it is declared with `NOT_IDENTITY` (none is today):
a field added later changes the run id of the experiments that set it, so two different experiments never share an
id, and the same command finds the same run again (resume). Where and how to run (device, precision, threads, data
dir, results dir, progress, how many seeds train together) are `RunOptions`, not fields of the experiment: they
never change a run id.

A *run* is one seed of one experiment (one `RunConfig`, one run id); a *cell* is all seeds of one experiment
(`cell_fields()` equal, seeds different): the runs the results tables summarise, whichever processes trained them.
`core.cell` trains some or all of a cell's runs in one process (`train --seeds`, one engine task); that is a way to
train a cell, not another meaning of the word.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import StudyError, datasets
from .vocab import Augment, CellLayout, Device, Precision, Shortcut, layers

NOT_IDENTITY = {"identity": False}  # Field(..., json_schema_extra=NOT_IDENTITY): recorded, but not in the run id


def default_milestones(epochs: int) -> list[int]:
    """lr /10 after 50 % and after 75 % of the epochs (the paper's 32k/48k of 64k iterations, rounded to epochs)."""
    return sorted({m for m in (round(epochs * 0.5), round(epochs * 0.75)) if 1 <= m < epochs})


class RunConfig(BaseModel):
    """One run: the experiment (every field but `seed`; `cell_fields()`) and its seed. The paper's recipe (§4.2) as defaults: SGD momentum 0.9, weight decay 1e-4, lr 0.1 /10 at milestones, batch 128."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(3, ge=1, le=500, description="Blocks per stack: ResNet-(6n+2). n=3,5,7,9,18 give "
                                                 "ResNet-20/32/44/56/110.")
    shortcut: Shortcut = Field("A", description="A (zero-pad identity), B (1x1 projection) or none (plain net).")
    dataset: str = Field("cifar10", description=datasets.DATASET_HELP)
    epochs: int = Field(20, ge=1, le=10_000, description="Epoch budget; the lr schedule scales with it.")
    augment: Augment = Field("paper", description="paper (pad+crop+flip), report (the original study's), none.")
    seed: int = Field(0, ge=0, description="Seeds init, data order, augmentation and the validation split.")
    batch_size: int = Field(128, ge=1, le=65_536, description="Training batch size.")
    lr: float = Field(0.1, gt=0, le=10, description="Initial learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(1e-4, ge=0, lt=1, description="SGD weight decay (L2).")
    milestones: list[int] = Field(default_factory=list, description="Epochs after which lr /= 10, e.g. 82,123 "
                                                                    "(default: 50 % and 75 % of the epochs).")
    warmup_epochs: int = Field(0, ge=0, description="Train the first K epochs at lr/10 (the paper's n=18 warm-up).")
    val_split: int = Field(0, ge=0, description="Hold out K training images, stratified (paper: 5000).")
    train_limit: int | None = Field(None, ge=1, description="Use only the first K training images.")
    test_limit: int | None = Field(None, ge=1, description="Use only the first K test images.")
    run_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                 description="Label for the run id (letters, digits, . _ -).")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        """A built-in, or the stored name of the user's data set: a path given here becomes that name (the folder
        or file is checked and fingerprinted once per process, core.datasets)."""
        return datasets.check_name(v)

    @field_validator("milestones")
    @classmethod
    def _sorted_unique(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v):
            raise ValueError("milestones must be epoch numbers >= 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _check_schedule(self) -> "RunConfig":
        if not self.milestones:
            object.__setattr__(self, "milestones", default_milestones(self.epochs))
        beyond = [m for m in self.milestones if m > self.epochs]
        if beyond:
            raise ValueError(
                f"milestone {beyond[0]} is beyond the last epoch ({self.epochs}); use milestones <= --epochs"
            )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be smaller than epochs ({self.epochs})")
        return self

    @classmethod
    def identity_fields(cls) -> tuple[str, ...]:
        """Every field, in declaration order, except those declared with NOT_IDENTITY."""
        return tuple(name for name, f in cls.model_fields.items()
                     if (f.json_schema_extra or {}).get("identity", True))

    @classmethod
    def cell_fields(cls) -> tuple[str, ...]:
        """What makes one cell of a study: the identity without the seed and the label. Runs that agree on these
        are repeats of one experiment, and only they are averaged together."""
        return tuple(f for f in cls.identity_fields() if f not in ("seed", "run_name"))

    @property
    def layers(self) -> int:
        return layers(self.n)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based `epoch`: warm-up at lr/10 (the paper's n=18 recipe), then /10 per milestone passed."""
        if epoch <= self.warmup_epochs:
            return self.lr / 10
        return self.lr / 10 ** sum(epoch > m for m in self.milestones)

    def identity(self) -> dict:
        return {k: getattr(self, k) for k in self.identity_fields()}

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]
        dataset = self.dataset.replace("@", "-")  # a user data set's name@hash: run ids stay [A-Za-z0-9._-]
        label = self.run_name or f"resnet{self.layers}{self.shortcut}-{dataset}-e{self.epochs}-s{self.seed}"
        return f"{label}-{digest}"


    def with_seed(self, seed: int) -> "RunConfig":
        """The same experiment with another seed: another run of the same cell."""
        return RunConfig.model_validate({**self.model_dump(), "seed": seed})


def bounds(field: str) -> dict[str, float]:
    """A RunConfig field's numeric bounds (ge, gt, le, lt: pydantic's annotated_types metadata) as keyword arguments,
    for a route's Query or a CLI's check: each bound is written once, on the field."""
    return {name: getattr(m, name) for m in RunConfig.model_fields[field].metadata
            for name in ("ge", "gt", "le", "lt") if getattr(m, name, None) is not None}


def same_cell(configs: list[RunConfig]) -> bool:
    """Whether the configs are runs of one cell: equal in every cell field."""
    first = {f: getattr(configs[0], f) for f in RunConfig.cell_fields()}
    return all({f: getattr(c, f) for f in RunConfig.cell_fields()} == first for c in configs)


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """`0,1,2`, a range `0-4` (both ends included), or both (`0-2,7`) -> distinct seeds >= 0, in the order given."""
    example = f"write {option} 0,1,2 or a range such as {option} 0-4"
    parts = [p for p in text.replace(" ", "").split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise StudyError(f"{option}: no seed in {text!r}; {example}")
    seeds: list[int] = []
    for part in parts:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            hint = " (seeds are >= 0)" if part.startswith("-") else ""
            raise StudyError(f"{option}: cannot read {part!r}{hint}; {example}")
        low, high = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if high < low:
            raise StudyError(f"{option}: the range {part!r} runs backwards; write {option} {high}-{low}")
        seeds += range(low, high + 1)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise StudyError(f"{option}: seed {repeated[0]} is given twice; list each seed once, e.g. {option} "
                         f"{','.join(map(str, dict.fromkeys(seeds)))}")
    return seeds


ProgressMode = Literal["auto", "bar", "json"]
IfRunning = Literal["wait", "exit"]


class RunOptions(BaseModel):
    """Where and how to run: never part of a run's identity (a run trained on a GPU, in bf16, inside a cell of 8
    is the same run as one trained alone on a CPU in fp32). One object for `train`, `sweep cell` and `sweep local`;
    jobs/options.py makes the command-line options from these fields and turns the object back into an argv."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Device = Field("auto", description="auto, cpu or cuda.")
    precision: Precision = Field("auto", description="auto, fp32 or bf16: auto is bf16 autocast on CUDA and on "
                                                     "CPUs with bf16 units (AMX, AVX512-BF16), else fp32; what "
                                                     "decided it is recorded per run.")
    threads: Optional[int] = Field(None, ge=1, description="Intra-op CPU threads (default: OMP_NUM_THREADS, else "
                                                            "the CPUs this process may use: the smallest of the "
                                                            "affinity mask, the cgroup CPU quota and the "
                                                            "Kubernetes CPU request). Recorded per run.")
    compile: bool = Field(False, description="torch.compile the model (pays on long GPU runs).")
    cell_layout: CellLayout = Field("auto", description="How a cell's runs map to processes: auto (on CUDA a "
                                                        "process per run, sharing the GPU; on a CPU one process "
                                                        "for the cell), one-process or process-per-run; the "
                                                        "processes of a split cell share --threads.")
    if_running: IfRunning = Field("wait", description="When another process already trains a run: wait for it "
                                                      "(then resume or report it completed), or exit (leave it; "
                                                      "code 3 if nothing was trained).")
    strict_resume: bool = Field(False, description="Refuse (exit 2) to resume a checkpoint made by other code or "
                                                   "on other data; without it the change is logged and recorded "
                                                   "per epoch.")
    download: bool = Field(False, description="Allow a torchvision download into --data-dir.")
    progress: ProgressMode = Field("auto", description="auto (bar on a terminal, JSON lines otherwise), bar or "
                                                       "json.")
    data_dir: Optional[str] = Field(None, description="Data sets in torchvision's layouts (cifar-10-batches-py/, "
                                                      "FashionMNIST/raw/): a folder, or s3://bucket/prefix filled by "
                                                      "`resnet-study data push`.")
    results_dir: Optional[str] = Field(None, description="Results store: a folder, or s3://bucket/prefix (shards, "
                                                         "checkpoints, snapshots).")

    @field_validator("data_dir", "results_dir", mode="before")
    @classmethod
    def _location_text(cls, value):
        """A folder may come as a path (code that builds RunOptions itself); the field keeps its text."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value
