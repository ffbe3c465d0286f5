#!/usr/bin/env bash
# Container checks (issue 4), run by .ci/run after `make test`. As root, on a fresh machine:
#
#   bash .ci/containers.sh
#
# 1. static: hadolint on the Dockerfile; compose files through `docker-compose config` and the Compose spec schema;
#    `kubernetes-validate --strict -k 1.32.0` on k8s/ (the rest of the manifest checks are in tests/test_k8s.py);
# 2. a private Docker daemon (own data/exec roots and socket; no bridge, no iptables changes), stopped on exit;
# 3. the real Dockerfile built on a local stand-in for python:3.11-slim-bookworm (there is no registry here);
# 4. `docker run --network=none resnet-study --help`, then a tiny `train` in the container on Debian's Fashion-MNIST
#    writing to a mounted results dir that the host reads back with `resnet-study results query`;
# 5. `docker-compose up` of a tiny train plus results-api with a bearer token, HTTP checks against the service
#    (/healthz open, 401 without the token, 200 with it), `down -v`.
#
# Environment: CONTAINERS_STATE_DIR=DIR keeps the daemon's data root (images, build cache) in DIR between runs
# (default: a temp dir, removed on exit). VENV=DIR: the project's venv (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$PWD
VENV=${VENV:-$PROJECT/.venv}
T0=$(date +%s)
step() { echo "== containers: $* [$(( $(date +%s) - T0 )) s]"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (it starts a Docker daemon and uses debootstrap)"
[ -x "$VENV/bin/resnet-study" ] || fail "no $VENV/bin/resnet-study: run 'make venv' first"

# ---------------------------------------------------------------- system packages
apt_packages=(docker.io docker-compose debootstrap dataset-fashion-mnist)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
DOCKER=/usr/bin/docker  # the Debian client: another one earlier on PATH may lack BuildKit support
COMPOSE=/usr/bin/docker-compose

# ---------------------------------------------------------------- static checks
step "hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile

step "compose: docker-compose config, Compose spec schema"
"$COMPOSE" -f compose.yaml config -q
"$COMPOSE" -f compose.yaml -f compose.gpu.yaml config -q
RESNET_STUDY_BUCKET=s3://ci-bucket/study "$COMPOSE" -f compose.yaml -f compose.bucket.yaml config -q
CI_DATA_DIR=/nonexistent "$COMPOSE" -f compose.yaml -f .ci/compose.ci.yaml config -q
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml compose.gpu.yaml compose.bucket.yaml .ci/compose.ci.yaml

step "kubernetes-validate --strict -k 1.32.0"
"$VENV/bin/kubernetes-validate" --strict -k 1.32.0 k8s/sweep.yaml k8s/results-api.yaml k8s/fetch-data.yaml
kubectl_out=$(mktemp)
if command -v kubectl >/dev/null; then
  kubectl kustomize k8s/ > "$kubectl_out"
  "$VENV/bin/kubernetes-validate" --strict -k 1.32.0 "$kubectl_out"
else
  echo "kubectl not installed: kustomize build of k8s/ not checked"
fi
rm -f "$kubectl_out"

# ---------------------------------------------------------------- a private Docker daemon
WORK=$(mktemp -d /tmp/resnet-study-containers.XXXXXX)
STATE=${CONTAINERS_STATE_DIR:-$WORK/state}
mkdir -p "$STATE/docker" "$WORK/exec"
export DOCKER_HOST="unix://$WORK/docker.sock"
export COMPOSE_PROJECT_NAME=resnet-study-ci
DOCKERD_PID=
COMPOSE_UP=

cleanup() {
  local rc=$?
  set +e
  if [ -n "$COMPOSE_UP" ]; then
    "$COMPOSE" -f compose.yaml -f .ci/compose.ci.yaml down -v --remove-orphans >/dev/null 2>&1
  fi
  if [ -n "$DOCKERD_PID" ]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$DOCKERD_PID" 2>/dev/null && kill -9 "$DOCKERD_PID"
    wait "$DOCKERD_PID" 2>/dev/null
  fi
  # dockerd leaves its network namespace mounted; an interrupted debootstrap leaves proc/sys in the rootfs
  awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  if [ $rc -ne 0 ] && [ -f "$WORK/dockerd.log" ]; then
    echo "-- last lines of dockerd.log:"; tail -n 20 "$WORK/dockerd.log"
  fi
  rm -rf --one-file-system "$WORK"
  echo "== containers: $([ $rc -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - T0 )) s"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "starting dockerd (data root $STATE/docker)"
# Without these three flags dockerd creates a bridge and changes the host's iptables FORWARD policy.
dockerd --data-root "$STATE/docker" --exec-root "$WORK/exec" --pidfile "$WORK/docker.pid" \
  --host "$DOCKER_HOST" --bridge=none --iptables=false --ip-forward=false >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 100); do "$DOCKER" version >/dev/null 2>&1 && break; sleep 0.2; done
"$DOCKER" version --format 'docker engine {{.Server.Version}}' || fail "dockerd did not start"

# ---------------------------------------------------------------- the base image
BASE=python:3.11-slim-bookworm
if "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  echo "base $BASE: already in the daemon ($( "$DOCKER" image inspect -f '{{.Comment}}' "$BASE"))"
elif timeout 20 "$DOCKER" pull -q "$BASE" >/dev/null 2>&1; then
  echo "base $BASE: pulled from the registry"
else
  step "no registry: building a STAND-IN for $BASE with debootstrap"
  echo "################################################################################"
  echo "# The image below is built FROM A LOCAL STAND-IN for $BASE:"
  echo "# Debian bookworm minbase + python3 3.11, python3-venv, pip, ca-certificates."
  echo "################################################################################"
  mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$1 == "URIs:" && $2 !~ /security/ {print $2; exit}' || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs="$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log"; fail "debootstrap"; }
  # HTTPS is intercepted on these machines: the build's pip needs the host's extra CA certificates.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$DOCKER" import -c 'CMD ["python3"]' -m "stand-in for $BASE (debootstrap)" - "$BASE"
  rm -rf "$rootfs"
fi

# ---------------------------------------------------------------- the image
step "docker build -t resnet-study (df: $(df -h --output=avail "$STATE" | tail -n1 | tr -d ' ') free)"
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo "")
DOCKER_BUILDKIT=1 "$DOCKER" build --network=host --progress=plain --build-arg GIT_COMMIT="$COMMIT" -t resnet-study . \
  >"$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log"; fail "docker build"; }
