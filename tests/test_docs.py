"""Every command in README.md and docs/*.md still runs: each shell command of their fenced code blocks (```bash,
```sh, ```console), and the commands `make demo` prints, is checked without doing any work.

- `resnet-study ...` (also after `docker run IMAGE`, `kubectl exec ... --`, and a Compose service's `command:`) is
  parsed by the real CLI (Typer's click command, `make_context` down to the subcommand), so an unknown subcommand or
  option, a missing argument or a bad value type fails; `train`'s experiment is validated by its own model, a sweep
  spec must resolve, and a --device / --dataset / ... must be one of the vocabulary's words. Nothing is executed:
  commands that need CUDA or a bucket are checked as well as any other.
- `make X`: X is a target of the Makefile. `kubectl apply -f PATH` / `-k PATH`, `kubectl kustomize PATH`: PATH
  exists; `job/NAME`, `deploy/NAME`, `service/NAME`: an object of k8s/. `docker-compose` / `docker compose`: the -f
  files and the services exist. `docker build --build-arg NAME=...`: an ARG of the Dockerfile.
- `curl URL`: the path is a GET route of the results service and each query parameter one that route takes.
- SQL (```sql blocks, `duckdb FILE "SQL"`, `resnet-study results query "SQL"`) runs against a migrated copy of
  the 0.1.0 fixture store; a DuckDB command on s3:// is checked only for its options.
- Relative links (and their #anchors) and repository paths in code resolve; the store's table in docs/store.md lists
  exactly the columns of core/records.py, in order.

A failure names the doc file, the line and the command."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
import shutil
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAKEFILE = ROOT / "Makefile"
SHELL_LANGS = {"bash", "sh", "shell", "console"}
TOOLS = {"resnet-study", "make", "docker", "docker-compose", "kubectl", "curl", "duckdb"}
FENCE = re.compile(r"^(\s*)```\s*([\w-]*)\s*$")
SEPARATORS = {"|", "||", "&&", ";", "&", "(", ")", "|&"}
REDIRECTS = {">", ">>", "<", "2>", "2>>", "&>", ">&"}
PREFIX_WORDS = {"do", "then", "else", "time", "sudo", "exec", "!"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# Placeholders a reader replaces: a value the real CLI accepts in their place.
PLACEHOLDERS = [(re.compile(r"^\$\{?n\}?$"), "3"), (re.compile(r"<N>"), "1"), (re.compile(r"^REGISTRY"),
                "registry.example"), (re.compile(r"^SPEC$"), "demo.yaml")]
IMAGE = re.compile(r"^(?:[\w.-]+(?::\d+)?/)*resnet-study(?::[\w.-]+)?$")
DUCKDB_OPTIONS = {"-readonly", "-c", "-cmd", "-csv", "-json", "-line", "-list", "-markdown", "-table", "-box",
                  "-header", "-noheader", "-echo", "-bail", "-batch", "-init", "-s", "-f", "-unsigned", "-column",
                  "-separator", "-nullvalue", "-html", "-ascii", "-quote", "-version", "-help"}
DOCKER_RUN_VALUE_OPTIONS = {"-v", "--volume", "-e", "--env", "--gpus", "--name", "--network", "-p", "--publish",
                            "--cpus", "-w", "--workdir", "-u", "--user", "--entrypoint", "--mount", "-m", "--memory",
                            "--shm-size", "--env-file", "-l", "--label"}
DUCKDB_VALUE_OPTIONS = {"-c", "-cmd", "-init", "-s", "-f", "-separator", "-nullvalue"}


@dataclass
class Command:
    doc: str  # relative to the repository
    line: int
    text: str  # the logical line, continuations joined
    kind: str = "shell"  # shell | sql

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


# ---------------------------------------------------------------- extraction


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join `\\` continuations and lines inside an open quote into one command line each."""
    out, buf, start = [], "", 0
    for number, line in lines:
        if not buf:
            start = number
        buf = f"{buf}\n{line}" if buf else line
        if buf.endswith("\\"):
            buf = buf[:-1]
            continue
        try:
            shlex.split(buf, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        out.append((start, buf))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def _block_commands(doc: str, lang: str, body: list[tuple[int, str]]) -> list[Command]:
    if lang == "sql":
        return [Command(doc, body[0][0], "\n".join(t for _, t in body), "sql")] if body else []
    if lang == "console":
        body = [(n, t.strip()[2:]) for n, t in body if t.strip().startswith("$ ")]
    body = [(n, t) for n, t in body if t.strip() and not t.lstrip().startswith("#")]
    return [Command(doc, n, t.strip(), "shell") for n, t in _logical_lines(body)]


def doc_commands(path: Path) -> list[Command]:
    """The commands of the shell and SQL blocks of one Markdown file."""
    doc = str(path.relative_to(ROOT))
    commands, block, lang = [], None, ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if block is None:
            if m:
                block, lang = [], m.group(2).lower()
            continue
        if m and not m.group(2):
            if lang in SHELL_LANGS or lang == "sql":
                commands += _block_commands(doc, lang, block)
            block = None
            continue
        block.append((number, line))
    return commands


def make_variables() -> dict[str, str]:
    out = {}
    for line in MAKEFILE.read_text().splitlines():
        m = re.match(r"^([A-Z_]+)\s*[:?]?=\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    for _ in range(3):  # variables that name other variables
        out = {k: re.sub(r"\$\((\w+)\)", lambda m: out.get(m.group(1), m.group(0)), v) for k, v in out.items()}
    return out


def makefile_targets() -> set[str]:
    return {m.group(1) for line in MAKEFILE.read_text().splitlines()
            if (m := re.match(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", line))} - {".PHONY"}


def demo_commands() -> list[Command]:
    """`make demo`'s recipe: its resnet-study commands, and the commands its @echo lines tell the user to run."""
    variables = make_variables()
    lines = MAKEFILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^demo\s*:", line))
    out = []
    for number in range(start + 1, len(lines)):
        line = lines[number]
        if not line.startswith("\t"):
            break
        text = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), line.strip())
        if text.startswith("@echo"):
            words = shlex.split(text[len("@echo"):], comments=False) or [""]
            text = " ".join(words) if len(words) > 1 else words[0]
        text = text.lstrip("@").strip()
        if text:
            out.append(Command("Makefile", number + 1, text))
    return out


def all_commands() -> list[Command]:
    return [c for path in DOCS for c in doc_commands(path)] + demo_commands()


# ---------------------------------------------------------------- splitting a shell line into simple commands


def simple_commands(text: str) -> list[tuple[dict[str, str], list[str]]]:
    """(environment assignments, argv) of each simple command of a shell line; redirections and comments dropped,
    placeholders replaced."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    out, env, argv, skip_next = [], {}, [], False
    for token in lex:
        if skip_next:
            skip_next = False
            continue
        if token in SEPARATORS:
            out.append((env, argv))
            env, argv = {}, []
        elif token in REDIRECTS or (token.endswith(">") and set(token) <= set("&>12")):
            skip_next = True
        elif not argv and ASSIGNMENT.match(token):
            name, _, value = token.partition("=")
            env[name] = value
        elif not argv and token in PREFIX_WORDS:
            continue
        else:
            for pattern, value in PLACEHOLDERS:
                token = pattern.sub(value, token)
            argv.append(token)
    out.append((env, argv))
    return [(e, unwrap(a)) for e, a in out if unwrap(a)]


def unwrap(argv: list[str]) -> list[str]:
    """The command a `time` (/usr/bin/time -f FORMAT ...) runs."""
    while argv and argv[0].rsplit("/", 1)[-1] == "time":
        argv = argv[1:]
        while argv and argv[0].startswith("-"):
            argv = argv[2:] if argv[0] in ("-f", "--format", "-o", "--output") else argv[1:]
    return argv


def tool_of(argv: list[str]) -> str:
    name = argv[0].rsplit("/", 1)[-1]
    if name == "docker" and len(argv) > 1 and argv[1] == "compose":
        return "docker-compose"
    return name


# ---------------------------------------------------------------- the real CLI


@dataclass
class Parsed:
    path: list[str]
    params: dict = field(default_factory=dict)


@functools.cache
def root_command():
    """The real `resnet-study` command tree (jobs/cli.py's Typer app, as click sees it)."""
    from typer.main import get_command

    from resnet_study.jobs import cli

    return get_command(cli.app)


def parse_cli(args: list[str]) -> Parsed:
    """`resnet-study ARGS` through the real command tree, without invoking anything; raises what click raises."""
    cmd, path, ctx = root_command(), ["resnet-study"], None
    args = list(args)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        while True:
            ctx = cmd.make_context(path[-1], args, parent=ctx)
            if not hasattr(cmd, "resolve_command"):
                return Parsed(path[1:], dict(ctx.params))
            rest = list(getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])) + list(ctx.args)
            name, cmd, args = cmd.resolve_command(ctx, rest)
            path.append(name)


def check_resnet_study(args: list[str]) -> str | None:
    """None if the real CLI takes `args`, else why not."""
    import typer

    from resnet_study.core import StudyError, datasets
    from resnet_study.core.vocab import AUGMENTS, DATASETS, DEVICES, PRECISIONS, SHORTCUTS

    try:
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc
    try:
        parsed = parse_cli(args)
    except typer.Exit as e:  # --help
        return None if e.exit_code == 0 else f"exits with {e.exit_code}"
    except click_exc.ClickException as e:
        return f"the CLI refuses it: {e.format_message()}"
    except Exception as e:  # noqa: BLE001 - any other refusal is a failure of the doc too
        return f"the CLI refuses it: {type(e).__name__}: {e}"
    params = parsed.params
    vocab = {"device": DEVICES, "precision": PRECISIONS, "dataset": DATASETS, "shortcut": SHORTCUTS,
             "augment": AUGMENTS}
    own_data = isinstance(params.get("dataset"), str) and datasets.is_path(params["dataset"])  # a user's folder
    for name, words in vocab.items():
        listed = name in ("augment", "precision") and parsed.path[:2] == ["bench", "train"]  # comma lists there
        given = params[name].split(",") if listed and isinstance(params.get(name), str) else [params.get(name)]
        for value in given:
            if isinstance(value, str) and value not in words and not (name == "dataset" and own_data):
                return f"{name} {value!r} is not one of {', '.join(words)}"
    try:
        if parsed.path == ["train"] and not own_data:  # a doc's folder is not there to fingerprint
            from resnet_study.jobs.options import experiments_from

            experiments_from(dict(params))
        if isinstance(params.get("spec"), str):
            from resnet_study.jobs import sweep as sw

            spec = ROOT / params["spec"]  # a path in the repository, or a shipped spec's file name
            sw.load(spec if spec.is_file() else params["spec"])
    except StudyError as e:
        return f"the CLI would refuse it: {e}"
    if parsed.path == ["results", "query"]:
        return run_sql(params["sql"])
    return None


# ---------------------------------------------------------------- the other tools


def compose_services(files: list[str]) -> dict[str, dict]:
    services: dict[str, dict] = {}
    for name in files:
        for svc, conf in (yaml.safe_load((ROOT / name).read_text()).get("services") or {}).items():
            services[svc] = {**services.get(svc, {}), **(conf or {})}
    return services


def compose_substitute(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, with only `env` set."""
    def sub(m):
        name, op, default = m.group(1), m.group(2) or "", m.group(3) or ""
        if env.get(name):
            return env[name]
        return default if op in (":-", "-") else ""
    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", sub, text)


def check_compose(env: dict[str, str], argv: list[str]) -> str | None:
    args = argv[2:] if argv[0] == "docker" else argv[1:]
    files, rest = [], []
    it = iter(args)
    for a in it:
        if a in ("-f", "--file"):
            files.append(next(it))
        elif a.startswith("--file="):
            files.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    files = files or ["compose.yaml"]
    missing = [f for f in files if not (ROOT / f).is_file()]
    if missing:
        return f"no compose file {missing[0]}"
    services = compose_services(files)
    if not rest:
        return "no subcommand"
    sub, rest = rest[0], rest[1:]
    named = [a for a in rest if not a.startswith("-")]
    if sub == "run":
        if not named:
            return "`run` names no service"
        service, extra = named[0], rest[rest.index(named[0]) + 1:]
        targets = [(service, extra)]
    elif sub in ("up", "logs", "build", "stop", "restart", "ps", "pull"):
        targets = [(s, []) for s in named]
    else:
        targets = []
    for service, extra in targets:
        if service not in services:
            return f"no service {service!r} in {', '.join(files)} (services: {', '.join(services)})"
        command = services[service].get("command")
        if isinstance(command, str) and sub in ("run", "up"):
            words = shlex.split(compose_substitute(command, env)) + extra
            problem = check_resnet_study(words)
            if problem:
                return f"service {service}'s command `resnet-study {' '.join(words)}`: {problem}"
    return None


def dockerfile_args() -> set[str]:
    return {m.group(1) for line in (ROOT / "Dockerfile").read_text().splitlines()
            if (m := re.match(r"^ARG\s+(\w+)", line))}


def check_docker(argv: list[str]) -> str | None:
    if len(argv) < 2:
        return "no subcommand"
    if argv[1] == "run":
        i = 2
        while i < len(argv) and argv[i].startswith("-"):  # docker's own options, up to the image
            i += 2 if argv[i] in DOCKER_RUN_VALUE_OPTIONS else 1
        if i >= len(argv) or not IMAGE.match(argv[i]):
            return f"the image is {argv[i] if i < len(argv) else 'missing'}, not resnet-study"
        problem = check_resnet_study(argv[i + 1:])
        return None if problem is None else f"the container's command: {problem}"
    if argv[1] == "build":
        known = dockerfile_args()
        for i, token in enumerate(argv):
            if token == "--build-arg":
                name = argv[i + 1].split("=", 1)[0]
                if name not in known:
                    return f"--build-arg {name}: the Dockerfile has no ARG {name} (it has {', '.join(sorted(known))})"
        if not (ROOT / argv[-1]).exists():
            return f"no build context {argv[-1]}"
    return None


def k8s_objects() -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "kind" in doc and "metadata" in doc:
                found.add((doc["kind"], doc["metadata"].get("name")))
    return found


KINDS = {"job": "Job", "jobs": "Job", "deploy": "Deployment", "deployment": "Deployment", "service": "Service",
         "svc": "Service", "configmap": "ConfigMap", "cm": "ConfigMap", "pvc": "PersistentVolumeClaim"}


def check_kubectl(argv: list[str]) -> str | None:
    if "--" in argv:
        after = argv[argv.index("--") + 1:]
        if after and tool_of(after) == "resnet-study":
            problem = check_resnet_study(after[1:])
            if problem:
                return f"the command in the pod: {problem}"
        argv = argv[:argv.index("--")]
    sub = argv[1] if len(argv) > 1 else ""
    for i, token in enumerate(argv):
        if token in ("-f", "--filename", "-k", "--kustomize") or (sub == "kustomize" and i == 2):
            path = token if sub == "kustomize" and i == 2 else argv[i + 1]
            if path != "-" and not (ROOT / path).exists():
                return f"{path} does not exist"
    objects = k8s_objects()
    for token in argv[2:]:
        kind, _, name = token.partition("/")
        if name and kind.lower() in KINDS and (KINDS[kind.lower()], name) not in objects:
            return f"no {KINDS[kind.lower()]} {name} in k8s/"
    return None


@functools.cache
def service_routes() -> list[tuple[re.Pattern, set[str], str]]:
    """(path regex, accepted query parameters, path) of every GET route of the results service, from its OpenAPI
    schema (with a token, so that the dashboard's ?token= is there too), plus the schema and docs pages."""
    from resnet_study.core import store
    from resnet_study.results_api.app import create_app

    app = create_app(store.results_location(ROOT / "tests" / "fixtures" / "results-0.1.0"), token="docs-test-token")
    routes = [(re.compile("^" + "[^/]+".join(map(re.escape, re.split(r"\{[^}]+\}", path))) + "$"),
               {p["name"] for p in ops["get"].get("parameters", []) if p.get("in") == "query"}, path)
              for path, ops in app.openapi()["paths"].items() if "get" in ops]
    return routes + [(re.compile(f"^{re.escape(p)}$"), set(), p) for p in (app.openapi_url, app.docs_url) if p]


def check_curl(argv: list[str]) -> str | None:
    urls = [t for t in argv[1:] if re.match(r"^(https?://)?(localhost|127\.0\.0\.1)(:\d+)?(/|$)", t)]
    if not urls:
        return "no URL of the service"
    for url in urls:
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        path = parts.path or "/"
        matched = [(params, p) for regex, params, p in service_routes() if regex.match(path)]
        if not matched:
            return f"{path} is not a GET route of the results service"
        params, route = matched[0]
        for name in urllib.parse.parse_qs(parts.query, keep_blank_values=True):
            if name not in params:
                return f"{route} takes no ?{name}= (it takes {', '.join(sorted(params)) or 'none'})"
    return None


def sql_statements(text: str) -> list[str]:
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def check_duckdb(argv: list[str]) -> str | None:
    positional, i, sql = [], 1, []
    while i < len(argv):
        token = argv[i]
        if token.startswith("-"):
            if token not in DUCKDB_OPTIONS:
                return f"the DuckDB CLI has no option {token}"
            if token in DUCKDB_VALUE_OPTIONS:
                i += 1
                if token in ("-c", "-cmd", "-s"):
                    sql.append(argv[i])
        else:
            positional.append(token)
        i += 1
    sql += positional[1:]
    remote = any("s3://" in t or "httpfs" in t for t in argv)
    if remote:
        return None  # needs the network and a bucket: only the options are checked
    return run_sql("; ".join(sql)) if sql else None


def run_sql(text: str) -> str | None:
    import duckdb

    for statement in sql_statements(text):
        try:
            snapshot().execute(statement).fetchall()
        except duckdb.Error as e:
            return f"the SQL fails on a store of this version: {str(e).splitlines()[0]}\n    {statement}"
    return None


# ---------------------------------------------------------------- fixtures and the command tests


@functools.cache
def snapshot():
    """A read-only connection to a copy of the 0.1.0 fixture store, migrated by this version's sync (built once, on
    the first SQL to check; removed when the test process ends)."""
    import atexit
    import tempfile

    from resnet_study.core import store

    tmp = tempfile.TemporaryDirectory(prefix="resnet-study-docs-")
    atexit.register(tmp.cleanup)
    rdir = Path(tmp.name) / "results"
    shutil.copytree(ROOT / "tests" / "fixtures" / "results-0.1.0", rdir)
    store.sync(store.results_location(rdir))
    return store.connect_read(store.results_location(rdir))


COMMANDS = all_commands()


def _param(c: Command):
    return pytest.param(c, id=c.where)


def check_command(cmd: Command) -> list[str]:
    """Every problem of one documented command (an empty list: it would run)."""
    if cmd.kind == "sql":
        problem = run_sql(cmd.text)
        return [problem] if problem else []
    problems = []
    for env, argv in simple_commands(cmd.text):
        tool = tool_of(argv)
        problem = None
        if tool == "resnet-study":
            problem = check_resnet_study(argv[1:])
        elif tool == "make":
            targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
            unknown = [t for t in targets if t not in makefile_targets()]
            problem = f"the Makefile has no target {unknown[0]}" if unknown else None
        elif tool == "docker-compose":
            problem = check_compose(env, argv)
        elif tool == "docker":
            problem = check_docker(argv)
        elif tool == "kubectl":
            problem = check_kubectl(argv)
        elif tool == "curl":
            problem = check_curl(argv)
        elif tool == "duckdb":
            problem = check_duckdb(argv)
        elif REPO_PATH.fullmatch(argv[0]) and not (ROOT / argv[0]).is_file():
            problem = f"no script {argv[0]} in the repository"
        if problem:
            problems.append(f"`{' '.join(argv)}`: {problem}")
    return problems


@pytest.mark.parametrize("cmd", [_param(c) for c in COMMANDS])
def test_documented_command_runs(cmd: Command):
    problems = check_command(cmd)
    assert not problems, f"{cmd.where}: {cmd.text}\n  " + "\n  ".join(problems)


def checked(cmd: Command) -> bool:
    return cmd.kind == "sql" or any(tool_of(a) in TOOLS for _, a in simple_commands(cmd.text))


def test_the_docs_hold_the_commands_this_test_checks():
    """The extraction finds what the pages show: a change of fence or prompt style must not empty this test."""
    counts = {}
    for c in COMMANDS:
        if checked(c):
            counts[c.doc] = counts.get(c.doc, 0) + 1
    for doc in ("README.md", "docs/laptop.md", "docs/gpu-box.md", "docs/cluster.md", "docs/reading-results.md",
                "Makefile"):
        assert counts.get(doc, 0) >= 3, f"{doc}: only {counts.get(doc, 0)} commands found in its code blocks"
    tools = {tool_of(a) for c in COMMANDS for _, a in simple_commands(c.text)}
    assert TOOLS <= tools, f"no documented command of {', '.join(sorted(TOOLS - tools))}"


def test_make_demo_ends_with_what_to_try_next():
    echoed = [c.text for c in demo_commands()]
    for needed in ("resnet-study serve --results-dir results/demo", "resnet-study report ", "duckdb -readonly",
                   "http://127.0.0.1:8000/", "docs/"):
        assert any(needed in t for t in echoed), f"`make demo` does not print {needed!r}"


def test_a_bad_option_or_subcommand_fails_the_check():
    """The check itself: what it must refuse, it refuses (so a doc with a typo cannot pass)."""
    bad = ["resnet-study train --n 3 --no-such-option", "resnet-study sweep nope demo.yaml",
           "resnet-study train --dataset imagenet", "resnet-study sweep local no-such-spec.yaml",
           "docker run --rm resnet-study train --bogus", "make no-such-target", "kubectl apply -f k8s/missing.yaml",
           "curl localhost:8000/no-such-route", "curl 'localhost:8000/runs?no_such_param=1'",
           "kubectl exec deploy/resnet-study-results-api -- resnet-study results nope",
           "TRAIN_ARGS='--bogus' docker-compose run --rm train", "docker-compose run --rm no-such-service",
           "resnet-study results query 'SELECT device FROM runs'", "bench/no-such-script.sh",
           "docker build --build-arg NO_SUCH_ARG=1 -t resnet-study .", "/usr/bin/time -f %M resnet-study train --bogus",
           "duckdb -no-such-flag results/results.duckdb"]
    for text in bad:
        assert check_command(Command("test", 0, text)), f"the check lets `{text}` through"
    good = Command("test", 0, "for n in 3 5; do resnet-study model --n $n; done")
    assert check_command(good) == []


# ---------------------------------------------------------------- links, paths, the schema table


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`]+)`")
REPO_PATH = re.compile(r"(?<![\w./$-])((?:k8s|jobs|core|results_api|docs|bench|tests|\.ci)/[\w.*/<>-]*)")


def prose_and_code(path: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, code lines) of a Markdown file, numbered."""
    prose, code, inside = [], [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(line)
        if m and (not inside or not m.group(2)):
            inside = not inside
            continue
        (code if inside else prose).append((number, line))
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = prose_and_code(path)
    return {slug(line.lstrip("#")) for _, line in prose if re.match(r"^#{1,6} ", line)}


def test_relative_links_and_repository_paths_exist():
    problems = []
    for doc in DOCS:
        rel = doc.relative_to(ROOT)
        prose, code = prose_and_code(doc)
        for number, line in prose:
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue  # https:, mailto:
                file, _, anchor = target.partition("#")
                dest = (doc.parent / file).resolve() if file else doc
                if not dest.exists():
                    problems.append(f"{rel}:{number}: link {target}: {file} does not exist")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    problems.append(f"{rel}:{number}: link {target}: no heading #{anchor} in {file or rel}")
        spans = [(n, s) for n, line in prose for s in CODE_SPAN.findall(line)] + code
        for number, text in spans:
            for found in REPO_PATH.findall(text):
                found = found.rstrip(".,:;")
                if "<" in found:
                    found = found.split("<")[0]
                if not any(ROOT.glob(found.rstrip("/"))) if "*" in found else not (ROOT / found).exists():
                    problems.append(f"{rel}:{number}: {found} does not exist in the repository")
    assert not problems, "\n".join(problems)


def test_the_store_table_in_the_docs_is_the_schema():
    from resnet_study.core.records import TABLES

    text = (ROOT / "docs" / "store.md").read_text()
    section = text.split("## The tables", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in section.splitlines():
        m = re.match(r"^\| `(\w+)` \| (.*) \|$", line)
        if m:
            cells = re.sub(r"\([^()]*\)", "", m.group(2))  # values and notes in parentheses are not columns
            documented[m.group(1)] = [c for c in CODE_SPAN.findall(cells) if c != "RunConfig"]
    assert set(documented) == set(TABLES), f"docs/store.md documents tables {sorted(documented)}"
    for table, columns in TABLES.items():
        assert documented[table] == list(columns), (
            f"docs/store.md, table {table}: documented {documented[table]}\n  the code (core/records.py) has "
            f"{list(columns)}\n  missing: {sorted(set(columns) - set(documented[table]))}; extra: "
            f"{sorted(set(documented[table]) - set(columns))}")


def test_the_exit_code_table_in_the_docs_is_the_codes_table():
    """docs/laptop.md's table of exit codes is core.EXIT_CODES, row for row (the engines' policies derive from it)."""
    from resnet_study.core import EXIT_CODES

    text = (ROOT / "docs" / "laptop.md").read_text()
    rows = [line for line in text.split("## Errors and exit codes", 1)[1].splitlines() if re.match(r"\| \d+ \|", line)]
    documented = [tuple(cell.strip() for cell in row.strip("|").split(" | ")) for row in rows]
    assert documented == [(str(e.code), e.meaning, e.todo) for e in EXIT_CODES], \
        "docs/laptop.md's exit codes differ from core.EXIT_CODES: copy the table from there"


def test_the_environment_variable_table_in_the_docs_is_the_settings():
    """docs/laptop.md's table of RESNET_STUDY_* variables is core/settings.py's, row for row."""
    from resnet_study.core import settings

    text = (ROOT / "docs" / "laptop.md").read_text().split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = [tuple(c.strip() for c in line.strip("|").split(" | "))
                  for line in text.splitlines() if line.startswith("| `RESNET_STUDY_")]
    assert documented == [(f"`{v.name}`", f"`{v.default}`" if v.default else "", v.help) for v in settings.ALL], \
        "docs/laptop.md's environment variables differ from core/settings.py"
