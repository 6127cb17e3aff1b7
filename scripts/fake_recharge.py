#!/usr/bin/env python3
"""Local stand-ins for Recharge's API and the third-party dunning service (SPEC 9), so the dunning
function runs its real HTTP clients. One process, two ports.

Recharge API (--recharge-port):

    POST /charges/{id}/change_next_charge_date   headers X-Recharge-Access-Token: <api token>,
                                                 X-Recharge-Version: 2021-01
         body {"next_charge_date": "YYYY-MM-DD"}
         200 {"charge": {"id", "scheduled_at", "status": "queued"}}; 401 wrong or missing token,
         400 wrong or missing version, 422 a body without a YYYY-MM-DD next_charge_date

Dunning service (--dunning-port):

    POST /v1/retry-date  {"charge_id", "customer_id", "amount", "currency", "error_type", "attempt_count"}
         200 {"retry_date": today (UTC) + 4 days}   (the fallback schedule says +3/+5/+7, so the two differ)

Admin API, on the Recharge port (it stays up when the dunning service is "down"):

    PUT  /_admin/recharge/fail      {"chargeId": "<id>" | "*", "answers": [503, {"delay": 15}, 422, ...]}
                                    the next calls for that charge get these answers in turn (a number:
                                    that status; {"delay": s}: answer 200 after s seconds, a timeout)
    PUT  /_admin/dunning/mode       {"chargeId": "<id>" | "*", "mode": "ok" | "down" | "slow" | "nonsense"
                                     | "status" | "date", "status": 500, "date": "YYYY-MM-DD", "count": n}
                                    down: the connection is closed unanswered; slow: answers after
                                    --slow-seconds; nonsense: 200 with a body that is no date; status:
                                    that status; date: that date. "count": only the next n calls (then ok).
    GET  /_admin/recharge/requests  every change_next_charge_date received: {time, chargeId, path,
                                    tokenOk, version, body, status}
    GET  /_admin/dunning/requests   every retry-date request: {time, chargeId, body, mode, status}

Every request is also appended to --log (JSON lines, "service": "recharge" | "dunning").

Run: python scripts/fake_recharge.py --recharge-port 0 --dunning-port 0 --api-token tok_... [--log f]
Prints "recharge listening on http://127.0.0.1:<port>" and "dunning listening on ..." once up.
"""

from __future__ import annotations

import argparse
import datetime
import hmac
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

