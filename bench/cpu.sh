#!/usr/bin/env bash
# The CPU benchmark set of issue 5 (run from the repository root, on an otherwise idle machine):
#
#   bench/cpu.sh
#
# Each command prints its table and saves its JSON under bench/results/<UTC time>/; docs/benchmarks.md quotes them.
# Targets (this project's 2-core machines, ResNet-20, Fashion-MNIST, `paper`): (b) >= 0.95 x (a), (b) >= 1.4 x (c);
# `report` costs <= 15 % over `paper`; ResNet-110 at batch 128 stays under 4 GB RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=bench/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
uptime | tee "$OUT/machine.txt"

bench() {  # name, then options
  local name=$1; shift
  echo; echo "== $name: resnet-study bench train $*"
  "$BIN/resnet-study" bench train --device cpu --save "$OUT/$name.json" "$@" 2>/dev/null
}

# The acceptance command, both presets, in the default precision (auto: bf16 autocast on AMX CPUs, else fp32).
bench resnet20-auto --n 3 --dataset fashion-mnist --augment paper,report
# The same in fp32: what a CPU without bf16 units gets, and the gain bf16 brings where it has them.
bench resnet20-fp32 --n 3 --dataset fashion-mnist --augment paper,report --precision fp32
# Memory: ResNet-110 at batch 128 (the classic peer is left out: its DataLoader workers are other processes).
bench resnet110-auto --n 18 --dataset fashion-mnist --no-classic --steps 5 --rounds 2
bench resnet110-fp32 --n 18 --dataset fashion-mnist --no-classic --steps 5 --rounds 2 --precision fp32

echo; echo "saved under $OUT"
