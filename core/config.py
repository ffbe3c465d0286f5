"""One experiment's configuration: the single source of truth for a run, and the run's identity.

A run's id is `<label>-<hash>`: the label is `--run-name` when given, else `resnet<layers><shortcut>-<dataset>-
e<epochs>-s<seed>`; the hash is the first 10 hex digits of the SHA-256 of the identity fields in canonical JSON.
Every field of `ExperimentConfig` is an identity field unless it is declared with `NOT_IDENTITY` (none is today):
a field added later changes the run id of the experiments that set it, so two different experiments never share an
id, and the same command finds the same run again (resume). Where and how to run (device, precision, threads, data
dir, results dir, progress) are `core.train.RunOptions`, not fields here.
"""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .vocab import Augment, Dataset, Shortcut, layers

NOT_IDENTITY = {"identity": False}  # Field(..., json_schema_extra=NOT_IDENTITY): recorded, but not in the run id


def default_milestones(epochs: int) -> list[int]:
    """lr /10 after 50 % and after 75 % of the epochs (the paper's 32k/48k of 64k iterations, rounded to epochs)."""
    return sorted({m for m in (round(epochs * 0.5), round(epochs * 0.75)) if 1 <= m < epochs})


class ExperimentConfig(BaseModel):
    """The paper's recipe (§4.2) as defaults: SGD momentum 0.9, weight decay 1e-4, lr 0.1 /10 at milestones, batch 128."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(3, ge=1, le=500, description="blocks per stack; the net has 6n+2 layers")
    shortcut: Shortcut = "A"
    dataset: Dataset = "cifar10"
    epochs: int = Field(20, ge=1, le=10_000)
    augment: Augment = "paper"
    seed: int = Field(0, ge=0)
    batch_size: int = Field(128, ge=1, le=65_536)
    lr: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0, lt=1)
    milestones: list[int] = Field(default_factory=list, description="epochs after which lr is divided by 10")
    warmup_epochs: int = Field(0, ge=0)
    val_split: int = Field(0, ge=0)
    train_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    run_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

    @field_validator("milestones")
    @classmethod
    def _sorted_unique(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v):
            raise ValueError("milestones must be epoch numbers >= 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _check_schedule(self) -> "ExperimentConfig":
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
        label = self.run_name or f"resnet{self.layers}{self.shortcut}-{self.dataset}-e{self.epochs}-s{self.seed}"
        return f"{label}-{digest}"
