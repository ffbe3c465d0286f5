#!/usr/bin/env bash
# What a results bucket costs against a disk (issue 18), run from the repository root on an otherwise idle machine:
#
#   bench/bucket.sh            # needs the dev install (`make test` makes it): moto's S3 server on 127.0.0.1
#
# 1. a run's per-epoch overhead: the same `train` (ResNet-20, Fashion-MNIST, 1 280 images, 5 epochs) into a folder
#    and into the bucket, wall-clock each, (bucket - disk) / epochs;
# 2. the service over a bucket-backed store of 10 000 synthetic runs: `bench api --results-dir s3://...`, next to
#    the same store on a disk.
# The S3 server here is moto's, one request at a time, on this machine: it shows the protocol's request count and
# its local cost, not a real bucket's network latency (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=bench/results/bucket-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
PORT=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN/python" -m tests.s3_server "$PORT" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
  AWS_DEFAULT_REGION=us-east-1 RESNET_STUDY_CACHE=$OUT/cache OMP_NUM_THREADS=2
for _ in $(seq 50); do curl -s "$AWS_ENDPOINT_URL" >/dev/null && break; sleep 0.2; done
"$BIN/python" -c 'import boto3; boto3.client("s3").create_bucket(Bucket="bench")'
uptime | tee "$OUT/machine.txt"

train=(train --n 3 --dataset fashion-mnist --epochs 5 --train-limit 1280 --test-limit 1000 --device cpu
       --progress json)
timed() {  # label, results dir
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN/resnet-study" "${train[@]}" --results-dir "$2" >"$OUT/$1.jsonl" 2>"$OUT/$1.log"
  t1=$(date +%s.%N)
  python3 -c "print(f'$1: {$t1 - $t0:.2f} s wall for 5 epochs')" | tee -a "$OUT/train.txt"
}
echo; echo "== train, disk against bucket"
for round in 1 2; do
  timed "disk-$round" "$OUT/disk-$round"
  timed "bucket-$round" "s3://bench/train-$round"
done
python3 - "$OUT" <<'PY' | tee -a "$OUT/train.txt"
import re, sys
t = {m[1]: float(m[2]) for m in re.finditer(r"(\S+): ([0-9.]+) s wall", open(sys.argv[1] + "/train.txt").read())}
for r in (1, 2):
    print(f"round {r}: bucket - disk = {(t[f'bucket-{r}'] - t[f'disk-{r}']) / 5 * 1000:.0f} ms per epoch")
PY

echo; echo "== bench api, 10 000 runs: disk, then bucket"
"$BIN/resnet-study" bench api --runs 10000 --requests 30 | tee "$OUT/api-disk.txt"
"$BIN/resnet-study" bench api --runs 10000 --requests 30 --results-dir s3://bench/api | tee "$OUT/api-bucket.txt"
echo; echo "saved under $OUT"
