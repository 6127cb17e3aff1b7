#!/usr/bin/env python3
"""A local stand-in for the KBank charge API, so process-paid runs its real HTTP client.

Serves the one call process-paid makes (SPEC 4.4):

    GET /card/v2/charge/{chargeId}    header x-api-key: <secretKey>
        200 {"object": "charge", "id", "amount", "currency": "THB", "status", "transaction_state", ...}
        401 wrong or missing key, 404 unknown charge

and an admin API for the stack and the tests (no key):

    PUT  /_admin/charges/{chargeId}   JSON fields to set (creates the charge, or updates it:
                                      flip "pending" to {"status": "success", "transaction_state": "Authorized"})
    GET  /_admin/charges              every charge held
    GET  /_admin/requests             every inquiry received (method, path, chargeId, key ok, status)
    PUT  /_admin/fail                 {"status": 503, "count": 2}: answer the next `count` inquiries with `status`
                                      ({"status": 200, "body": "<html>"}: a 2xx whose body is not a charge)
    a charge's "_answer_status": 503  answer every inquiry about that charge with 503 until it is set to null
    PUT  /_admin/key                  {"secretKey": "skey_..."}: the key accepted from now on (a rotation)

Run: python scripts/fake_kbank.py --port 0 --secret-key skey_... [--charges charges.json]
Prints "listening on http://127.0.0.1:<port>" once it accepts connections.
"""

from __future__ import annotations

import argparse
import hmac
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

CHARGE_PREFIX = "/card/v2/charge/"
DECIMAL_TEXT = re.compile(r"-?\d+(\.\d+)?")
ADMIN_CHARGES = "/_admin/charges"


class KBankState:
    def __init__(self, secret_key: str, charges: dict[str, dict]):
        self.secret_key = secret_key
        self.charges = {cid: self._complete(cid, c) for cid, c in charges.items()}
        self.requests: list[dict] = []
        self.failures: list[tuple[int, str | None]] = []
        self.lock = threading.Lock()

    @staticmethod
    def _complete(charge_id: str, fields: dict) -> dict:
        charge = {
            "object": "charge",
            "id": charge_id,
            "amount": 0.0,
            "currency": "THB",
            "status": "pending",
            "transaction_state": "Pending",
            "livemode": False,
            "source": {"object": "card", "brand": "VISA", "number": "4111 11XX XXXX 1111"},
        }
        charge.update(fields)
        charge["id"] = charge_id
        return charge

    def upsert(self, charge_id: str, fields: dict) -> dict:
        with self.lock:
            current = self.charges.get(charge_id)
            if current is None:
                current = self._complete(charge_id, fields)
            else:
                current = {**current, **fields, "id": charge_id}
            self.charges[charge_id] = current
            return current


def render(body) -> str:
    """JSON text; a charge amount held as decimal text ("2339.00") goes out as that number,
    as KBank writes it (process-paid reads the amount from its JSON text, never via a float)."""
    if isinstance(body, list):
        return "[" + ", ".join(render(b) for b in body) + "]"
    if isinstance(body, dict) and isinstance(body.get("amount"), str) and DECIMAL_TEXT.fullmatch(body["amount"]):
        rest = json.dumps({k: v for k, v in body.items() if k != "amount"})
        return '{"amount": ' + body["amount"] + (", " + rest[1:] if len(rest) > 2 else "}")
    return json.dumps(body)


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-kbank/1"
    state: KBankState  # set on the class by serve()

    def log_message(self, fmt, *args):  # one line per request, on stderr, like the other services
        sys.stderr.write("fake-kbank: " + (fmt % args) + "\n")

    def _send(self, status: int, body) -> None:
        data = render(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    def do_GET(self):
        state = self.state
        if self.path == ADMIN_CHARGES:
            with state.lock:
                return self._send(200, list(state.charges.values()))
        if self.path == "/_admin/requests":
            with state.lock:
                return self._send(200, list(state.requests))
        if not self.path.startswith(CHARGE_PREFIX):
            return self._send(404, {"object": "error", "code": "not_found", "message": "no such route"})

        charge_id = unquote(self.path[len(CHARGE_PREFIX):].split("?")[0])
        key = self.headers.get("x-api-key") or ""
        with state.lock:
            accepted = state.secret_key
        key_ok = hmac.compare_digest(key.encode(), accepted.encode())
        with state.lock:
            injected = state.failures.pop(0) if state.failures else None
            charge = state.charges.get(charge_id)
        if injected is not None and injected[1] is not None:
            status, raw = injected
            return self._send_raw(status, raw.encode(), charge_id, key_ok)
        if injected is not None:
            status, body = injected[0], {"object": "error", "code": "injected_failure"}
        elif not key_ok:
            status, body = 401, {"object": "error", "code": "authentication_failure",
                                 "message": "invalid x-api-key"}
        elif charge is None:
            status, body = 404, {"object": "error", "code": "not_found",
                                 "message": f"charge {charge_id} not found"}
        elif charge.get("_answer_status"):
            status, body = int(charge["_answer_status"]), {"object": "error", "code": "injected_failure"}
        else:
            status, body = 200, charge
        with state.lock:
            state.requests.append({"method": "GET", "path": self.path, "chargeId": charge_id,
                                   "keyOk": key_ok, "status": status})
        self._send(status, body)

    def _send_raw(self, status: int, data: bytes, charge_id: str, key_ok: bool) -> None:
        with self.state.lock:
            self.state.requests.append({"method": "GET", "path": self.path, "chargeId": charge_id,
                                        "keyOk": key_ok, "status": status})
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        state = self.state
        try:
            fields = self._json_body()
        except ValueError:
            return self._send(400, {"error": "body is not JSON"})
        if self.path.startswith(ADMIN_CHARGES + "/"):
            charge_id = unquote(self.path[len(ADMIN_CHARGES) + 1:])
            return self._send(200, state.upsert(charge_id, fields))
        if self.path == "/_admin/fail":
            raw = fields.get("body")
            with state.lock:
                state.failures.extend([(int(fields.get("status", 503)), raw)] * int(fields.get("count", 1)))
            return self._send(200, {"pending_failures": len(state.failures)})
        if self.path == "/_admin/key":
            key = fields.get("secretKey")
            if not isinstance(key, str) or not key:
                return self._send(400, {"error": "secretKey is required"})
            with state.lock:
                state.secret_key = key
            return self._send(200, {"rotated": True})
        self._send(404, {"error": "no such route"})

    do_POST = do_PUT


def serve(host: str, port: int, secret_key: str, charges: dict[str, dict]) -> ThreadingHTTPServer:
    Handler.state = KBankState(secret_key, charges)
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret-key", required=True, help="the x-api-key the inquiry must carry")
    parser.add_argument("--charges", help="JSON file: {chargeId: {fields}} held at start")
    args = parser.parse_args()
    charges = {}
    if args.charges:
        with open(args.charges) as f:
            charges = json.load(f)
    server = serve(args.host, args.port, args.secret_key, charges)
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
