"""The Slurm engine: a sweep as one sbatch job array (one array task per cell), its requeues, and the tasks' state.

Renders the cells of jobs/sweep.py with the resources of the Kubernetes render (kubernetes.RenderOptions: GPUs,
CPUs, memory, results and data) and the exit-code policy of core/__init__.py (EXIT_CODES), read as Slurm does it:

- `done` codes end the task COMPLETED; a `fail` code (2: a mistake to fix) ends it FAILED, never requeued;
- `resume` (143 / 130: stopped on a signal, every run checkpointed) and `retry` codes (75, a crash) requeue the
  task itself (`scontrol requeue JOB_TASK`: the same array index, SLURM_RESTART_COUNT + 1) while fewer than
  `max_requeues` requeues happened, so a cell longer than the time limit finishes over several allocations;
- the time limit: Slurm sends the batch shell USR1 `signal_before` seconds before it (up to 30 s earlier: it checks
  every 30 s); the script forwards SIGTERM to the cell, which checkpoints every run mid-epoch and exits 143; the
  task then requeues itself (a TIMEOUT is never requeued by Slurm);
- a SIGTERM of Slurm's own (`scontrol requeue`, a preemption with PreemptMode=REQUEUE, `scancel`) is forwarded the
  same way, but then Slurm decides what follows (it requeues a preempted task; a cancelled one stays cancelled).

The program runs in the background and the shell `wait`s for it: bash runs a trap only once its foreground child has
exited, so a foreground program would never get the signal (../shared/notes/slurm.md, observed on Slurm 22.05).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..core import EXIT_CODES, StudyError, settings
from ..core.storage import Storage
from .kubernetes import APP, RenderOptions
from .sweep import GRACE_SECONDS, INDEX_MODE, INDEX_MODE_ENV, Sweep, cell_memory

LOG_DIR = "sweep-logs"  # under the results dir (as `sweep local`'s): one log per cell, %a = the array index
JOB_DIR = "sweep-jobs"  # under the results dir, beside sweep-plans/: the submitted job's id (`sweep submit`)
CONTAINER_RUNTIMES = ("apptainer", "pyxis")
# --time from `sweep plan`: the longest cell's planned training time x TIME_FACTOR + TIME_EXTRA_S (evaluation, which
# the plan does not count, start-up, the data set's first read and the checkpoint at the early signal).
TIME_FACTOR = 1.5
TIME_EXTRA_S = 600
MAX_REQUEUES = 10
SPEC_END = "END_OF_SWEEP_SPEC"  # the here-document's end marker (not a variable)


@dataclass
class SlurmOptions:
    """What only Slurm has; the resources shared with Kubernetes are kubernetes.RenderOptions."""

    time: str | None = None  # sbatch --time; None: from the saved `sweep plan`, else the partition's default
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    container: str | None = None  # an image: run the cell in it (Apptainer or Pyxis); None: the installed tool
    container_runtime: str = "apptainer"
    max_requeues: int = MAX_REQUEUES
    signal_before: int = GRACE_SECONDS  # seconds before the time limit the cell is asked to checkpoint
    setup: str | None = None  # a shell line run before the cell (module load ..., source venv/bin/activate)
    log_dir: str | None = None  # None: RESULTS/sweep-logs/NAME (a bucket: ./sweep-logs/NAME where it is submitted)
    plan: dict | None = field(default=None, repr=False)  # the saved `sweep plan` of the results store


# ---------------------------------------------------------------- resources


def cpus(request: str) -> int:
    """A Kubernetes CPU quantity ("4", "500m", "1.5") as whole CPUs for --cpus-per-task (rounded up)."""
    try:
        value = float(request[:-1]) / 1000 if request.endswith("m") else float(request)
    except ValueError:
        raise StudyError(f"--cpu: {request!r} is not a CPU count; give e.g. 4") from None
    return max(1, math.ceil(value))


_MEMORY_UNITS = {"Ki": "K", "Mi": "M", "Gi": "G", "Ti": "T", "K": "K", "M": "M", "G": "G", "T": "T"}


def memory(quantity: str) -> str:
    """A Kubernetes memory quantity ("5Gi", "512Mi") as sbatch --mem (binary units: 5G, 512M)."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|K|M|G|T)?", quantity)
    if not m:
        raise StudyError(f"--memory: {quantity!r} is not a memory size; give e.g. 8Gi or 512Mi")
    number, unit = m.groups()
    return f"{number}{_MEMORY_UNITS[unit]}" if unit else f"{max(1, math.ceil(int(number) / 2**20))}M"


TIME_PATTERN = r"(\d+-)?\d+(:\d{1,2}){0,2}|\d+-\d+"


