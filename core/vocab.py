"""The study's vocabulary, each word declared once and imported everywhere else (no torch here: the CLI and the
results service load it in milliseconds).

Units belong to names: `test_error` is a fraction in [0, 1], `test_error_pct` a percentage; seconds are `_seconds`.
"""

from __future__ import annotations

from typing import Literal, get_args

from . import StudyError

Dataset = Literal["cifar10", "fashion-mnist"]
Shortcut = Literal["A", "B", "none"]  # He et al. §3.3: A = zero-padded identity, B = 1x1 projection; none = plain net
Augment = Literal["paper", "report", "none"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
Status = Literal["running", "completed", "interrupted", "failed"]  # interrupted: stopped on a signal, resumable

DATASETS: tuple[str, ...] = get_args(Dataset)
SHORTCUTS: tuple[str, ...] = get_args(Shortcut)
AUGMENTS: tuple[str, ...] = get_args(Augment)
DEVICES: tuple[str, ...] = get_args(Device)
PRECISIONS: tuple[str, ...] = get_args(Precision)
STATUSES: tuple[str, ...] = get_args(Status)

DATASET_TITLES = {"cifar10": "CIFAR-10", "fashion-mnist": "Fashion-MNIST"}
TRAIN_IMAGES = {"cifar10": 50_000, "fashion-mnist": 60_000}  # the full training sets
TEST_IMAGES = {"cifar10": 10_000, "fashion-mnist": 10_000}
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
}
NUM_CLASSES = 10


def layers(n: int) -> int:
    """Weighted layers of ResNet-(6n+2): the stem conv, 2n convs in each of the 3 stacks, the classifier."""
    return 6 * n + 2


def check_choice(option: str, what: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else the one-line error that names the option and the choices."""
    if value not in choices:
        raise StudyError(f"{option}: unknown {what} {value!r}; use {', '.join(choices)}")
    return value
