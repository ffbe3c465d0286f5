"""moto's S3 server on 127.0.0.1, one request at a time: `python -m tests.s3_server PORT`.

Why not the stock `moto_server`: it serves requests on threads and checks a conditional PUT's If-None-Match /
If-Match before it stores the object without a lock, so two racing creates can both succeed (measured: 1 key in 200
with 8 racing threads, tests/s3_server.py's docstring in the report). Real S3 decides conditional writes atomically;
serving one request at a time makes moto do the same, so the tests check this project's protocol, not moto's race.
"""

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple


def main() -> None:
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
