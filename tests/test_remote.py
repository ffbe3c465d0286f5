"""The CLI as a client of a live `resnet-study serve` on 127.0.0.1 (`results table|compare --url`), with and without
a token, over the results dir written by resnet-study 0.1.0 (tests/fixtures/); a wrong token, an unreachable host, a
URL that is no results service and an open address without a token are each one line and exit 2; a bug planted in
the real server is logged with its traceback and request id and answered 500 with that id."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest
from typer.testing import CliRunner

from resnet_study.core import store
from resnet_study.jobs.cli import app, main
from tests.conftest import FIXTURE_STORE
from tests.helpers import CLI, ROOT, Server, cli_env, free_port

pytestmark = pytest.mark.slow  # real server processes
TOKEN = "remote-test-token-5f0c2a"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The fixture store, synced by this version (as the local CLI would), served open and with a token."""
    results = tmp_path_factory.mktemp("remote") / "results"
    shutil.copytree(FIXTURE_STORE, results)
    store.sync(store.results_location(results))
    open_srv, guarded = Server(results), Server(results, token=TOKEN)
    yield results, open_srv, guarded
    open_srv.stop()
    guarded.stop()


def run_all(commands: list[tuple[list[str], dict]]) -> list[subprocess.CompletedProcess]:
    """`resnet-study ARGS` for each (args, env), all at once (each process spends its time importing)."""
    procs = [subprocess.Popen([*CLI, *args], env=cli_env(**env), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args, env in commands]
    out = []
    for (args, _), p in zip(commands, procs):
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(args, p.returncode, stdout, stderr))
    return out


def test_table_and_compare_over_http_print_the_local_csv_byte_for_byte(served, tmp_path):
    results, open_srv, guarded = served
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    table, compare = ["results", "table", "--format", "csv"], ["results", "compare", "--format", "csv"]
    done = run_all([
        ([*table, "--results-dir", str(results)], {}),
        ([*table, "--url", open_srv.base], {}),
        ([*table, "--url", guarded.base + "/", "--token-file", str(token_file)], {}),
        ([*compare, "--results-dir", str(results)], {}),
        ([*compare, "--url", open_srv.base], {}),
        ([*compare, "--url", guarded.base], {"RESNET_STUDY_API_TOKEN": TOKEN}),
    ])
    for p in done:
        assert p.returncode == 0, (p.args, p.stderr)
    table_local, table_open, table_token, compare_local, compare_open, compare_token = (p.stdout for p in done)
    assert table_local.startswith("kind,dataset,metric,label,") and table_local.count("\nmeasured,") == 8
    assert table_open == table_token == table_local
    assert compare_local.startswith("dataset,metric,kind,a,b,") and compare_local.count("\n") >= 3
    assert compare_open == compare_token == compare_local


@pytest.mark.parametrize("args", [
    ["table"], ["table", "--format", "markdown"], ["table", "--all", "--metric", "train_seconds"],
    ["table", "--dataset", "cifar10", "--all", "--format", "markdown"],
    ["compare"], ["compare", "--format", "json"], ["compare", "--format", "markdown"],
    ["compare", "--metric", "train_seconds", "--format", "json"],
])
def test_every_format_over_http_prints_what_the_local_form_prints(served, args):
    """In this process (the parsing and rendering are the same code as the processes above), every format."""
    results, _, guarded = served
    runner = CliRunner()
    local = runner.invoke(app, ["results", *args, "--results-dir", str(results)])
    remote = runner.invoke(app, ["results", *args, "--url", guarded.base], env={"RESNET_STUDY_API_TOKEN": TOKEN})
    assert local.exit_code == remote.exit_code == 0, (local.output, remote.output)
    assert len(local.output) > 200 and remote.output == local.output


def run_main(args: list[str], env: dict, monkeypatch, capsys) -> tuple[int, str, str]:
    """jobs.cli.main() in this process, as the console script runs it: (exit code, stdout, stderr)."""
    with monkeypatch.context() as m:
        m.setattr(sys, "argv", ["resnet-study", *args])
        m.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))  # main() sets it otherwise
        m.delenv("RESNET_STUDY_API_TOKEN", raising=False)
        m.delenv("RESNET_STUDY_API_TOKEN_FILE", raising=False)
        for k, v in env.items():
            m.setenv(k, v)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_each_failure_is_one_line_and_exit_2(served, monkeypatch, capsys):
    _, open_srv, guarded = served

    class NotTheService(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body>a wiki</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotTheService)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    table = ["results", "table", "--format", "csv", "--url"]
    cases = [
        (table + [guarded.base], {}, f"error: {guarded.base} needs a token: put it in RESNET_STUDY_API_TOKEN"),
        (table + [guarded.base], {"RESNET_STUDY_API_TOKEN": "not-" + TOKEN},
         f"error: {guarded.base} refused the token (wrong token in the Authorization header)"),
        (table + [f"http://127.0.0.1:{free_port()}"], {}, "Connection refused); is `resnet-study serve` running"),
        (table + [f"http://127.0.0.1:{other.server_address[1]}"], {}, "did not answer with a resnet-study table"),
        (table + [open_srv.base + "/docs"], {}, "/docs/tables/comparison answered HTTP 404"),
        (table + ["localhost:8000"], {}, "error: --url: give the service's address, e.g. http://localhost:8000"),
    ]
    try:
        for args, env, expected in cases:
            code, out, err = run_main(args, env, monkeypatch, capsys)
            assert code == 2 and out == "" and len(err.splitlines()) == 1 and expected in err, (args, code, err)
    finally:
        other.shutdown()
    # the real console script, as a process: an address other machines reach, no token
    (p,) = run_all([(["serve", "--results-dir", str(served[0]), "--host", "0.0.0.0", "--port", str(free_port())],
                     {})])
    assert p.returncode == 2 and p.stderr.startswith("error: refusing to serve every run without a token on 0.0.0.0")
    assert len(p.stderr.splitlines()) == 1 and "--insecure-no-auth" in p.stderr


PLANTED = """
import sys
from resnet_study.results_api import app, queries

def planted(*args, **kwargs):
    raise RuntimeError("planted bug in queries.comparison")

queries.comparison = planted
app.serve(sys.argv[1], "127.0.0.1", int(sys.argv[2]))
"""


def test_a_planted_bug_is_logged_with_its_traceback_and_answered_500_with_its_id(served, tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", PLANTED, str(served[0]), str(port)], env=cli_env(), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    if client.get("/healthz").status_code == 200:  # the store is fine: only the query is broken
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not answer /healthz in 90 s"
                time.sleep(0.2)
            r = client.get("/tables/comparison", params={"format": "csv"})
            traced = client.get("/tables/comparison", headers={"X-Request-ID": "ingress-7f3a"})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    rid = r.headers["x-request-id"]
    assert r.status_code == 500 and len(rid) == 32
    assert r.json() == {"detail": f"internal error; the server's log has its traceback (request id {rid})",
                        "request_id": rid}
    assert "planted" not in r.text and "Traceback" not in r.text  # the body names no internals
    assert traced.status_code == 500 and traced.json()["request_id"] == "ingress-7f3a"
    text = log.read_text()
    failed = text.index(f"request {rid}: GET /tables/comparison?format=csv failed")
    assert text.index("Traceback (most recent call last):", failed) < text.index(
        "RuntimeError: planted bug in queries.comparison", failed)
    assert "GET /tables/comparison?format=csv 500" in text and f"request_id={rid}" in text  # the access line
    assert "request ingress-7f3a: GET /tables/comparison failed" in text