def check_time(value: str) -> str:
    if not re.fullmatch(TIME_PATTERN, value):
        raise StudyError(f"--time: {value!r} is not a Slurm time; give minutes, HH:MM:SS or D-HH:MM:SS")
    return value


def slurm_time(seconds: float) -> str:
    """Seconds as D-HH:MM:SS, rounded up to the minute."""
    minutes = math.ceil(seconds / 60)
    days, minutes = divmod(minutes, 24 * 60)
    return f"{days}-{minutes // 60:02d}:{minutes % 60:02d}:00"


def planned_time(sweep: Sweep, plan: dict | None) -> tuple[str | None, str]:
    """--time from a saved plan of this sweep: (the value or None, how it was found, for the script's header)."""
    cells = (plan or {}).get("cells") or []
    if len(cells) != len(sweep) or any(c.get("seconds") is None for c in cells):
        why = "no saved plan" if not plan else "the saved plan has cells of unknown time or another grid"
        return None, (f"none: {why}, so the partition's default time limit applies (run `resnet-study sweep plan "
                      f"{sweep.path.name}` first, or give --time)")
    longest = max(c["seconds"] for c in cells)
    value = slurm_time(longest * TIME_FACTOR + TIME_EXTRA_S)
    return value, (f"{TIME_FACTOR} x the longest cell's planned training time ({longest / 3600:.2f} h on "
                   f"{plan.get('device')}, `sweep plan`) + {TIME_EXTRA_S // 60} min")


# ---------------------------------------------------------------- the script


def render(sweep: Sweep, opts: RenderOptions, slurm: SlurmOptions, results: Storage) -> str:
    """One sbatch script: the array (one task per cell, `parallelism` at a time), its resources, the spec inside it
    (a here-document: the cells cannot change under a running array), the cell's command and the requeue policy.

    `results`: the store the tasks write to, a folder on the shared filesystem or a bucket."""
    name = sweep.name
    parallelism = min(opts.parallelism or sweep.spec.parallelism, len(sweep))
    mem = memory(opts.memory or cell_memory(len(sweep.spec.seed_list)))
    if slurm.time is not None:
        time, time_why = check_time(slurm.time), "given (--time)"
    else:
        time, time_why = planned_time(sweep, slurm.plan)
    log_dir = log_folder(results, name, slurm.log_dir)
    sbatch = [f"--job-name={APP}-{name}",
              f"--array=0-{len(sweep) - 1}%{parallelism}",
              *([f"--gres=gpu:{opts.gpus}"] if opts.gpus else []),
              f"--cpus-per-task={cpus(opts.cpu)}",
              f"--mem={mem}",
              *([f"--time={time}"] if time else []),
              *(f"--{k}={v}" for k, v in (("partition", slurm.partition), ("account", slurm.account),
                                         ("qos", slurm.qos)) if v),
              "--requeue",
              "--open-mode=append",
              f"--output={log_dir}/%a.log",
              f"--signal=B:USR1@{slurm.signal_before}"]
    env = {settings.RESULTS.name: str(Path(results.root).resolve()) if results.is_local else str(results), **({settings.DATA.name: opts.data_dir} if opts.data_dir else {}),
           INDEX_MODE_ENV: INDEX_MODE}
    lines = [
        "#!/bin/bash",
        f"# Generated by `resnet-study sweep render {sweep.path.name} --engine slurm`: do not edit; re-render instead.",
        f"# {len(sweep)} cells x {len(sweep.spec.seed_list)} seeds = {len(sweep.runs)} runs ({name}): one array "
        f"task per cell, its seeds on {_device(opts)}.",
        f"# Submit: `resnet-study sweep submit {sweep.path.name} --engine slurm` (the same options), or "
        f"`mkdir -p {log_dir}` and `sbatch` this file.",
        f"# Results: {results}; logs: {log_dir}/INDEX.log. --time: {time_why}.",
        f"# Exit codes (core EXIT_CODES): {_policy_summary()}; at most {slurm.max_requeues} requeues "
        f"(SLURM_RESTART_COUNT). docs/hpc.md.",
        *(f"#SBATCH {s}" for s in sbatch),
        "set -uo pipefail",
        "",
        *(f"export {k}={shlex.quote(v)}" for k, v in env.items()),
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"  # the threads: the task\'s CPUs',
        *(["# shellcheck source=/dev/null  # --setup: the cluster's own environment", slurm.setup]
          if slurm.setup else []),
        "",
        "# The spec, as rendered: its cells are the array's indices.",
        'spec_dir=$(mktemp -d)',
        "trap 'rm -rf \"$spec_dir\"' EXIT",
        f"cat > \"$spec_dir/{name}.yaml\" <<'{SPEC_END}'",
        sweep.text.rstrip("\n"),
        SPEC_END,
        "",
        'task="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        'restarts="${SLURM_RESTART_COUNT:-0}"',
        'echo "$(date -Is) task $task (cell $SLURM_ARRAY_TASK_ID) on $(hostname): allocation $((restarts + 1))"',
        "",
        "# Slurm signals this shell; the cell gets SIGTERM from it, checkpoints every run mid-epoch and exits 143.",
        "# USR1: the time limit is near (--signal): requeue afterwards. TERM: Slurm's own stop (scontrol requeue,",
        "# preemption, scancel): Slurm decides what follows.",
        'stopped_by=""',
        "trap 'stopped_by=time-limit; kill -TERM \"${cell:-}\" 2>/dev/null' USR1",
        "trap 'stopped_by=slurm; kill -TERM \"${cell:-}\" 2>/dev/null' TERM INT",
        f"{_command(sweep, opts, slurm, results)} &",
        "cell=$!",
        'while :; do  # wait returns early on a trapped signal: wait again for the exit code',
        '  wait "$cell"; code=$?',
        '  kill -0 "$cell" 2>/dev/null || break',
        "done",
        "",
        "requeue() {",
        '  if [ "$stopped_by" = slurm ]; then',
        '    echo "$(date -Is) exit $code ($1) after a stop by Slurm: its requeue, preemption or cancel decides" >&2',
        '    exit "$code"',
        "  fi",
        f'  if [ "$restarts" -ge {slurm.max_requeues} ]; then',
        f'    echo "$(date -Is) exit $code ($1): not requeued, {slurm.max_requeues} requeues already" >&2',
        '    exit "$code"',
        "  fi",
        '  echo "$(date -Is) exit $code ($1)${stopped_by:+, stopped by the $stopped_by}: requeueing $task" >&2',
        '  scontrol requeue "$task" || echo "$(date -Is) scontrol requeue $task failed" >&2',
        '  exit "$code"',
        "}",
        *_case(),
    ]
    return "\n".join(lines) + "\n"


