#!/usr/bin/env bash
# Issue 11 on a lent GPU machine, in as few calls as possible (run from the repository root there):
#
#   bench/gpu-study.sh wheels            # HERE, before the device call: the carried wheels into .whl/
#   bench/gpu-study.sh all [SECONDS]     # tests/gpu, bench train, bench processes, then the study with the time left
#   bench/gpu-study.sh study [SECONDS]   # (a second call on the same warm machine) finish the study
#
# Phases write under $OUT (default bench/results/gpu-<UTC time>) as they finish, so a phase cut short keeps the
# ones before it. The machine's own python3 and torch are used; what it lacks comes from carried wheels in .whl/,
# exactly those of bench/gpu-wheels.txt (tests/test_gpu_suite.py checks the list), and this checkout's own wheel,
# installed with --no-deps (the device call names .whl in `carry`). Real Fashion-MNIST comes from
# .gpudata/FashionMNIST/raw (Debian's files, carried with the tree). The study's results dir is /tmp/gpu-study on
# the machine: a second call resumes it.
set -uo pipefail
cd "$(dirname "$0")/.."
PHASES=${1:-all}
BUDGET=${2:-560}
if [ "$PHASES" = wheels ]; then  # here, where pip reaches the index (PYTHON: one with pip, e.g. .venv/bin/python)
  "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r bench/gpu-wheels.txt || exit 1
  rm -f .whl/resnet_study-*.whl && "${PYTHON:-python3}" -m pip wheel -q --no-deps --no-build-isolation -w .whl . \
    || exit 1
  ls .whl; exit 0
fi
T0=$(date +%s)
OUT=${OUT:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
RESULTS=/tmp/gpu-study
export RESNET_STUDY_DATA=$PWD/.gpudata PYTHONUNBUFFERED=1
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
step() { echo "== $* [$(( $(date +%s) - T0 )) s]"; }

# ---------------------------------------------------------------- the project on the machine's torch
if [ ! -d /tmp/site/resnet_study ]; then
  step "install: the wheels of bench/gpu-wheels.txt and this checkout's own (bench/gpu-study.sh wheels) into /tmp/site"
  ls .whl/resnet_study-*.whl >/dev/null 2>&1 \
    || python3 -m pip wheel -q --no-deps --no-build-isolation --no-index -w .whl . || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --find-links .whl --target /tmp/site \
    -r bench/gpu-wheels.txt .whl/resnet_study-*.whl || exit 1
fi
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
RS=(python3 -m resnet_study.jobs)

if [ "$PHASES" = all ]; then
  step "machine"
  { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda",
torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name())'
    nproc; date -u; } 2>&1 | tee "$OUT/machine.txt"

  step "tests/gpu"
  timeout 300 python3 -m pytest tests/gpu -q -rA -s -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.log" | tail -n 25

  step "bench train (CIFAR-10-shaped images: real CIFAR-10 is not on the machine)"
  bench() {  # name, options
    local name=$1; shift
    timeout 240 "${RS[@]}" bench train --device cuda --dataset cifar10 --save "$OUT/bench-$name.json" "$@" \
      > "$OUT/bench-$name.txt" 2>"$OUT/bench-$name.log"; cat "$OUT/bench-$name.txt"
  }
  bench resnet20 --n 3 --workers 12 --steps 60 --warmup 20 --rounds 3 --eval-images 10000
  bench resnet56 --n 9 --no-classic --steps 40 --warmup 10 --rounds 3
  bench resnet110 --n 18 --no-classic --steps 30 --warmup 10 --rounds 3
  bench resnet20-compile --n 3 --compile --no-classic --steps 60 --warmup 25 --rounds 3
  [ "$(left)" -gt 360 ] && bench resnet20-cudagraphs --n 3 --compile --compile-mode reduce-overhead --no-classic \
    --steps 60 --warmup 25 --rounds 3
  [ "$(left)" -gt 330 ] && bench resnet56-compile --n 9 --compile --no-classic --steps 40 --warmup 20 --rounds 3

  step "bench processes: train processes per GPU"
  timeout 200 "${RS[@]}" bench processes --device cuda --processes 1,2,4,8 --n 3 --dataset fashion-mnist --epochs 3 \
    --save "$OUT/bench-runs.json" 2>"$OUT/bench-runs.log" | tee "$OUT/bench-runs.txt"
  tar -C "$OUT" -czf "$OUT/bench.tar.gz" $(cd "$OUT" && ls bench-* 2>/dev/null) 2>/dev/null \
    && cp "$OUT/bench-runs.json" /tmp/bench-runs.json && rm -f "$OUT"/bench-*  # at most 8 files come back
fi

if [ "$(left)" -gt 60 ]; then
  step "study: Fashion-MNIST, ResNet-20/32/44 x 20 epochs x 3 seeds ($(left) s left)"
  PARALLEL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["best_processes"])' \
    /tmp/bench-runs.json 2>/dev/null || echo "")
  timeout $(( $(left) - 25 )) "${RS[@]}" sweep local bench/gpu-study.yaml --device cuda \
    ${PARALLEL:+--parallel "$PARALLEL"} --results-dir "$RESULTS" 2>&1 | tee "$OUT/study.log" | tail -n 14
fi
"${RS[@]}" sweep status bench/gpu-study.yaml --results-dir "$RESULTS" --format csv > "$OUT/study-status.csv"
[ -d "$RESULTS" ] && tar -C "$RESULTS" --exclude=checkpoint.pt -czf "$OUT/study.tar.gz" .
step "done: $(ls "$OUT" | tr '\n' ' ')"