CHANGE_DATE = re.compile(r"^/charges/(?P<id>[^/]+)/change_next_charge_date$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
API_VERSION = "2021-01"


def today() -> datetime.date:
    return datetime.datetime.now(datetime.timezone.utc).date()


class State:
    def __init__(self, api_token: str, log_path: str | None, slow_seconds: float):
        self.api_token = api_token
        self.log_path = log_path
        self.slow_seconds = slow_seconds
        self.lock = threading.Lock()
        self.recharge_answers: dict[str, list] = {}
        self.dunning_modes: dict[str, dict] = {}
        self.recharge_requests: list[dict] = []
        self.dunning_requests: list[dict] = []

    def log(self, service: str, entry: dict) -> None:
        entry = {"service": service, **entry}
        with self.lock:
            (self.recharge_requests if service == "recharge" else self.dunning_requests).append(entry)
            if self.log_path:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(entry) + "\n")

    def next_recharge_answer(self, charge_id: str):
        with self.lock:
            for key in (charge_id, "*"):
                queue = self.recharge_answers.get(key)
                if queue:
                    return queue.pop(0)
        return None

    def dunning_mode(self, charge_id: str) -> dict:
        with self.lock:
            for key in (charge_id, "*"):
                mode = self.dunning_modes.get(key)
                if mode is None:
                    continue
                if mode.get("count") is not None:
                    if mode["count"] <= 0:
                        continue
                    mode["count"] -= 1
                return dict(mode)
        return {"mode": "ok"}


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-recharge/1"
    state: State
    service: str

    def log_message(self, fmt, *args):
        sys.stderr.write(f"fake-{self.service}: " + (fmt % args) + "\n")

    def _send(self, status: int, body, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller gave up (a timeout), as a slow service's callers do

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        if self.service == "recharge" and self.path == "/_admin/recharge/requests":
            with self.state.lock:
                return self._send(200, list(self.state.recharge_requests))
        if self.service == "recharge" and self.path == "/_admin/dunning/requests":
            with self.state.lock:
                return self._send(200, list(self.state.dunning_requests))
        self._send(404, {"errors": "no such route"})

    def do_PUT(self):
        raw = self._body()
        try:
            fields = json.loads(raw or b"{}")
        except ValueError:
            return self._send(400, {"errors": "body is not JSON"})
        if self.service != "recharge":
            return self._send(404, {"errors": "no such route"})
        key = str(fields.get("chargeId", "*"))
        if self.path == "/_admin/recharge/fail":
            with self.state.lock:
                self.state.recharge_answers.setdefault(key, []).extend(fields.get("answers", []))
            return self._send(200, {"pending": len(self.state.recharge_answers.get(key, []))})
        if self.path == "/_admin/dunning/mode":
            with self.state.lock:
                self.state.dunning_modes[key] = {k: v for k, v in fields.items() if k != "chargeId"}
            return self._send(200, {"chargeId": key, **fields})
        self._send(404, {"errors": "no such route"})

    def do_POST(self):
        if self.path.startswith("/_admin/"):
            return self.do_PUT()
        if self.service == "recharge":
            return self._change_date()
        return self._retry_date()

    def _change_date(self):
        raw = self._body()
        m = CHANGE_DATE.match(self.path.split("?")[0])
        if not m:
            return self._send(404, {"errors": "Not Found"})
        charge_id = unquote(m["id"])
        token = self.headers.get("X-Recharge-Access-Token") or ""
        token_ok = hmac.compare_digest(token.encode(), self.state.api_token.encode())
        version = self.headers.get("X-Recharge-Version")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        answer = self.state.next_recharge_answer(charge_id)
        date = body.get("next_charge_date") if isinstance(body, dict) else None
        if isinstance(answer, dict) and "delay" in answer:
            time.sleep(float(answer["delay"]))
            answer = None
        if isinstance(answer, int):
            status, reply = answer, {"errors": "injected failure"}
        elif not token_ok:
            status, reply = 401, {"errors": "Invalid API token"}
        elif version != API_VERSION:
            status, reply = 400, {"errors": f"X-Recharge-Version must be {API_VERSION}"}
        elif not (isinstance(date, str) and DATE.match(date)):
            status, reply = 422, {"errors": {"next_charge_date": ["must be YYYY-MM-DD"]}}
        else:
            status, reply = 200, {"charge": {"id": charge_id, "scheduled_at": date, "status": "queued"}}
        self.state.log("recharge", {"time": time.time(), "chargeId": charge_id, "path": self.path,
                                    "tokenOk": token_ok, "version": version, "body": body, "status": status})
        self._send(status, reply)

    def _retry_date(self):
        raw = self._body()
        if self.path.split("?")[0] != "/v1/retry-date":
            return self._send(404, {"error": "not found"})
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        charge_id = str(body.get("charge_id")) if isinstance(body, dict) else ""
        mode = self.state.dunning_mode(charge_id)
        name = mode.get("mode", "ok")
        entry = {"time": time.time(), "chargeId": charge_id, "body": body, "mode": name}
        if name == "down":
            self.state.log("dunning", {**entry, "status": None})
            # Closed without an answer: to the client, the service is down.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if name == "slow":
            # Logged on arrival: the caller has usually given up before the answer goes out.
            self.state.log("dunning", {**entry, "status": 200, "delayed": self.state.slow_seconds})
            time.sleep(self.state.slow_seconds)
            return self._send(200, {"retry_date": (today() + datetime.timedelta(days=4)).isoformat()})
        if name == "nonsense":
            status, reply = 200, b"<html><body>Service temporarily overloaded</body></html>"
        elif name == "status":
            status, reply = int(mode.get("status", 500)), {"error": "injected failure"}
        elif name == "date":
            status, reply = 200, {"retry_date": mode.get("date")}
        else:
            status, reply = 200, {"retry_date": (today() + datetime.timedelta(days=4)).isoformat()}
        self.state.log("dunning", {**entry, "status": status})
        self._send(status, reply, "text/html" if isinstance(reply, bytes) else "application/json")


def serve(host: str, port: int, service: str, state: State) -> ThreadingHTTPServer:
    handler = type(f"{service.title()}Handler", (Handler,), {"state": state, "service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--recharge-port", type=int, default=0)
    parser.add_argument("--dunning-port", type=int, default=0)
    parser.add_argument("--api-token", required=True, help="the X-Recharge-Access-Token Recharge accepts")
    parser.add_argument("--log", help="append every request here (JSON lines)")
    parser.add_argument("--slow-seconds", type=float, default=5.0, help="how long a 'slow' dunning answer takes")
    args = parser.parse_args()
    state = State(args.api_token, args.log, args.slow_seconds)
    servers = [serve(args.host, args.recharge_port, "recharge", state),
               serve(args.host, args.dunning_port, "dunning", state)]
    for server, name in zip(servers, ("recharge", "dunning")):
        host, port = server.server_address[:2]
        print(f"{name} listening on http://{host}:{port}", flush=True)
    threading.Thread(target=servers[1].serve_forever, daemon=True).start()
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
