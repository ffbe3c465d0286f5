"""The study's vocabulary, each word declared once and imported everywhere else (no torch here: the CLI and the
results service load it in milliseconds). The data sets, their titles, class names and sizes are core.datasets'.

Units belong to names: `test_error` is a fraction in [0, 1], `test_error_pct` a percentage; seconds are `_seconds`.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import StringConstraints

from . import StudyError
from .datasets import BUILTINS, DATASET_PATTERN

# A stored data-set name: a built-in or a user data set's `<name>@<hash>` (core.datasets); what the API accepts.
Dataset = Annotated[str, StringConstraints(pattern=DATASET_PATTERN, max_length=80)]

Shortcut = Literal["A", "B", "none"]  # He et al. §3.3: A = zero-padded identity, B = 1x1 projection; none = plain net
Augment = Literal["paper", "report", "none"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
CellLayout = Literal["auto", "one-process", "process-per-run"]  # how a cell's runs map to processes (jobs/packing.py)
Status = Literal["running", "completed", "interrupted", "failed"]  # interrupted: stopped on a signal, resumable

DATASETS: tuple[str, ...] = tuple(BUILTINS)  # the built-ins; a user's data set is a path (core.datasets)
SHORTCUTS: tuple[str, ...] = get_args(Shortcut)
AUGMENTS: tuple[str, ...] = get_args(Augment)
DEVICES: tuple[str, ...] = get_args(Device)
PRECISIONS: tuple[str, ...] = get_args(Precision)
STATUSES: tuple[str, ...] = get_args(Status)


def layers(n: int) -> int:
    """Weighted layers of ResNet-(6n+2): the stem conv, 2n convs in each of the 3 stacks, the classifier."""
    return 6 * n + 2


def check_choice(option: str, what: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else the one-line error that names the option and the choices."""
    if value not in choices:
        raise StudyError(f"{option}: unknown {what} {value!r}; use {', '.join(choices)}")
    return value