def log_folder(results: Storage, name: str, given: str | None = None) -> str:
    """Where the tasks' logs go: --log-dir, else RESULTS/sweep-logs/NAME on the shared filesystem; a bucket cannot
    take sbatch's --output, so then ./sweep-logs/NAME where the render runs (the submit directory)."""
    if given:
        return str(Path(given).resolve())
    base = results.root if results.is_local else Path.cwd()
    return str(Path(base).resolve() / LOG_DIR / name)


def _device(opts: RenderOptions) -> str:
    return f"{opts.gpus} GPU{'s' if opts.gpus > 1 else ''}" if opts.gpus else "CPUs"


def _command(sweep: Sweep, opts: RenderOptions, slurm: SlurmOptions, results: Storage) -> str:
    cell = ["resnet-study", "sweep", "cell", f"$spec_dir/{sweep.name}.yaml", "--index", "$SLURM_ARRAY_TASK_ID",
            "--progress", "json"]
    quoted = " ".join(f'"{a}"' if a.startswith("$") else shlex.quote(a) for a in cell)
    if not slurm.container:
        return quoted
    binds = ['"$spec_dir"', *(shlex.quote(str(Path(d).resolve())) for d in
                              ([str(results.root)] if results.is_local else []) +
                              ([opts.data_dir] if opts.data_dir and "://" not in opts.data_dir else []))]
    if slurm.container_runtime == "apptainer":
        image = slurm.container if "://" in slurm.container or slurm.container.endswith(".sif") \
            else f"docker://{slurm.container}"
        bind = " ".join(f"--bind {b}" for b in binds)
        return f"apptainer exec {'--nv ' if opts.gpus else ''}{bind} {shlex.quote(image)} {quoted}"
    mounts = ",".join(f"{b}:{b}" if not b.startswith('"') else f'"$spec_dir":"$spec_dir"' for b in binds)
    return (f"srun --ntasks=1 --container-image={shlex.quote(slurm.container)} --container-mounts={mounts} "
            f"{quoted}")


def _policy_summary() -> str:
    groups = _groups()
    return "; ".join(f"{'|'.join(map(str, codes))} {action}" for action, codes in groups.items())


def _groups() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in EXIT_CODES:
        out.setdefault(e.batch, []).append(e.code)
    return out


_ARM = {
    "done": lambda codes: ["exit 0"],
    "fail": lambda codes: ['echo "$(date -Is) exit $code: a mistake to fix (the error above); not requeued" >&2',
                           'exit "$code"'],
    "resume": lambda codes: ['requeue "every run checkpointed"'],
    "retry": lambda codes: ['requeue "may pass by itself"'],
}


