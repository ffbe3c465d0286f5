"""compose.yaml, compose.gpu.yaml and the Dockerfile, checked without a Docker engine (.ci/containers.sh runs them).

- `docker-compose config` (Compose v1, the one installable here) and the Compose specification's JSON schema
  (check-jsonschema's bundled copy, with the network made unreachable to prove it needs none) accept the files, and
  reject a broken one;
- every service's command, after Compose's variable interpolation, parses with the real CLI;
- the wiring: results mounted read-only into the service, healthcheck on /healthz of the port it serves, the GPU
  reservation only in the override, the image's pins equal to pyproject's.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from resnet_study.jobs import sweep as sw
from tests.helpers import ROOT, dockerfile_uid, parse_command

COMPOSE = shutil.which("docker-compose") or "/usr/bin/docker-compose"
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "http_proxy":
              "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


def compose_config(*files: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    if not Path(COMPOSE).exists():
        pytest.fail("docker-compose is not installed: `apt-get install docker-compose` (make test installs it)")
    args = [COMPOSE, "--project-directory", str(cwd)]
    for f in files:
        args += ["-f", f]
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TRAIN_", "SWEEP_", "CI_", "RESULTS_API_", "RESNET_STUDY_API_", "RESNET_STUDY_BUCKET",
                                  "RESNET_STUDY_DATA_BUCKET", "AWS_"))}
    return subprocess.run([*args, "config"], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**clean, **NO_NETWORK, **(env or {})})


def services(*files: str, env: dict | None = None) -> dict:
    proc = compose_config(*files, env=env)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["services"]


def check_jsonschema(*paths: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **NO_NETWORK})


def test_compose_files_are_valid_for_compose_v1_and_the_compose_spec():
    for files in (["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]):
        assert services(*files).keys() == {"train", "sweep", "results-api"}
    ci = services("compose.yaml", ".ci/compose.ci.yaml", env={"CI_DATA_DIR": "/srv/data", "RESULTS_API_PORT": "18123"})
    assert ci["train"]["network_mode"] == "none" and "/srv/data:/data:ro" in ci["train"]["volumes"]
    assert ci["results-api"]["ports"] == [{"published": 18123, "target": 8000}]
    proc = check_jsonschema(ROOT / "compose.yaml", ROOT / "compose.gpu.yaml", ROOT / "compose.bucket.yaml",
                            ROOT / ".ci" / "compose.ci.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_bucket_override_points_every_service_at_the_bucket():
    """compose.bucket.yaml: results (and data) in a bucket, the AWS variables passed from the shell only when set
    there, the cache on the data volume; refused without the bucket, with a line that says what to set."""
    env = {"RESNET_STUDY_BUCKET": "s3://my-bucket/study", "RESNET_STUDY_DATA_BUCKET": "s3://my-bucket/datasets",
           "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "RESNET_STUDY_API_TOKEN": "t0ken"}
    svc = services("compose.yaml", "compose.bucket.yaml", env=env)
    for name in ("train", "sweep", "results-api"):
        e = svc[name]["environment"]
        assert e["RESNET_STUDY_RESULTS"] == "s3://my-bucket/study" and e["RESNET_STUDY_DATA"] == "s3://my-bucket/datasets"
        assert e["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE" and e["AWS_SECRET_ACCESS_KEY"] is None  # unset: left out
        path, params = parse_command(["resnet-study", *shlex.split(svc[name]["command"]),
                                      "--results-dir", e["RESNET_STUDY_RESULTS"]])
        assert params["results_dir"] == "s3://my-bucket/study"
    assert svc["train"]["environment"]["RESNET_STUDY_CACHE"] == "/data/cache" and "data:/data:rw" in svc["train"]["volumes"]
    assert svc["results-api"]["environment"]["RESNET_STUDY_API_TOKEN"] == "t0ken"
    proc = compose_config("compose.yaml", "compose.bucket.yaml")
    assert proc.returncode != 0 and "set RESNET_STUDY_BUCKET to s3://bucket/prefix" in proc.stderr


def test_the_validators_reject_a_broken_compose_file(tmp_path):
    broken = tmp_path / "compose.yaml"
    text = (ROOT / "compose.yaml").read_text()
    broken.write_text(text.replace("    healthcheck:", "    healthchek:"))
    proc = check_jsonschema(broken)
    assert proc.returncode == 1 and "healthchek" in proc.stdout
    proc = compose_config(str(broken), cwd=tmp_path)
    assert proc.returncode != 0 and "healthchek" in proc.stderr
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "compose.ci.yaml").write_text((ROOT / ".ci" / "compose.ci.yaml").read_text())
    proc = compose_config(str(ROOT / "compose.yaml"), str(tmp_path / "ci" / "compose.ci.yaml"))
    assert proc.returncode != 0 and "set by .ci/containers.sh" in proc.stderr  # CI_DATA_DIR is required


@pytest.mark.parametrize("env", [
    {},
    {"TRAIN_ARGS": "--n 1 --dataset fashion-mnist --epochs 1 --train-limit 1000 --test-limit 500 --device cpu",
     "SWEEP_SPEC": "seed-study.yaml", "SWEEP_PARALLEL": "3", "SWEEP_ARGS": "--device cuda --compile"},
])
def test_every_service_command_parses_with_the_real_cli(env):
    for name, svc in services("compose.yaml", env=env).items():
        command = svc["command"] if isinstance(svc["command"], list) else shlex.split(svc["command"])
        path, params = parse_command(["resnet-study", *command])  # the image's ENTRYPOINT is resnet-study
        if name == "train":
            assert path == "resnet-study train"
            if env:
                assert (params["n"], params["epochs"], params["train_limit"]) == (1, 1, 1000)
        if name == "sweep":
            assert path == "resnet-study sweep local"
            assert len(sw.load(params["spec"])) >= 2  # a spec shipped with the package (in the image too)
            assert params["parallel"] == int(env.get("SWEEP_PARALLEL", 1))
        if name == "results-api":
            assert path == "resnet-study serve" and params["host"] == "0.0.0.0"


def test_results_api_reads_the_results_volume_read_only_and_is_health_checked():
    svc = services("compose.yaml")
    api = svc["results-api"]
    serve_port = parse_command(["resnet-study", *shlex.split(api["command"])])[1]["port"]
    assert "results:/results:ro" in api["volumes"]
    assert [p["target"] for p in api["ports"]] == [serve_port]
    probe = " ".join(api["healthcheck"]["test"])
    assert f"http://127.0.0.1:{serve_port}/healthz" in probe
    for name in ("train", "sweep"):
        assert {"data:/data:rw", "results:/results:rw"} <= set(svc[name]["volumes"])
        assert svc[name]["environment"] == {"RESNET_STUDY_DATA": "/data", "RESNET_STUDY_RESULTS": "/results"}
    assert "deploy" not in svc["train"]  # the GPU reservation only in compose.gpu.yaml: `up` works without NVIDIA
    gpu = services("compose.yaml", "compose.gpu.yaml")
    for name in ("train", "sweep"):
        (device,) = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == 1
    assert "deploy" not in gpu["results-api"]


def test_the_results_service_takes_its_token_from_the_shell():
    """It listens on the container's 0.0.0.0, which `serve` refuses without a token: compose passes the shell's."""
    api = services("compose.yaml", env={"RESNET_STUDY_API_TOKEN": "t0ken"})["results-api"]
    assert api["environment"] == {"RESNET_STUDY_DATA": "/data", "RESNET_STUDY_RESULTS": "/results",
                                  "RESNET_STUDY_API_TOKEN": "t0ken"}
    params = parse_command(["resnet-study", *shlex.split(api["command"])])[1]
    assert params["insecure_no_auth"] is False and params["token_file"] is None
    assert services("compose.yaml")["results-api"]["environment"]["RESNET_STUDY_API_TOKEN"] == ""  # unset: refused


def test_the_healthcheck_route_exists_in_the_results_service(tmp_path):
    from resnet_study.core import store
    from resnet_study.results_api.app import create_app

    schema = create_app(store.results_location(tmp_path), token="t0ken").openapi()
    assert "/healthz" in schema["paths"] and "security" not in schema["paths"]["/healthz"]["get"]  # no token needed


def test_dockerfile_pins_match_pyproject_and_deps_come_before_the_code():
    text = (ROOT / "Dockerfile").read_text()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d for d in deps if d.startswith(("torch==", "torchvision=="))}
    assert pins == {"torch==2.14.1", "torchvision==0.29.1"}
    assert re.search(r"pip install torch==2\.14\.1 torchvision==0\.29\.1\b", text)
    lines = text.splitlines()
    first = lambda pattern: next(i for i, line in enumerate(lines) if re.search(pattern, line))  # noqa: E731
    assert first(r"^COPY pyproject.toml") < first(r"pip install torch") < first(r"pip install -r") \
        < first(r"^COPY (core|jobs|results_api)")
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["resnet-study"\]$', text, re.M)
    assert re.search(r'^VOLUME \["/data", "/results"\]$', text, re.M)
    assert "RESNET_STUDY_DATA=/data" in text and "RESNET_STUDY_RESULTS=/results" in text
    assert dockerfile_uid() != 0
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1:3] == ["*", "!pyproject.toml"]  # everything but what the image copies


def test_hadolint_passes():
    proc = subprocess.run([str(Path(sys.executable).with_name("hadolint")), str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
