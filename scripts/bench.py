#!/usr/bin/env python3
"""make bench (SPEC 8): each function's binary under a Lambda Runtime API harness of our own,
against the local stack (moto, fake KBank; the tables on dynalite, see `Upstreams`), behind a
proxy that adds a fixed delay to every AWS and KBank call, as a region's round trip would.

Per function it prints start-up (spawn to the first `next` request), first response (spawn to
the first answer, the first event queued before the spawn), warm median and p99 over `-n`
invocations, peak RSS (VmHWM), AWS/KBank calls per warm invocation and how many of them are on
the critical path (the longest chain of calls each starting after the previous one ended), the
arm64 deployment zip, and the same warm figures for the baseline: `bench-baseline` makes exactly
the HTTP calls the function made in its first warm invocation, overlapping ones at once, through
the same proxy, with no SDK and no logic. `ratio` is the function's warm median over the
baseline's: it survives a noisy machine better than milliseconds do.

The proxy answers Lambda Invoke calls itself (202 for Event, a canned process-paid answer for
RequestResponse) after the delay: the invoked function's own work is not part of the caller's
figure, only the round trip is.

    python scripts/bench.py                    # release binaries, arm64 zips, n=100, 10 ms
    python scripts/bench.py --delay-ms 20 -n 300 --json bench.json
    python scripts/bench.py --quick            # what `make test` runs: debug binaries, n=3, no zips
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack as stack_mod  # noqa: E402  (the local stack: moto, tables, seeds, fake KBank)
import panic_runtime  # noqa: E402  (which panic runtime a built bootstrap links)

ROOT = stack_mod.ROOT
now = time.perf_counter


# ---------------------------------------------------------------------------------------------
# The delaying proxy


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a function process killed mid-connection is the end of a run, not news


@dataclass
class Call:
    start: float
    end: float
    service: str
    operation: str
    method: str
    url: str
    headers: dict
    body: str


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.lock = threading.Lock()

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def between(self, start: float, end: float) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if start <= c.start <= end]


def _service_of(headers: dict, path: str, default: str) -> tuple[str, str]:
    auth = headers.get("authorization", "")
    service = default
    if "Credential=" in auth:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(scope) >= 4:
            service = scope[3]
    target = headers.get("x-amz-target", "")
    if target:
        return service, target.rsplit(".", 1)[-1]
    if path.startswith("/2015-03-31/functions/"):
        return "lambda", "Invoke"
    if service == "kbank":
        return service, "GetCharge"
    return service, path.split("?")[0]


# What a synchronous invoke of process-paid answers (the caller only reads the outcome).
CANNED_PROCESS_PAID = json.dumps({"statusCode": 200, "body": "\"success\"", "outcome": "paid"}).encode()


def tables_of(headers: dict, body: bytes) -> set[str]:
    """The DynamoDB tables a request names (TableName, RequestItems, TransactItems); none for
    another service's request."""
    if not headers.get("x-amz-target", "").startswith("DynamoDB_"):
        return set()
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return set()
    if not isinstance(request, dict):
        return set()
    names = set(request.get("RequestItems") or {})
    if isinstance(request.get("TableName"), str):
        names.add(request["TableName"])
    for item in request.get("TransactItems") or []:
        for op in (item or {}).values():
            if isinstance(op, dict) and isinstance(op.get("TableName"), str):
                names.add(op["TableName"])
    return names


class Upstreams:
    """Where a request goes: a DynamoDB request to its table's process, everything else
    (Secrets Manager, SES, a request naming no table or tables of different processes) to the
    stack's moto. Why the tables are not in the stack's moto: the bench adds a region's round trip
    to every call, and the local AWS's own time comes on top of it. moto (Python) spends 12-17 ms
    on the callback's record UpdateItem (11 clauses; 2026-11-30, this 2-core machine), more than
    the 10 ms round trip itself, and one moto process serves one request at a time, so the record
    and the inbox writes sent together were measured one after the other: the figures measured
    moto. dynalite (Node, in memory) answers the same UpdateItem in about 1.4 ms."""

    def __init__(self, main: str, by_table: dict[str, str] | None = None) -> None:
        self.main = main
        self.by_table = dict(by_table or {})

    def url_for(self, headers: dict, body: bytes) -> str:
        targets = {self.by_table.get(t, self.main) for t in tables_of(headers, body)}
        return targets.pop() if len(targets) == 1 else self.main


