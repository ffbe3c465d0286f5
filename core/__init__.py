"""resnet_study.core: the science. The model (He et al. 2016, §4.2), the data sets and their on-device loader, the
augmentation presets, the training recipe, the run record and the results store. Knows nothing of HTTP, Kubernetes
or the CLI; imports neither `resnet_study.jobs` nor `resnet_study.results_api`.

    vocab.py      the study's vocabulary, declared once: shortcuts, presets, devices, statuses, 6n+2
    datasets.py   the data sets, declared once: built-ins (titles, classes, sizes, layouts) and the user's own
    config.py     RunConfig: one experiment, validated; its run id
    records.py    the run record (runs / epochs / confusion rows): one typed definition, the store's schema
    model.py      ResNet-(6n+2), shortcut A | B | none
    data.py       the data sets' files on disk -> uint8 tensors on the device, batched loader
    userdata.py   the user's folder or .npz -> uint8 3x32x32 arrays, decoded once and cached by content
    augment.py    per-sample batched augmentation presets (paper, report, none)
    train.py      one run: the recipe's schedule, the step, evaluation, its checkpoint (mid-epoch too) and record
    cell.py       a cell: all seeds of one experiment trained in one process, from one copy of the data set;
                  leases, resume and clean stops per run
    classic.py    the classic PIL/DataLoader pipeline: the scientific control the fast loop is checked against
    store.py      per-run shards and checkpoints, snapshot generations, the read side
    storage.py    one storage layer, a local dir or an s3:// prefix: atomic write, exclusive create, compare-and-swap
    lease.py      one holder at a time (a run's trainer, the store's syncer), stale-aware, on either storage
    settings.py   the RESNET_STUDY_* environment variables, each declared once
    runtime.py    where a run runs and what produced it: the CPU thread budget, provenance (code, data, machine)
    reference/    the published numbers (CSV) and the claims tested (claims.yaml)
"""


from dataclasses import dataclass
from typing import Literal

EXIT_FAILED = 1  # `sweep local`: a cell failed (a crash, or a run that failed); also any uncaught error
EXIT_USER_ERROR = 2  # a mistake the user must fix (bad option, bad spec, corrupt data): retrying cannot help
EXIT_BUSY = 3  # --if-running exit, and another process trains every run asked for
EXIT_RETRY = 75  # EX_TEMPFAIL: a condition that may pass by itself (data not there yet, no GPU visible, lease lost)
EXIT_SIGTERM, EXIT_SIGINT = 143, 130  # stopped cleanly on a signal, every run checkpointed: resumable

BatchAction = Literal["done", "fail", "retry", "resume"]


@dataclass(frozen=True)
class ExitCode:
    """One exit code of every command, and what a batch engine does with a task that ends with it: `done` (nothing
    left to do here), `fail` (never retried: a person must fix something), `retry` (counted against the retry
    limit), `resume` (stopped cleanly with every run checkpointed: started again without using up a retry)."""

    code: int
    meaning: str
    todo: str
    batch: BatchAction


# The one table: docs/laptop.md's table, the Kubernetes podFailurePolicy (jobs/kubernetes.py) and the Slurm
# requeue policy (jobs/slurm.py) are derived from it or held to it by tests/test_layout.py.
EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(0, "done: every run asked for is completed (or, with `--if-running exit`, left to the process that "
                "trains it)", "", "done"),
    ExitCode(EXIT_FAILED, "`sweep local`: a cell failed (the tail of its log is printed); any other command: an "
                          "unexpected error (a traceback)", "read `RESULTS/sweep-logs/<name>/<index>.log`", "retry"),
    ExitCode(EXIT_USER_ERROR, "a mistake to fix (above); also a bad option or subcommand",
             "fix it; retrying cannot help", "fail"),
    ExitCode(EXIT_BUSY, "`--if-running exit`, and another live process trains every run asked for",
             "run it later, or with `--if-running wait`", "done"),
    ExitCode(EXIT_RETRY, "retry later (EX_TEMPFAIL): a condition that may pass by itself: the data set not (yet) "
                         "there, no CUDA GPU visible for `--device cuda`, the run's lease taken over by another "
                         "process", "run the same command again", "retry"),
    ExitCode(EXIT_SIGTERM, "stopped on SIGTERM, every run checkpointed",
             "run the same command again: it resumes", "resume"),
    ExitCode(EXIT_SIGINT, "stopped on SIGINT (Ctrl-C), every run checkpointed", "the same", "resume"),
)


def exit_codes(batch: BatchAction) -> list[int]:
    """The codes a batch engine treats as `batch`."""
    return [e.code for e in EXIT_CODES if e.batch == batch]


class StudyError(Exception):
    """A problem the user can fix (bad input, corrupt data, unwritable dir): shown as one line, exit code 2."""

    exit_code = EXIT_USER_ERROR


class RetryLater(StudyError):
    """A problem that may pass without anybody fixing anything (the data set not yet on the volume, no GPU visible
    on this node, the run's lease taken over): one line, exit code 75, which a Kubernetes Job retries."""

    exit_code = EXIT_RETRY


class Stopped(Exception):
    """Training stopped on SIGTERM / SIGINT after checkpointing every run (mid-epoch): exit 143 / 130."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
