"""A real S3 protocol server for the tests: moto's, in a subprocess on 127.0.0.1, serving one request at a time, with
signature checking on (so wrong credentials are refused as S3 refuses them).

    python -m tests.s3_server PORT        # the server alone
    server = start(); server.env          # from a test (tests/conftest.py's `s3` fixture): endpoint + credentials

Why one request at a time rather than the stock `moto_server`: moto checks a conditional PUT's If-None-Match /
If-Match and then stores the object without a lock, and the stock server runs each request on its own thread, so
two racing creates can both succeed (seen with 8 threads racing on each of 200 keys: one key had two winners). Real S3
decides conditional writes atomically; serialising requests makes moto do the same, so the tests check this
project's protocol, not moto's race. What this cannot show about real S3 is said in the report and docs: its
409 ConditionalRequestConflict under concurrent writes, its clocks, its rate limits.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import boto3

ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
REGION = "us-east-1"


@dataclass
class S3Server:
    proc: subprocess.Popen
    endpoint: str
    key_id: str
    secret: str

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach the server the standard AWS way."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": REGION}

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.key_id,
                            aws_secret_access_key=self.secret)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start() -> S3Server:
    """Start the server, make a user allowed everything, then turn signature checking on for every request."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "tests.s3_server", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_until_up(endpoint, proc)
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="setup",
                       aws_secret_access_key="setup")
    iam.create_user(UserName="study")
    iam.put_user_policy(UserName="study", PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName="study")["AccessKey"]
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                                  headers={"Content-Type": "text/plain"}), timeout=10).read()
    return S3Server(proc, endpoint, key["AccessKeyId"], key["SecretAccessKey"])


def _wait_until_up(endpoint: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 test server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the S3 test server did not answer within 30 s")


def main() -> None:
    # moto is imported by the server process only: the tests' own process needs just boto3.
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
