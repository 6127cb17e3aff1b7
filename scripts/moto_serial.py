#!/usr/bin/env python3
"""moto server that applies one AWS request at a time: the local AWS of the stack.

DynamoDB serialises the writes to an item, so of two racing conditional writes one wins. Stock
`moto_server` is threaded and checks a condition and writes without a lock, so two racing
conditional writes can both succeed there (see crates/callback-core/tests/card_dynamodb.rs).
The exactly-once tests (process-paid run five times at once) mean something only if the local
DynamoDB keeps that guarantee, so every request here holds one lock. The recorder's replay
endpoint is the exception: it replays by sending requests to this server, which take the lock.

Run: python scripts/moto_serial.py --host 127.0.0.1 --port 5050 (same options as moto_server's -H/-p).
"""

from __future__ import annotations

import argparse
import os
import threading

from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

UNLOCKED = ("/moto-api/recorder/replay-recording",)


class OneAtATime:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "") in UNLOCKED:
            return self.app(environ, start_response)
        with self.lock:
            # Materialise the body inside the lock: the work happens while it is produced.
            return list(self.app(environ, start_response))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, OneAtATime(app), threaded=True, use_reloader=False,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
