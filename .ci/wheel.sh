#!/usr/bin/env bash
# The built wheel, installed as a user installs it (not editable, a fresh venv): its only top-level import package is
# resnet_study, and the command works from it: --help, `model --n 3 --json`, a tiny `train` on real Fashion-MNIST.
#
#   bash .ci/wheel.sh          (after `make venv`: uses .venv's pip to build)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$PWD/.venv}
WORK=$(mktemp -d /tmp/resnet-study-wheel.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
step() { echo "== wheel: $*"; }

step "pip wheel --no-deps ."
"$VENV/bin/pip" wheel -q --no-deps --disable-pip-version-check -w "$WORK/dist" . 2>&1 | grep -v "^WARNING: Location" || true
wheel=$(ls "$WORK"/dist/resnet_study-*.whl)
tops=$("$VENV/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print(" ".join(sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))})))
PY
)
echo "top-level entries of $(basename "$wheel"): $tops"
[ "$tops" = "resnet_study" ] || { echo "FAIL: the wheel installs more than resnet_study: $tops" >&2; exit 1; }

step "a fresh venv, the wheel installed (not editable), from a directory without the checkout"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --disable-pip-version-check "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
cd "$WORK"
"$WORK/venv/bin/python" -c 'import resnet_study.core, sys; assert "site-packages" in resnet_study.core.__file__, resnet_study.core.__file__'
"$WORK/venv/bin/resnet-study" --help > /dev/null
model=$("$WORK/venv/bin/resnet-study" model --n 3 --json)
echo "resnet-study model --n 3 --json: $model"
[ "$model" = '{"layers": 20, "params": 269722}' ] || { echo "FAIL: model --n 3 --json printed $model" >&2; exit 1; }
OMP_NUM_THREADS=2 "$WORK/venv/bin/resnet-study" train --n 1 --dataset fashion-mnist --epochs 1 --train-limit 1000 \
  --test-limit 200 --device cpu --progress json --results-dir "$WORK/results" > /dev/null
"$WORK/venv/bin/resnet-study" results query --results-dir "$WORK/results" --format csv \
  "SELECT status, epochs_done, code_commit IS NULL AS no_checkout, length(source_hash) AS hash FROM runs" \
  | tr -d '\r' | tee "$WORK/rows.csv"
grep -qx "completed,1,True,16" "$WORK/rows.csv" || { echo "FAIL: the wheel's tiny train" >&2; exit 1; }
step "passed"
