"""The Kubernetes manifests (k8s/): what `kubernetes-validate --strict` checks, and what it misses.

kubernetes-validate checks types and field names against the 1.32 schemas, but not enum values (restartPolicy,
completionMode), resource quantities, names that must match across objects (claimName <-> PVC, ConfigMap, Service
selector <-> pod labels), completions <-> the spec's cell count, nor whether the container commands exist. `problems()`
checks those; the mutation tests show that each check fails when it should.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from resnet_study.core import EXIT_RETRY, EXIT_SIGTERM, EXIT_USER_ERROR, datasets
from resnet_study.jobs import kubernetes, sweep as sw
from tests.helpers import ROOT, cli_env, dockerfile_uid, parse_command, run_cli

K8S = ROOT / "k8s"
MANIFESTS = ("sweep.yaml", "results-api.yaml")


def load_docs() -> list[dict]:
    return [d for name in MANIFESTS for d in yaml.safe_load_all((K8S / name).read_text()) if d]


# ---------------------------------------------------------------- quantities, as the API server parses them

SUFFIX = {"": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6,
          "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
          "Pi": 2**50, "Ei": 2**60}
QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def parse_quantity(value) -> Decimal:
    """A Kubernetes resource.Quantity (e.g. 8Gi, 250m, 4, 1e3) as a number; ValueError if it is none."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a quantity: {value!r}")
    m = QUANTITY.match(str(value))
    if not m:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = Decimal(m.group(1)), m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * SUFFIX[suffix]


def test_parse_quantity():
    assert parse_quantity("8Gi") == 8 * 2**30 and parse_quantity("250m") == Decimal("0.25")
    assert parse_quantity(4) == 4 and parse_quantity("1e3") == 1000 and parse_quantity("1.5G") == 1_500_000_000
    for bad in ("8GB", "8 Gi", "", "Gi", "1.2.3", True, None, "8gi"):
        with pytest.raises(ValueError):
            parse_quantity(bad)


# ---------------------------------------------------------------- what kubernetes-validate misses


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Job", "Deployment"):
            yield d, d["spec"]["template"]


