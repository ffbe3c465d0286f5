#!/usr/bin/env bash
# The GPU benchmark set of issue 5, for a machine with an NVIDIA GPU (run from the repository root):
#
#   bench/gpu.sh                      # CIFAR-10 from $RESNET_STUDY_DATA/cifar-10-batches-py, else CIFAR-10-shaped images
#   DATA_DIR=/data bench/gpu.sh
#
# Each command prints its table and saves its JSON under bench/results/<UTC time>/; copy the figures, the machine and
# the command into docs/benchmarks.md. Targets (ResNet-20, 50 000 images per epoch, H100): epoch <= 2 s,
# (b) >= 0.9 x (a), (b) >= 10 x (c).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DATA=()
if [[ -n "${DATA_DIR:-}" ]]; then DATA=(--data-dir "$DATA_DIR"); fi
WORKERS=${WORKERS:-$(( $(nproc) < 8 ? $(nproc) : 8 ))}  # the classic peer gets up to 8 DataLoader workers
OUT=bench/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$BIN/python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())' \
  | tee -a "$OUT/gpu.txt"
uptime | tee -a "$OUT/gpu.txt"

bench() {  # name, then options
  local name=$1; shift
  echo; echo "== $name: resnet-study bench train $*"
  "$BIN/resnet-study" bench train --device cuda ${DATA[@]+"${DATA[@]}"} --save "$OUT/$name.json" "$@"
}

# ResNet-20 on CIFAR-10(-shaped) images, both presets, eager: the headline comparison.
bench resnet20-cifar10 --n 3 --dataset cifar10 --augment paper,report --workers "$WORKERS" \
  --steps 100 --warmup 20 --rounds 3 --eval-images 10000
# The same with torch.compile for (a) and (b) (compilation happens in the untimed warm-up).
bench resnet20-cifar10-compile --n 3 --dataset cifar10 --compile --workers "$WORKERS" \
  --steps 100 --warmup 30 --rounds 3 --eval-images 10000
# Fashion-MNIST (real images from Debian's package), ResNet-20.
bench resnet20-fashion-mnist --n 3 --dataset fashion-mnist --workers "$WORKERS" --steps 100 --warmup 20 --rounds 3
# Depth: ResNet-56 and ResNet-110, model-only vs this loop (the classic peer is data-bound at every depth).
bench resnet56-cifar10 --n 9 --dataset cifar10 --no-classic --steps 50 --warmup 10 --rounds 3
bench resnet110-cifar10 --n 18 --dataset cifar10 --no-classic --steps 30 --warmup 10 --rounds 3

echo; echo "saved under $OUT"