grep -E '^#[0-9]+ (DONE|CACHED)' "$WORK/build.log" | tail -n 3 || true
"$DOCKER" image ls resnet-study --format 'image {{.Repository}}:{{.Tag}} {{.Size}}'
[ "$("$DOCKER" image inspect -f '{{.Config.User}}' resnet-study)" = "10001:10001" ] || fail "image does not run as 10001"
label=$("$DOCKER" image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' resnet-study)
[ "$label" = "$COMMIT" ] || fail "image label org.opencontainers.image.revision is '$label', not the commit '$COMMIT'"

step "docker run --network=none resnet-study --help"
help_text=$("$DOCKER" run --rm --network=none resnet-study --help)
grep -q "sweep" <<<"$help_text" || { echo "$help_text"; fail "--help does not list the commands"; }

step "tiny train in the container, results on a host dir"
data="$WORK/data"
mkdir -p "$data/FashionMNIST/raw" "$WORK/results"
cp /usr/share/datasets/fashion-mnist/*-ubyte.gz "$data/FashionMNIST/raw/"
chown 10001:10001 "$WORK/results"
"$DOCKER" run --rm --network=none -e OMP_NUM_THREADS=2 \
  -v "$data:/data:ro" -v "$WORK/results:/results" resnet-study \
  train --n 1 --dataset fashion-mnist --epochs 2 --train-limit 2000 --test-limit 500 --device cpu --progress json
# 10 classes: chance is 0.9 test error; two epochs on 2000 images reach about 0.5
rows=$("$VENV/bin/resnet-study" results query --results-dir "$WORK/results" --format csv \
  "SELECT layers, dataset, status, epochs_done, train_size, test_size, test_error < 0.7 AS learned,
          code_commit = '$COMMIT' AS commit_recorded, source_hash IS NOT NULL AS source_hashed, threads FROM runs" \
  | tr -d '\r')
echo "$rows"
grep -qx "8,fashion-mnist,completed,2,2000,500,True,True,True,2" <<<"$rows" \
  || fail "the host does not read the container's run, or its provenance (commit $COMMIT, source hash, 2 threads)"

# ---------------------------------------------------------------- compose
step "docker-compose up: a tiny train and the results service"
COMPOSE_UP=1
export CI_DATA_DIR="$data"
# compose.yaml publishes the service's port; a free one, so that nothing else on this machine is in the way
RESULTS_API_PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export RESULTS_API_PORT
# the service listens on the container's 0.0.0.0: it refuses to start without a token
RESNET_STUDY_API_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))')
export RESNET_STUDY_API_TOKEN
export TRAIN_ARGS="--n 1 --dataset fashion-mnist --epochs 1 --train-limit 1000 --test-limit 500 --device cpu --progress json"
compose=("$COMPOSE" -f compose.yaml -f .ci/compose.ci.yaml)
"${compose[@]}" up -d --no-build train results-api
train_id=$("${compose[@]}" ps -q train)
train_rc=$("$DOCKER" wait "$train_id")
"${compose[@]}" logs --no-color train | tail -n 3
[ "$train_rc" = 0 ] || fail "compose train exited with $train_rc"
api_id=$("${compose[@]}" ps -q results-api)
for _ in $(seq 90); do
  health=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$api_id")
  [ "$health" = healthy ] && break
  sleep 1
done
[ "$health" = healthy ] || { "${compose[@]}" logs --no-color results-api | tail -n 20; fail "results-api is $health"; }
api_ip=$("$DOCKER" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$api_id")
"$VENV/bin/python" - "http://127.0.0.1:$RESULTS_API_PORT" "http://$api_ip:8000" <<'EOF'
"""The service on the read-only results volume answers, lets in only the token, and sees the run the train service
just wrote."""
import json
import os
import sys
import urllib.error
import urllib.request

published, direct = sys.argv[1:]
try:  # the published port, as users reach it; without a userland proxy only the container's address answers
    urllib.request.urlopen(f"{published}/healthz", timeout=10).close()
    api = published
except OSError as e:
    print(f"published port {published} does not answer ({e}); using the container address {direct}")
    api = direct
with urllib.request.urlopen(f"{api}/healthz", timeout=10) as r:  # open to probes: no token
    health = json.load(r)
    print(f"GET {api}/healthz", r.status, health)
assert health["runs"] == 1, health
for headers in ({}, {"Authorization": "Bearer not-the-token"}):
    try:
        urllib.request.urlopen(urllib.request.Request(f"{api}/runs", headers=headers), timeout=10)
        raise AssertionError(f"GET /runs with {headers or 'no token'} was let in")
    except urllib.error.HTTPError as e:
        assert e.code == 401 and e.headers["WWW-Authenticate"].startswith("Bearer"), (e.code, dict(e.headers))
        print(f"GET /runs with {'a wrong' if headers else 'no'} token: {e.code}, {json.load(e)['detail']}")
token = {"Authorization": f"Bearer {os.environ['RESNET_STUDY_API_TOKEN']}"}
with urllib.request.urlopen(urllib.request.Request(f"{api}/runs?status=completed", headers=token), timeout=10) as r:
    runs = json.load(r)
assert [(x["layers"], x["dataset"], x["epochs_done"], x["train_size"]) for x in runs] == [(8, "fashion-mnist", 1, 1000)], runs
print(f"GET /runs?status=completed: {runs[0]['run_id']}, test error {runs[0]['test_error']:.3f}")
EOF
"${compose[@]}" down -v --remove-orphans
COMPOSE_UP=
[ -z "$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")" ] \
  || fail "compose down -v left volumes behind"
step "all container checks passed"