def problems(docs: list[dict]) -> list[str]:
    out: list[str] = []
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") != "resnet-study":
            out.append(f"{d['kind']}/{d['metadata']['name']}: no app.kubernetes.io/name label")
    pvcs, configmaps = by_kind.get("PersistentVolumeClaim", {}), by_kind.get("ConfigMap", {})

    def quantity(where, value):
        try:
            return parse_quantity(value)
        except ValueError as e:
            out.append(f"{where}: {e}")

    for name, pvc in pvcs.items():
        if pvc["spec"].get("accessModes") != ["ReadWriteMany"]:
            out.append(f"PVC {name}: accessModes must be [ReadWriteMany] (pods on many nodes share it)")
        quantity(f"PVC {name} storage", pvc["spec"]["resources"]["requests"]["storage"])

    uid = dockerfile_uid()
    for owner, template in pod_specs(docs):
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        spec = template["spec"]
        sec = spec.get("securityContext", {})
        if sec.get("runAsNonRoot") is not True:
            out.append(f"{where}: runAsNonRoot must be true")
        if sec.get("runAsUser") != uid:
            out.append(f"{where}: runAsUser {sec.get('runAsUser')} is not the image's USER {uid}")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in pvcs:
                out.append(f"{where}: claimName {v['persistentVolumeClaim']['claimName']} is no PVC here")
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                out.append(f"{where}: configMap {v['configMap']['name']} is no ConfigMap here")
            if "emptyDir" in v and "sizeLimit" in v["emptyDir"]:
                quantity(f"{where} emptyDir {v['name']}", v["emptyDir"]["sizeLimit"])
        for c in spec["containers"]:
            cw = f"{where} container {c['name']}"
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                if m["name"] not in volumes:
                    out.append(f"{cw}: volumeMount {m['name']} has no volume")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            for name in ("RESNET_STUDY_RESULTS", "RESNET_STUDY_DATA"):
                value = env.get(name)
                if name == "RESNET_STUDY_DATA" and value is None:
                    continue  # the service reads no data set
                if str(value).startswith("s3://"):
                    refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
                    if kubernetes.S3_SECRET not in refs:
                        out.append(f"{cw}: {name}={value} without the credentials Secret {kubernetes.S3_SECRET}")
                    if env.get("RESNET_STUDY_CACHE") not in mounts:
                        out.append(f"{cw}: {name}={value} with no scratch volume for RESNET_STUDY_CACHE")
                elif value not in mounts:
                    out.append(f"{cw}: {name}={value} is not a mounted volume")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for key, value in res.get(kind, {}).items():
                    quantity(f"{cw} {kind}.{key}", value)
            for key in ("cpu", "memory"):
                if key not in res.get("requests", {}):
                    out.append(f"{cw}: no {key} request")
            req, lim = res.get("requests", {}), res.get("limits", {})
            for key in set(req) & set(lim):
                a, b = quantity(f"{cw} requests.{key}", req[key]), quantity(f"{cw} limits.{key}", lim[key])
                if a is not None and b is not None and a > b:
                    out.append(f"{cw}: requests.{key} {req[key]} exceeds limits.{key} {lim[key]}")
            try:
                path, params = parse_command(c["command"] + c.get("args", []))
            except Exception as e:  # noqa: BLE001 - any parse failure is the finding
                out.append(f"{cw}: command {c.get('command')} does not parse with the CLI: {type(e).__name__}: {e}")
                continue
            if path == "resnet-study sweep cell":
                spec_path = Path(params["spec"])
                mount = mounts.get(str(spec_path.parent))
                cm = configmaps.get(volumes.get(mount["name"], {}).get("configMap", {}).get("name")) if mount else None
                if cm is None or spec_path.name not in cm.get("data", {}):
                    out.append(f"{cw}: the spec {spec_path} is not a key of a ConfigMap mounted at {spec_path.parent}")
                    continue
                cells = len(spec_from_text(cm["data"][spec_path.name]))
                if owner["kind"] == "Job" and owner["spec"].get("completions") != cells:
                    out.append(f"{where}: completions {owner['spec'].get('completions')} != {cells} cells")
            if path == "resnet-study serve":
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                if params["port"] not in ports.values():
                    out.append(f"{cw}: serve listens on {params['port']}, not a containerPort {ports}")
                for probe in ("readinessProbe", "livenessProbe"):
                    get = c.get(probe, {}).get("httpGet")
                    if not get or get.get("path") != "/healthz" or get.get("port") not in (*ports, *ports.values()):
                        out.append(f"{cw}: {probe} must GET /healthz on a container port")
                if not c.get("securityContext", {}).get("readOnlyRootFilesystem"):
                    out.append(f"{cw}: readOnlyRootFilesystem must be true")
                if not str(env.get("RESNET_STUDY_RESULTS")).startswith("s3://") and \
                        not mounts.get("/results", {}).get("readOnly"):
                    out.append(f"{cw}: the results volume must be mounted readOnly")
                token_file = Path(env.get("RESNET_STUDY_API_TOKEN_FILE") or "/nowhere")
                secret = volumes.get(mounts.get(str(token_file.parent), {}).get("name"), {}).get("secret")
                keys = [item["path"] for item in (secret or {}).get("items", [])]
                if not params["insecure_no_auth"] and (secret is None or keys and token_file.name not in keys):
                    out.append(f"{cw}: serve on {params['host']} needs its token: RESNET_STUDY_API_TOKEN_FILE must be "
                               f"a file of a mounted Secret volume")

    for name, job in by_kind.get("Job", {}).items():
        spec = job["spec"]
        if spec.get("completionMode") != "Indexed":
            out.append(f"Job {name}: completionMode must be Indexed (got {spec.get('completionMode')!r})")
        if spec["template"]["spec"].get("restartPolicy") != "Never":
            out.append(f"Job {name}: restartPolicy must be Never (got {spec['template']['spec'].get('restartPolicy')!r})")
        if not 1 <= spec.get("parallelism", 0) <= spec.get("completions", 0):
            out.append(f"Job {name}: parallelism must be 1..completions")
        if not isinstance(spec.get("backoffLimitPerIndex"), int):
            out.append(f"Job {name}: backoffLimitPerIndex is not set")
        rules = spec.get("podFailurePolicy", {}).get("rules", [])
        if not any(r.get("action") == "Ignore" and any(c.get("type") == "DisruptionTarget"
                                                         for c in r.get("onPodConditions", [])) for r in rules):
            out.append(f"Job {name}: podFailurePolicy must Ignore DisruptionTarget (preemption burns no retry)")
        if pod_failure_action(rules, exit_code=EXIT_USER_ERROR) != "FailIndex":
            out.append(f"Job {name}: podFailurePolicy must FailIndex on exit {EXIT_USER_ERROR} (a bad spec)")
        if spec["template"]["spec"].get("terminationGracePeriodSeconds", 30) < sw.GRACE_SECONDS:
            out.append(f"Job {name}: terminationGracePeriodSeconds must give a cell {sw.GRACE_SECONDS} s to "
                       f"checkpoint on SIGTERM")
        annotations = job["metadata"].get("annotations", {})
        envs = [{e["name"]: e.get("value") for e in c.get("env", [])} for c in spec["template"]["spec"]["containers"]]
        if annotations.get(kubernetes.INDEX_MODE_ANNOTATION) != sw.INDEX_MODE or any(
                e.get(sw.INDEX_MODE_ENV) != sw.INDEX_MODE for e in envs):
            out.append(f"Job {name}: the index mode ({kubernetes.INDEX_MODE_ANNOTATION} annotation, {sw.INDEX_MODE_ENV} "
                       f"env) must say {sw.INDEX_MODE}")
        if spec.get("podReplacementPolicy") != "Failed":
            out.append(f"Job {name}: podReplacementPolicy must be Failed (a replacement pod never overlaps the old one)")
        for c in spec["template"]["spec"]["containers"]:
            ref = next((e.get("valueFrom", {}).get("resourceFieldRef") for e in c.get("env", [])
                        if e["name"] == "RESNET_STUDY_CPU_REQUEST"), None)
            if not ref or ref.get("resource") != "requests.cpu" or ref.get("containerName") != c["name"]:
                out.append(f"Job {name} container {c['name']}: RESNET_STUDY_CPU_REQUEST must come from its own "
                           f"requests.cpu (downward API): the run's threads")
        gpus = [c["resources"].get("limits", {}).get("nvidia.com/gpu") for c in spec["template"]["spec"]["containers"]]
        if gpus != [1]:
            out.append(f"Job {name}: limits nvidia.com/gpu must be 1 (got {gpus})")

    deployments = by_kind.get("Deployment", {})
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        if not dep["spec"]["selector"]["matchLabels"].items() <= labels.items():
            out.append(f"Deployment {name}: selector does not match its pod labels")
    for name, svc in by_kind.get("Service", {}).items():
        selector = svc["spec"].get("selector", {})
        targets = [d for d in deployments.values()
                   if selector and selector.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()]
        if len(targets) != 1:
            out.append(f"Service {name}: selector {selector} matches {len(targets)} Deployments' pods, not 1")
            continue
        ports = {p.get("name"): p["containerPort"] for c in targets[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if p.get("targetPort", p["port"]) not in (*ports, *ports.values()):
                out.append(f"Service {name}: targetPort {p.get('targetPort')} is no container port of its pods")
    return out


def pod_failure_action(rules: list[dict], exit_code: int | None = None, conditions: tuple[str, ...] = (),
                       container: str = "cell") -> str:
    """What a Job's podFailurePolicy does with a failed pod, as Kubernetes decides it (batch/v1 PodFailurePolicy):
    the first rule that matches wins; onExitCodes matches the container's exit code (In / NotIn), onPodConditions
    a condition of the pod that is True; no rule matching means Count (a retry within backoffLimitPerIndex)."""
    for rule in rules:
        codes = rule.get("onExitCodes")
        if codes and exit_code is not None and codes.get("containerName", container) == container:
            inside = exit_code in codes["values"]
            if inside == (codes["operator"] == "In"):
                return rule["action"]
        if any(c["type"] in conditions and c.get("status", "True") == "True" for c in rule.get("onPodConditions", [])):
            return rule["action"]
    return "Count"


def spec_from_text(text: str) -> sw.Sweep:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spec.yaml"
        path.write_text(text)
        return sw.load(path)


# ---------------------------------------------------------------- the tests


def test_sweep_yaml_is_the_rendered_seed_study():
    rendered = run_cli("sweep", "render", "jobs/seed-study.yaml").stdout
    assert (K8S / "sweep.yaml").read_text() == rendered, \
        "k8s/sweep.yaml is stale: run `resnet-study sweep render jobs/seed-study.yaml > k8s/sweep.yaml`"


def test_manifests_pass_kubernetes_validate_strict():
    proc = subprocess.run([str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "-k", "1.32.0",
                           *(str(K8S / m) for m in MANIFESTS)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == len(load_docs())


def test_manifests_have_none_of_the_problems_kubernetes_validate_misses():
    docs = load_docs()
    assert {d["kind"] for d in docs} == {"PersistentVolumeClaim", "ConfigMap", "Job", "Deployment", "Service"}
    assert problems(docs) == []


def test_the_configmap_ships_the_spec_file_and_the_pods_run_its_cells():
    docs = load_docs()
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["data"] == {"seed-study.yaml": (ROOT / "jobs" / "seed-study.yaml").read_text()}
    (job,) = [d for d in docs if d["kind"] == "Job"]
    sweep = sw.load(ROOT / "jobs" / "seed-study.yaml")
    assert job["spec"]["completions"] == len(sweep) == 18 and len(sweep.runs) == 54  # one index per cell of 3 seeds
    (container,) = job["spec"]["template"]["spec"]["containers"]
    # the real CLI, as a process, accepts the pod's command (each pod then reads JOB_COMPLETION_INDEX)
    proc = run_cli(*container["command"][1:], "--help")
    assert "Usage: resnet-study sweep cell" in proc.stdout and "--index" in proc.stdout


def test_the_failure_policy_fails_a_bad_spec_at_once_and_retries_what_may_pass(tmp_path):
    (job,) = [d for d in load_docs() if d["kind"] == "Job"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert pod_failure_action(rules, exit_code=EXIT_USER_ERROR) == "FailIndex"  # a bad spec: no retry can help
    assert pod_failure_action(rules, exit_code=EXIT_SIGTERM) == "Ignore"  # stopped cleanly, checkpointed
    assert pod_failure_action(rules, exit_code=137, conditions=("DisruptionTarget",)) == "Ignore"  # preempted
    assert pod_failure_action(rules, exit_code=EXIT_RETRY) == "Count"  # data not there yet, no GPU on the node
    assert pod_failure_action(rules, exit_code=1) == "Count"  # a crash: retried up to backoffLimitPerIndex
    # the pod's own command with a bad spec exits with the code the first rule fails the index on
    (container,) = job["spec"]["template"]["spec"]["containers"]
    bad = tmp_path / "seed-study.yaml"
    bad.write_text("grid: {n: [3]}\nfixed: {epochs: ten}\n")
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    proc = run_cli(*container["command"][1:3], bad, *container["command"][4:], check=False,
                   env=cli_env(JOB_COMPLETION_INDEX="0", **{k: v for k, v in env.items() if k.startswith("RESNET")
                                                            and k not in ("RESNET_STUDY_DATA", "RESNET_STUDY_RESULTS")}))
    assert proc.returncode == EXIT_USER_ERROR and proc.stderr.count("\n") == 1, proc.stderr
    assert "fixed.epochs: Input should be a valid integer" in proc.stderr


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    assert sorted(kust["resources"]) == sorted(MANIFESTS)
    assert sorted(p.name for p in K8S.glob("*.yaml")) == sorted([*MANIFESTS, "kustomization.yaml", "fetch-data.yaml"])


def test_fetch_data_job_fills_the_sweeps_data_claim():
    """k8s/fetch-data.yaml (applied by hand, before the sweep): same claim as sweep.yaml, torchvision's layout."""
    docs = [d for d in yaml.safe_load_all((K8S / "fetch-data.yaml").read_text()) if d]
    proc = subprocess.run([str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "-k", "1.32.0",
                           str(K8S / "fetch-data.yaml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.count("passed") == 2, proc.stdout + proc.stderr
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert pvc == next(d for d in load_docs() if d["kind"] == "PersistentVolumeClaim"
                       and d["metadata"]["name"] == kubernetes.DATA_CLAIM)
    (job,) = [d for d in docs if d["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == kubernetes.DATA_CLAIM
    (c,) = pod["containers"]
    assert c["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert c["command"][:2] == ["python", "-c"]
    code = c["command"][2]
    compile(code, "fetch-data", "exec")
    # torchvision puts them where core.data looks (/data/cifar-10-batches-py, ...): every built-in of the registry
    assert all(f"tv.{spec.torchvision}" in code for spec in datasets.BUILTINS.values())


def mutate(path: str, value):
    """A function that sets `path` ("Kind: key key 0 key", list indices as numbers) in the first doc of that kind."""
    kind, _, rest = path.partition(":")

    def apply(docs):
        doc = next(d for d in docs if d["kind"] == kind)
        keys = rest.split()
        target = doc
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target[k]
        last = keys[-1]
        if value is DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
        return docs
    return apply


DELETE = object()


@pytest.mark.parametrize("change, finding", [
    (mutate("Job: spec template spec restartPolicy", "OnFailure"), "restartPolicy must be Never"),
    (mutate("Job: spec completionMode", "Indexd"), "completionMode must be Indexed"),
    (mutate("Job: spec completions", 54), "completions 54 != 18 cells"),
    (mutate("Job: spec parallelism", 60), "parallelism must be 1..completions"),
    (mutate("Job: spec backoffLimitPerIndex", DELETE), "backoffLimitPerIndex is not set"),
    (mutate("Job: spec podFailurePolicy rules 1 action", "Count"), "podFailurePolicy must Ignore DisruptionTarget"),
    (mutate("Job: spec podFailurePolicy rules 0 action", "Count"), "podFailurePolicy must FailIndex on exit 2"),
    (mutate("Job: spec template spec terminationGracePeriodSeconds", DELETE), "terminationGracePeriodSeconds"),
    (mutate("Job: metadata annotations resnet-study/index", "run"), "the index mode"),
    (mutate("Job: spec template spec containers 0 env 3 value", "run"), "the index mode"),
    (mutate("Job: spec podReplacementPolicy", "TerminatingOrFailed"), "podReplacementPolicy must be Failed"),
    (mutate("Job: spec template spec containers 0 env 2 valueFrom resourceFieldRef resource", "limits.cpu"),
     "RESNET_STUDY_CPU_REQUEST must come from its own requests.cpu"),
    (mutate("Job: spec template spec containers 0 resources requests memory", "8GB"), "not a quantity: '8GB'"),
    (mutate("Job: spec template spec containers 0 resources limits memory", "4Gi"), "requests.memory 9Gi exceeds"),
    (mutate("Job: spec template spec containers 0 resources limits nvidia.com/gpu", DELETE), "nvidia.com/gpu must be 1"),
    (mutate("Job: spec template spec volumes 1 persistentVolumeClaim claimName", "results"), "claimName results is no PVC"),
    (mutate("Job: spec template spec containers 0 command 3", "/spec/seed.yaml"), "is not a key of a ConfigMap"),
    (mutate("Job: spec template spec containers 0 command 2", "runn"), "No such command 'runn'"),
    (mutate("Job: spec template spec containers 0 command 4", "--progres"), "No such option: --progres"),
    (mutate("Job: spec template spec securityContext runAsNonRoot", False), "runAsNonRoot must be true"),
    (mutate("Job: spec template spec securityContext runAsUser", 1000), "is not the image's USER 10001"),
    (mutate("Job: spec template spec containers 0 env 1 value", "/out"), "RESNET_STUDY_RESULTS=/out is not a mounted"),
    (mutate("Deployment: spec template spec containers 0 command 5", "eighty"), "does not parse with the CLI"),
    (mutate("Deployment: spec template spec containers 0 command 5", "9000"), "serve listens on 9000"),
    (mutate("Deployment: spec template spec containers 0 readinessProbe httpGet path", "/health"), "readinessProbe"),
    (mutate("Deployment: spec template spec containers 0 securityContext readOnlyRootFilesystem", False),
     "readOnlyRootFilesystem"),
    (mutate("Deployment: spec template spec containers 0 volumeMounts 0 readOnly", False), "mounted readOnly"),
    (mutate("Deployment: spec template spec containers 0 env 2 value", "/etc/token"), "needs its token"),
    (mutate("Deployment: spec template spec volumes 2 secret items 0 path", "tok"), "needs its token"),
    (mutate("Deployment: spec template spec containers 0 volumeMounts 2", DELETE), "needs its token"),
    (mutate("Deployment: spec template metadata labels app.kubernetes.io/component", "api"), "selector does not match"),
    (mutate("Service: spec selector app.kubernetes.io/component", "results"), "matches 0 Deployments"),
    (mutate("Service: spec ports 0 targetPort", "web"), "targetPort web is no container port"),
    (mutate("PersistentVolumeClaim: spec accessModes", ["ReadWriteOnce"]), "accessModes must be [ReadWriteMany]"),
    (mutate("PersistentVolumeClaim: spec resources requests storage", "10 Gi"), "not a quantity: '10 Gi'"),
])
def test_each_check_catches_its_mistake(change, finding):
    docs = load_docs()
    found = problems(change(copy.deepcopy(docs)))
    assert any(finding in p for p in found), found


def test_render_options_and_a_cpu_cluster(tmp_path):
    out = run_cli("sweep", "render", "demo.yaml", "--gpus", "0", "--parallelism", "1", "--image",
                  "registry.example/resnet-study:v1", "--cpu", "2", "--memory", "4Gi").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.example/resnet-study:v1"
    assert c["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
    assert job["spec"]["parallelism"] == 1 and job["spec"]["completions"] == len(sw.load("demo.yaml"))
    assert job["metadata"]["name"] == "resnet-study-demo" and c["command"][3] == "/spec/demo.yaml"


BUCKET_RENDER = ("sweep", "render", "jobs/seed-study.yaml", "--results-dir", "s3://resnet-study/study", "--data-dir",
                 "s3://resnet-study/datasets")


def test_a_bucket_render_has_no_volume_claim_and_passes_kubernetes_validate(tmp_path):
    """`sweep render --results-dir s3:// --data-dir s3://`: the Job and the results service over the bucket, their
    credentials from one Secret, scratch in an emptyDir, no PersistentVolumeClaim; k8s/bucket/ is that render."""
    rendered = run_cli(*BUCKET_RENDER).stdout
    assert (K8S / "bucket" / "sweep.yaml").read_text() == rendered, \
        f"k8s/bucket/sweep.yaml is stale: run `resnet-study {' '.join(BUCKET_RENDER)} > k8s/bucket/sweep.yaml`"
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job", "Deployment", "Service"]
    assert "PersistentVolumeClaim" not in rendered and problems(docs) == []
    files = [K8S / "bucket" / "sweep.yaml", K8S / "bucket" / "fetch-data.yaml"]
    proc = subprocess.run([str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "-k", "1.32.0",
                           *map(str, files)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.count("passed") == 5, proc.stdout + proc.stderr
    kust = yaml.safe_load((K8S / "bucket" / "kustomization.yaml").read_text())
    assert kust["resources"] == ["sweep.yaml"] and "PersistentVolumeClaim" not in (files[1]).read_text()
    # the bucket's service is the volume one (k8s/results-api.yaml) but for where the results come from
    (volume_dep,) = [d for d in load_docs() if d["kind"] == "Deployment"]
    (bucket_dep,) = [d for d in docs if d["kind"] == "Deployment"]

    def shape(dep):
        pod = copy.deepcopy(dep["spec"]["template"]["spec"])
        (c,) = pod["containers"]
        c["env"] = [e for e in c["env"] if e["name"] not in ("RESNET_STUDY_RESULTS", "RESNET_STUDY_CACHE")]
        c.pop("envFrom", None)
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] not in ("results", "cache")]
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in ("results", "cache")]
        mine = lambda labels: {k: v for k, v in labels.items() if k != "app.kubernetes.io/managed-by"}  # noqa: E731
        return {**dep["spec"], "template": {"metadata": {"labels": mine(dep["spec"]["template"]["metadata"]["labels"])},
                                            "spec": pod}}, mine(dep["metadata"]["labels"])

    assert shape(bucket_dep) == shape(volume_dep)
    (svc,) = [d for d in docs if d["kind"] == "Service"]
    assert svc["spec"] == next(d for d in load_docs() if d["kind"] == "Service")["spec"]
    # the fetch job pushes to the bucket the sweep reads, with the CLI's own command
    (job,) = [d for d in docs if d["kind"] == "Job"]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    script = yaml.safe_load(files[1].read_text())["spec"]["template"]["spec"]["containers"][0]["command"][2]
    pushes = [shlex.split(line) for line in script.splitlines() if line.startswith("resnet-study data push")]
    assert [p[3] for p in pushes] == list(datasets.BUILTINS) and all(p[4] == env["RESNET_STUDY_DATA"] for p in pushes)
    assert all(f"tv.{spec.torchvision}" in script for spec in datasets.BUILTINS.values())
    for p in pushes:
        assert parse_command(p)[0] == "resnet-study data push"


def test_the_service_reads_its_token_from_the_secret_the_readme_creates():
    (dep,) = [d for d in load_docs() if d["kind"] == "Deployment"]
    (secret,) = [v["secret"] for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert secret == {"secretName": "resnet-study-api-token", "optional": True,
                      "items": [{"key": "token", "path": "token"}]}
    create = "kubectl create secret generic resnet-study-api-token --from-literal=token="
    assert create in (ROOT / "README.md").read_text() and create in (K8S / "results-api.yaml").read_text()