class DelayProxy:
    """Adds `delay` seconds to every request, then forwards it to its upstream (or answers a
    Lambda invoke itself). Every call is recorded with its start and end."""

    def __init__(self, upstream: "str | Upstreams", delay: float, recorder: Recorder, service: str) -> None:
        self.upstreams = upstream if isinstance(upstream, Upstreams) else Upstreams(upstream)
        self.delay = delay
        self.recorder = recorder
        self.service = service
        self.local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY: the answer goes out as headers then body, two writes; with Nagle the
            # body waits for the client's delayed ACK of the headers (40 ms on Linux once a
            # kept-alive connection leaves quick-ACK mode). Neither AWS nor Lambda's Runtime API
            # answers like that, so the harness must not either.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                start = now()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                time.sleep(proxy.delay)
                if self.path.startswith("/2015-03-31/functions/"):
                    event = headers.get("x-amz-invocation-type") == "Event"
                    status, out_headers, out = (202, {}, b"") if event else (200, {"x-amz-executed-version": "$LATEST"}, CANNED_PROCESS_PAID)
                else:
                    upstream = proxy.upstreams.url_for(headers, body)
                    status, out_headers, out = proxy.forward(upstream, self.command, self.path, headers, body)
                self.send_response(status)
                for k, v in out_headers.items():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                service, operation = _service_of(headers, self.path, proxy.service)
                proxy.recorder.add(Call(start, now(), service, operation, self.command,
                                        f"http://127.0.0.1:{proxy.port}{self.path}",
                                        {k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")},
                                        body.decode("utf-8", "replace")))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def forward(self, upstream: str, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        if not hasattr(self.local, "conns"):
            self.local.conns = {}
        conns: dict = self.local.conns
        for attempt in (1, 2):
            conn = conns.get(upstream)
            if conn is None:
                where = urllib.parse.urlsplit(upstream)
                conn = conns[upstream] = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
            try:
                conn.request(method, path, body=body, headers={k: v for k, v in headers.items() if k != "connection"})
                resp = conn.getresponse()
                return resp.status, dict(resp.getheaders()), resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                conns.pop(upstream, None)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.server.shutdown()


# ---------------------------------------------------------------------------------------------
# The Lambda Runtime API harness


class RuntimeApi:
    """The Runtime API one function process talks to: hands out queued events on `next`, and
    records when each one was handed out and when its answer came back."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.answers: queue.Queue = queue.Queue()
        self.first_next: float | None = None
        self.handed: dict[str, float] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY: the answer goes out as headers then body, two writes; with Nagle the
            # body waits for the client's delayed ACK of the headers (40 ms on Linux once a
            # kept-alive connection leaves quick-ACK mode). Neither AWS nor Lambda's Runtime API
            # answers like that, so the harness must not either.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if not self.path.endswith("/runtime/invocation/next"):
                    return self._reply(404)
                if api.first_next is None:
                    api.first_next = now()
                request_id, event = api.events.get()
                api.handed[request_id] = now()
                self._reply(200, json.dumps(event).encode(), {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 300_000),
                    "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:ap-southeast-1:000000000000:function:bench",
                    "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                })

            def do_POST(self) -> None:
                at = now()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = self.path.split("/")
                # /2018-06-01/runtime/invocation/{id}/response | /error, /runtime/init/error
                kind = parts[-1]
                request_id = parts[-2] if "invocation" in parts else "init"
                self._reply(202, b"{}")
                api.answers.put((request_id, kind, at, body))

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event: Any, timeout: float = 120) -> tuple[str, float, float, bytes]:
        """Queues one event and waits for its answer: (kind, handed-out time, answer time, body)."""
        request_id = str(uuid.uuid4())
        self.events.put((request_id, event))
        while True:
            rid, kind, at, body = self.answers.get(timeout=timeout)
            if rid in (request_id, "init"):
                return kind, self.handed.get(request_id, at), at, body

    def close(self) -> None:
        self.server.shutdown()


# ---------------------------------------------------------------------------------------------
# Figures


def critical_path(calls: list[Call]) -> tuple[int, list[int]]:
    """The longest chain of calls each starting after the previous one ended, and each call's
    place in it (calls with the same place overlapped: they were concurrent)."""
    ordered = sorted(range(len(calls)), key=lambda i: calls[i].start)
    depth = [1] * len(calls)
    for i in ordered:
        for j in ordered:
            if calls[j].end <= calls[i].start:
                depth[i] = max(depth[i], depth[j] + 1)
    return (max(depth) if depth else 0), depth


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Result:
    function: str
    startup_ms: float
    first_response_ms: float
    warm: list[float]
    peak_rss_mb: float
    calls: list[list[Call]]
    failures: int
    zip_mb: float | None = None
    panic: str | None = None
    baseline: list[float] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (handed out, answered) per warm invocation
    delay_ms: float = 0.0

    def phases(self) -> dict:
        """Where a warm invocation's time goes, medians in ms: from the event handed out to the
        first AWS/KBank call, from that call's start to the last call's end, and from there to
        the answer. The calls' part holds the injected delay and the local AWS's own time."""
        before, inside, after = [], [], []
        for (handed, answered), calls in zip(self.spans, self.calls):
            if not calls:
                continue
            first, last = min(c.start for c in calls), max(c.end for c in calls)
            before.append((first - handed) * 1000)
            inside.append((last - first) * 1000)
            after.append((answered - last) * 1000)
        if not before:
            return {}
        return {"before_calls_ms": round(statistics.median(before), 2),
                "calls_ms": round(statistics.median(inside), 2),
                "after_calls_ms": round(statistics.median(after), 2)}

    def own_ms(self) -> list[float]:
        """Per warm invocation, the time with no AWS/KBank call in flight: the function's own work
        (and the harness's hand-over), whatever the local AWS costs. Intervals of calls that
        overlap count once."""
        out = []
        for (handed, answered), calls in zip(self.spans, self.calls):
            busy, edge = 0.0, handed
            for c in sorted(calls, key=lambda c: c.start):
                start, end = max(c.start, edge), min(c.end, answered)
                if end > start:
                    busy += end - start
                    edge = end
            out.append((answered - handed - busy) * 1000)
        return out

    def summary(self) -> dict:
        per_invocation = [len(c) for c in self.calls] or [0]
        paths = [critical_path(c)[0] for c in self.calls] or [0]
        ops: dict[str, int] = {}
        for c in (self.calls[0] if self.calls else []):
            key = f"{c.service}:{c.operation}"
            ops[key] = ops.get(key, 0) + 1
        out = {
            "function": self.function,
            "startup_ms": round(self.startup_ms, 2),
            "first_response_ms": round(self.first_response_ms, 2),
            "warm_median_ms": round(statistics.median(self.warm), 2) if self.warm else None,
            "warm_p99_ms": round(percentile(self.warm, 99), 2) if self.warm else None,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "calls_per_invocation": statistics.median(per_invocation),
            "critical_path_calls": statistics.median(paths),
            "calls": ops,
            "failures": self.failures,
            "zip_mb": round(self.zip_mb, 2) if self.zip_mb is not None else None,
            "panic": self.panic,
            "phases": self.phases(),
        }
        own = self.own_ms()
        if own:
            out["own_median_ms"] = round(statistics.median(own), 2)
            # What a warm invocation takes when every call answers in exactly the injected delay:
            # its own time plus one delay per round trip on the critical path. The measured p50
            # adds the local AWS's own time (moto: Python, several ms per write, one at a time).
            out["modelled_p50_ms"] = round(statistics.median(own) + statistics.median(paths) * self.delay_ms, 2)
        if self.baseline:
            base = statistics.median(self.baseline)
            out["baseline_warm_median_ms"] = round(base, 2)
            out["baseline_warm_p99_ms"] = round(percentile(self.baseline, 99), 2)
            out["ratio_to_baseline"] = round(statistics.median(self.warm) / base, 2) if base else None
        return out


# ---------------------------------------------------------------------------------------------
# The functions and their events


def rest_event(route: str, body: str, headers: dict | None = None) -> dict:
    request_id = str(uuid.uuid4())
    return {
        "resource": route, "path": route, "httpMethod": "POST",
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "pathParameters": None, "stageVariables": None,
        "requestContext": {"resourcePath": route, "httpMethod": "POST", "path": f"/local{route}",
                           "stage": "local", "requestId": request_id, "accountId": "000000000000",
                           "identity": {"sourceIp": "203.0.113.10", "userAgent": "bench"},
                           "requestTimeEpoch": int(time.time() * 1000)},
        "body": body, "isBase64Encoded": False,
    }


def signed_headers(gateway: str, body: str) -> dict:
    """Standard Webhooks headers under the local stack's key for `gateway`, when the stack has
    callback keys (SPEC 4.5); none before."""
    keys = getattr(stack_mod, "CALLBACK_KEYS", None)
    if not keys or gateway not in keys:
        return {}
    key = keys[gateway][0]
    secret = base64.b64decode(key.removeprefix("whsec_"))
    msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    sig = base64.b64encode(hmac.new(secret, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{sig}"}


def callback_events(route: str, gateway: str) -> Callable[[int], dict]:
    def make(i: int) -> dict:
        body = json.dumps({"orderId": f"bench-{gateway}-{i}", "paymentId": f"pay-{gateway}-{i}",
                           "success": True, "amount": 100.0, "userId": "bench-user"})
        return rest_event(route, body, signed_headers(gateway, body))
    return make


@dataclass
class Function:
    name: str  # the cargo binary
    make_event: Callable[[int], dict]
    prepare: Callable[["Bench", int], None] | None = None  # seeds what invocation i needs


def answered_ok(kind: str, body: bytes) -> bool:
    """A success: an answer (not an error), an HTTP status under 400, a process-paid `paid`."""
    if kind != "response":
        return False
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    if isinstance(answer, dict):
        if int(answer.get("statusCode", 200)) >= 400:
            return False
        if "outcome" in answer and answer["outcome"] != "paid":
            return False
    return True


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile = "debug" if args.quick else "release"
        self.state = Path(tempfile.mkdtemp(prefix="payment3-bench-"))
        self.stack = stack_mod.Stack(state_dir=self.state, delayed_notify_seconds=0)
        self.recorder = Recorder()

    # -- seeds

    def card_order(self, prefix: str, i: int, total: str = "1250.50") -> tuple[str, str]:
        order, charge = f"bench-{prefix}-{i}", f"chrg_bench_{prefix}_{i}"
        self.stack.put_order(order, total)
        self.stack.set_charge(charge, amount=total, currency="THB", status="success",
                              transaction_state="Authorized")
        return order, charge

    def functions(self) -> list[Function]:
        card = stack_mod.DEMO_CARD
        notify_body = json.dumps(stack_mod.notify_body(card["chargeId"], "1250.50"))
        notify_event = rest_event("/notify", notify_body)
        return [
            Function("wallet", callback_events("/wallet/callback", "wallet")),
            Function("bankapp", callback_events("/bankapp/callback", "bankapp")),
            Function("amex", callback_events("/amex/callback", "amex")),
            Function("notify", lambda i: notify_event),
            Function("delayed-notify", lambda i: notify_event),
            Function("process-paid",
                     lambda i: {"orderId": f"bench-card-{i}", "paymentType": "card", "chargeId": f"chrg_bench_card_{i}"},
                     lambda b, i: b.card_order("card", i)),
            Function("process-paid-wallet",
                     lambda i: {"orderId": f"bench-wallet-pp-{i}", "paymentId": f"pay-{i}", "success": True, "amount": 100.0},
                     lambda b, i: b.stack.put_order(f"bench-wallet-pp-{i}", "100.0")),
            Function("process-paid-amex",
                     lambda i: {"orderId": f"bench-amex-pp-{i}", "paymentId": f"pay-{i}", "success": True, "amount": 100.0},
                     lambda b, i: b.stack.put_order(f"bench-amex-pp-{i}", "100.0")),
        ]

    # -- lifecycle

    def build(self) -> None:
        cmd = ["cargo", "build", "--workspace", "--bins"] + ([] if self.args.quick else ["--release"])
        subprocess.run(cmd, cwd=ROOT, check=True)

    def zips(self) -> dict[str, tuple[float, str]]:
        """arm64 deployment zips, as `sam build` (BuildMethod rust-cargolambda) makes them: size in
        MB and the panic runtime the bootstrap links (scripts/panic_runtime.py; must be unwind)."""
        env = {**os.environ, "PATH": f"{stack_mod.BIN}:{os.environ['PATH']}"}
        bins = [a for f in self.functions() for a in ("--bin", f.name)]  # not the CLI, not the baseline
        subprocess.run([str(stack_mod.BIN / "cargo-lambda"), "lambda", "build", "--release", "--arm64",
                        "--output-format", "zip", *bins], cwd=ROOT, check=True, env=env)
        sizes = {}
        for f in self.functions():
            z = ROOT / "target" / "lambda" / f.name / "bootstrap.zip"
            if z.exists():
                sizes[f.name] = (z.stat().st_size / 1e6, panic_runtime.panic_runtime(panic_runtime.read_bootstrap(z)))
        return sizes

    def start_dynamodb(self) -> Upstreams:
        """Where the tables live (`--dynamodb`, see `Upstreams`). `dynalite` (default): every
        table in one dynalite, an in-memory DynamoDB in Node (package.json). `moto`: each table
        in its own moto process. `moto-one`: every table in the stack's own moto."""
        s = self.stack
        upstreams = Upstreams(s.urls["moto"])
        mode = self.args.dynamodb
        if mode == "moto-one":
            return upstreams
        tables = [spec.create["TableName"] for spec in stack_mod.table_specs(s.template, s.branch)]
        started = []
        if mode == "dynalite":
            cli = ROOT / "node_modules" / "dynalite" / "cli.js"
            if not cli.exists():
                raise SystemExit(f"{cli} is missing: run `npm ci` (make bench does)")
            port = stack_mod.free_port()
            service = s._spawn("dynalite", ["node", str(cli), "--port", str(port), "--host", "127.0.0.1",
                                            "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"])
            started.append((port, service))
            upstreams.by_table = {t: f"http://127.0.0.1:{port}" for t in tables}
        else:
            for table in tables:
                port = stack_mod.free_port()
                service = s._spawn(f"moto-{table}", [sys.executable, str(ROOT / "scripts" / "moto_serial.py"),
                                                     "-H", "127.0.0.1", "-p", str(port)])
                started.append((port, service))
                upstreams.by_table[table] = f"http://127.0.0.1:{port}"
        for port, service in started:
            stack_mod.wait_for_port(port, service.proc, 120, service.name, service.log)
        return upstreams

    def start(self) -> None:
        s = self.stack
        s.state_dir.mkdir(parents=True, exist_ok=True)
        s.start_aws(replay=False)
        upstreams = self.start_dynamodb()
        # The stack's own set-up (tables, seeds, the figures' orders) goes the same way, undelayed.
        self.setup = DelayProxy(upstreams, 0, Recorder(), "aws")
        s.ports.moto = self.setup.port  # Stack.urls["moto"]: what Stack's own calls use
        s.create_tables(ttl=False)  # dynalite (--createTableMs 0) has them ACTIVE at once
        s.seed()
        s._start_kbank()
        delay = self.args.delay_ms / 1000
        self.aws = DelayProxy(upstreams, delay, self.recorder, "aws")
        self.kbank = DelayProxy(s.urls["kbank"], delay, self.recorder, "kbank")

    def stop(self) -> None:
        for p in (getattr(self, "aws", None), getattr(self, "kbank", None), getattr(self, "setup", None)):
            if p:
                p.close()
        self.stack.stop()

    def env(self, function: str) -> dict:
        env = {**os.environ, **self.stack.function_env()}
        env.update({
            "AWS_ENDPOINT_URL": self.aws.url,
            "AWS_ENDPOINT_URL_LAMBDA": self.aws.url,
            "KBANK_API_BASE": self.kbank.url,
            "DELAYED_NOTIFY_SECONDS": "0",
            "RUST_LOG": "warn",
            "AWS_LAMBDA_FUNCTION_NAME": function,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function}",
        })
        return env

    def run_binary(self, name: str, env: dict, events: list[Any]) -> tuple[float, float, list[tuple[float, float, str]], float, int]:
        """Spawns a binary under a fresh Runtime API and feeds it `events` one at a time.
        Returns start-up, first response, [(handed, answered, kind)] of the rest, peak RSS, failures."""
        api = RuntimeApi()
        own = name == "bench-baseline" or not self.args.bin_dir  # the baseline is always this checkout's
        binary = (ROOT / "target" / self.profile if own else self.args.bin_dir) / name
        log = open(self.state / f"{name}.log", "ab")
        first = events[0]
        api.events.put(("first", first))
        api.handed["first"] = 0.0
        t0 = now()
        proc = subprocess.Popen([str(binary)], env={**env, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.port}"},
                                stdout=log, stderr=subprocess.STDOUT)
        failures = 0
        try:
            rid, kind, at, body = api.answers.get(timeout=120)
            if api.first_next is None:
                raise RuntimeError(f"{name} answered before asking for an event: {kind} {body[:200]!r}")
            startup, first_response = api.first_next - t0, at - t0
            failures += not answered_ok(kind, body)
            warm = []
            for event in events[1:]:
                kind, handed, at, body = api.invoke(event)
                if not answered_ok(kind, body):
                    failures += 1
                    print(f"  {name}: {kind} {body[:300]!r}", file=sys.stderr)
                warm.append((handed, at, kind))
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.kill()
            proc.wait()
            api.close()
            log.close()
        return startup * 1000, first_response * 1000, warm, rss, failures

    def bench(self, f: Function) -> Result:
        n = self.args.n
        if f.prepare:
            for i in range(n + 1):
                f.prepare(self, i)
        events = [f.make_event(i) for i in range(n + 1)]
        startup, first, warm, rss, failures = self.run_binary(f.name, self.env(f.name), events)
        calls = [self.recorder.between(h, a) for h, a, _ in warm]
        result = Result(f.name, startup, first, [(a - h) * 1000 for h, a, _ in warm], rss, calls, failures,
                        spans=[(h, a) for h, a, _ in warm], delay_ms=self.args.delay_ms)
        if calls and calls[0]:
            result.baseline = self.baseline(calls[0])
        return result

    def baseline(self, calls: list[Call]) -> list[float]:
        _, depth = critical_path(calls)
        stages = [[{"method": c.method, "url": c.url, "headers": c.headers, "body": c.body}
                   for c, d in zip(calls, depth) if d == level] for level in range(1, max(depth) + 1)]
        plan = {"stages": stages}
        _, _, warm, _, _ = self.run_binary("bench-baseline", self.env("bench-baseline"), [plan] * (self.args.n + 1))
        return [(a - h) * 1000 for h, a, _ in warm]


def table(results: list[dict]) -> str:
    cols = [("function", "function", "{}"), ("start-up ms", "startup_ms", "{:.1f}"),
            ("first ms", "first_response_ms", "{:.1f}"), ("warm p50 ms", "warm_median_ms", "{:.1f}"),
            ("warm p99 ms", "warm_p99_ms", "{:.1f}"), ("RSS MB", "peak_rss_mb", "{:.1f}"),
            ("own ms", "own_median_ms", "{:.1f}"), ("modelled ms", "modelled_p50_ms", "{:.1f}"),
            ("calls", "calls_per_invocation", "{}"), ("critical", "critical_path_calls", "{}"),
            ("baseline p50", "baseline_warm_median_ms", "{:.1f}"), ("ratio", "ratio_to_baseline", "{:.2f}"),
            ("zip MB", "zip_mb", "{:.2f}"), ("panic", "panic", "{}")]
    rows = [[h for h, _, _ in cols]]
    for r in results:
        rows.append([fmt.format(r[k]) if r.get(k) is not None else "-" for _, k, fmt in cols])
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100, help="warm invocations per function (default 100)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="added to every AWS and KBank call (default 10)")
    parser.add_argument("--functions", help="comma-separated binaries (default: all)")
    parser.add_argument("--quick", action="store_true", help="debug binaries, n=3, no zips: proves the bench works")
    parser.add_argument("--no-zip", action="store_true", help="skip the arm64 zips")
    parser.add_argument("--no-build", action="store_true", help="use the binaries already built")
    parser.add_argument("--dynamodb", choices=("dynalite", "moto", "moto-one"), default="dynalite",
                        help="where the tables live: dynalite (default; an in-memory DynamoDB in Node), moto (a moto "
                             "process per table) or moto-one (the stack's one moto, as before 2026-11-30)")
    parser.add_argument("--bin-dir", type=Path,
                        help="take the functions' binaries from here (e.g. another checkout's target/release, "
                             "for a before/after pair); the baseline stays this checkout's; implies --no-build --no-zip")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.n = min(args.n, 3)
        args.no_zip = True
    if args.bin_dir:
        args.no_build = args.no_zip = True
    bench = Bench(args)
    if not args.no_build:
        bench.build()
    zips = {} if args.no_zip else bench.zips()
    wanted = set(args.functions.split(",")) if args.functions else None
    results = []
    bench.start()
    try:
        for f in bench.functions():
            if wanted and f.name not in wanted:
                continue
            r = bench.bench(f)
            r.zip_mb, r.panic = zips.get(f.name, (None, None))
            results.append(r.summary())
            print(f"  {f.name}: warm p50 {results[-1]['warm_median_ms']} ms", file=sys.stderr, flush=True)
    finally:
        bench.stop()
    report = {
        "machine": {"cpus": os.cpu_count(), "uname": " ".join(os.uname()[0:1] + os.uname()[2:3] + os.uname()[4:5])},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "delay_ms": args.delay_ms, "n": args.n, "profile": bench.profile,
        "local_aws": {"dynalite": "DynamoDB on dynalite, the rest on moto",
                      "moto": "one moto process per table", "moto-one": "one moto process"}[args.dynamodb],
        "functions": results,
    }
    print(f"\nmake bench: {report['date']}, {report['machine']['cpus']} CPUs, {report['machine']['uname']}, "
          f"{args.delay_ms:g} ms added to every AWS/KBank call, n={args.n}, {bench.profile} binaries, "
          f"local AWS: {report['local_aws']}\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nJSON: {args.json}")
    bad = [r["function"] for r in results if r["failures"] or not r["warm_median_ms"]]
    if bad:
        print(f"\nfailed invocations in: {', '.join(bad)} (see {bench.state}/<function>.log)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