def _case() -> list[str]:
    """The case statement, one arm per batch action of core's EXIT_CODES (any other code, a kill or an
    out-of-memory: as `retry`)."""
    lines = ["# One arm per batch action of core's EXIT_CODES (docs/hpc.md has the table).", 'case "$code" in']
    for action, codes in _groups().items():
        lines.append(f"  {'|'.join(map(str, codes))})  # {action}")
        lines += [f"    {line}" for line in _ARM[action](codes)]
        lines.append("    ;;")
    lines += ["  126|127)  # the shell's: the command is not there or not executable (PATH, --setup, --container)",
              '    echo "$(date -Is) exit $code: resnet-study could not be run; not requeued" >&2', '    exit "$code"',
              "    ;;",
              "  *)  # any other (killed, out of memory): as retry", '    requeue "exit $code"', "    ;;", "esac"]
    return lines


def requeue_policy() -> dict[int, str]:
    """Exit code -> what the rendered script does with it (docs/hpc.md's table is held to it)."""
    does = {"done": "completed", "fail": "failed, not requeued", "resume": "requeued (bounded)",
            "retry": "requeued (bounded)"}
    return {e.code: does[e.batch] for e in EXIT_CODES}


# ---------------------------------------------------------------- submit and watch


def job_record_name(sweep_name: str) -> str:
    return f"{JOB_DIR}/{sweep_name}.json"


def save_job(results: Storage, record: dict) -> str:
    name = job_record_name(record["spec"])
    results.write(name, json.dumps(record, indent=1).encode())
    return f"{results}/{name}"


def load_job(results: Storage, sweep_name: str) -> dict | None:
    try:
        found = results.read(job_record_name(sweep_name))
        return json.loads(found) if found is not None else None
    except (OSError, ValueError, StudyError):
        return None


def sbatch(script: str, env: dict | None = None) -> str:
    """Submit the script; its job id."""
    if not shutil.which("sbatch"):
        raise StudyError("sbatch not found: submit from a Slurm login node (or render the script with `sweep "
                         "render --engine slurm` and submit it there)")
    proc = subprocess.run(["sbatch", "--parsable"], input=script, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise StudyError(f"sbatch refused the script: {proc.stderr.strip() or proc.stdout.strip()}; fix the "
                         f"options (sweep render --engine slurm prints it)")
    return proc.stdout.strip().split(";")[0]


@dataclass
class TaskState:
    index: int
    state: str  # Slurm's JobState: PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, CANCELLED, PREEMPTED, ...
    restarts: int
    exit_code: int | None
    reason: str

    def describe(self) -> str:
        """What `sweep status` shows: pending, running, requeued n, failed (exit 2: ...), timed out."""
        requeued = f", requeued {self.restarts}x" if self.restarts else ""
        if self.state == "PENDING":
            return f"pending ({self.reason}){requeued}" if self.reason not in ("None", "") else f"pending{requeued}"
        if self.state == "FAILED":
            meaning = next((e.meaning.split(":")[0].split(" (")[0] for e in EXIT_CODES
                            if e.code == self.exit_code), "a crash")
            return f"failed (exit {self.exit_code}: {meaning}){requeued}"
        if self.state == "TIMEOUT":
            return f"timed out{requeued}"
        return f"{self.state.lower()}{requeued}"


def _indices(text: str) -> list[int]:
    """An ArrayTaskId field: "3", "1-3%1", "0,2,5-7"."""
    out = []
    for part in text.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def task_states(job_id: str, env: dict | None = None) -> dict[int, TaskState] | str:
    """Each array task's state from `scontrol show job`, or why it cannot be known here."""
    if not shutil.which("scontrol"):
        return "Slurm's commands are not reachable here (no scontrol): the store's state only"
    proc = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        why = proc.stderr.strip() or proc.stdout.strip()
        if "Invalid job id" in why:
            return f"Slurm no longer knows job {job_id} (finished more than MinJobAge ago): the store's state only"
        return f"scontrol show job {job_id} failed ({why}): the store's state only"
    out: dict[int, TaskState] = {}
    for line in proc.stdout.splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "ArrayTaskId" not in fields:
            continue
        code = fields.get("ExitCode", "0:0").split(":")[0]
        for i in _indices(fields["ArrayTaskId"]):
            out[i] = TaskState(i, fields.get("JobState", "?"), int(fields.get("Restarts", 0) or 0),
                               int(code) if code.isdigit() else None, fields.get("Reason", ""))
    return out


def active(job_id: str, env: dict | None = None) -> bool:
    """Whether any task of the job is still pending, running or being requeued."""
    proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, env=env)
    return proc.returncode == 0 and bool(proc.stdout.strip())
