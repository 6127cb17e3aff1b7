#!/usr/bin/env python3
"""The front door of the local stack: API Gateway's routes and the Lambda Invoke API, on one port,
in front of `cargo lambda watch` (which runs the function binaries).

Why not watch alone:
- watch (cargo-lambda 1.9.2) ignores `X-Amz-Invocation-Type: Event`: it runs the function and
  answers 200 with its result once it has finished. An "async" invoke from wallet to process-paid
  (or from notify to delayed notify, which waits DELAYED_NOTIFY_SECONDS) would block the caller.
- watch's HTTP routes ([watch.router]) hand the function a function-URL (HTTP API v2) event and
  read the answer as a v2 response (tried: a function's REST response came back as watch's own
  500), while the deployed routes
  are a REST API (template.yaml: AWS::Serverless::Api) whose functions get v1 proxy events and
  answer v1 proxy responses. Here a route gets exactly what API Gateway would send.

Served:
- `POST /2015-03-31/functions/{name}/invocations` (the functions' AWS_ENDPOINT_URL_LAMBDA):
  `Event`: logged, answered 202 at once, run through watch in the background; a failed run
  (function error or 5xx) is retried up to --retries times after --retry-delay seconds (Lambda: 2
  retries, minutes apart). `RequestResponse` (default) / `DryRun`: as Lambda answers them,
  a function error included (200 with `X-Amz-Function-Error: Unhandled`; watch answers it 500).
- every `--route METHOD PATH BINARY` (the stack passes template.yaml's API events): the request
  becomes a REST API v1 proxy event for BINARY; its v1 proxy response becomes the HTTP answer
  (a function error or malformed response is 502 `{"message": "Internal server error"}`, as
  API Gateway answers). Other paths: 403 `{"message": "Missing Authentication Token"}`, as API Gateway.
- `GET /_local/pending`: how many Event invokes have not finished their last run.
- `--alias NAME BINARY`: the Invoke API also answers to the deployed function names
  (`payment3-wallet-callback-<branch>`), as the operator tool (crates/cli) invokes them.
- `--on-failure BINARY QUEUE`: an Event invoke of BINARY that failed its last retry is sent to the
  SQS queue QUEUE (on --aws-endpoint) as Lambda's on-failure destination sends it: the invocation
  record {version, timestamp, requestContext {requestId, functionArn, condition,
  approximateInvokeCount}, requestPayload, responseContext, responsePayload}.
- `PUT /_local/fail` `{"function": "process-paid-wallet", "status": 429, "count": 1}`: the next
  `count` invokes of that function fail as Lambda's Invoke API fails them (429
  TooManyRequestsException, 500 ServiceException, ...), without running it: a real invoke failure
  for the caller (logged with `"failed": status`).

Every invoke and every background run is appended to --log (JSON lines), which is how the
end-to-end tests count dispatches:
    {"id", "function", "type", "payload", "received"[, "caller"]}     on arrival
    {"id", "function", "type": "run", "attempt", "status", "error" | "result", "started", "finished"}
                                                                      after each background run

Run: python scripts/local_gateway.py --port 9000 --upstream http://127.0.0.1:<watch port> --log invokes.jsonl \
         --route POST /wallet/callback wallet ...
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

INVOKE_PREFIX = "/2015-03-31/functions/"
INVOKE_SUFFIX = "/invocations"


class Front:
    def __init__(self, upstream: str, log_path: str, retries: int, retry_delay: float, timeout: float,
                 routes: list[tuple[str, str, str]], aliases: dict[str, str] | None = None,
                 on_failure: dict[str, str] | None = None, aws_endpoint: str | None = None,
                 region: str = "ap-southeast-1"):
        self.routes = {(method.upper(), path): binary for method, path, binary in routes}
        self.aliases = aliases or {}
        self.on_failure = on_failure or {}
        self.aws_endpoint = aws_endpoint
        self.region = region
        self.upstream = upstream.rstrip("/")
        self.log_path = log_path
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.lock = threading.Lock()
        self.pending = 0  # Event invokes whose last run has not finished
        self.failures: dict[str, list[int]] = {}  # function -> statuses of its next invokes

    def injected_failure(self, function: str) -> int | None:
        with self.lock:
            queue = self.failures.get(function)
            return queue.pop(0) if queue else None

    def log(self, entry: dict) -> None:
        line = json.dumps(entry)
        with self.lock, open(self.log_path, "a") as f:
            f.write(line + "\n")

    def call(self, function: str, payload: bytes) -> tuple[int, dict, bytes]:
        """One synchronous run through watch: (status, headers, body); 599 when unreachable."""
        function = self.aliases.get(function, function)
        url = f"{self.upstream}{INVOKE_PREFIX}{function}{INVOKE_SUFFIX}"
        req = urllib.request.Request(url, data=payload, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()
        except (urllib.error.URLError, OSError) as e:
            return 599, {}, json.dumps({"errorType": "EmulatorUnreachable", "errorMessage": str(e)}).encode()

    def run_event(self, invoke_id: str, function: str, payload: bytes) -> None:
        try:
            self._run_event(invoke_id, function, payload)
        finally:
            with self.lock:
                self.pending -= 1

    def _run_event(self, invoke_id: str, function: str, payload: bytes) -> None:
        body = b""
        for attempt in range(1 + self.retries):
            if attempt:
                time.sleep(self.retry_delay * attempt)
            started = time.time()
            status, _, body = self.call(function, payload)
            failed = status != 200
            text = body.decode(errors="replace")[:2000]
            self.log({"id": invoke_id, "function": function, "type": "run", "attempt": attempt + 1,
                      "status": status, "error": text if failed else None, "result": None if failed else text,
                      "started": started, "finished": time.time()})
            if not failed:
                return
        queue = self.on_failure.get(self.aliases.get(function, function))
        if queue is None:
            sys.stderr.write(f"local-gateway: {function} event {invoke_id} failed {1 + self.retries} times; dropped "
                             "(no on-failure destination)\n")
            return
        self.send_to_destination(queue, invoke_id, function, payload, body, 1 + self.retries)

    def send_to_destination(self, queue: str, invoke_id: str, function: str, payload: bytes, response: bytes,
                            attempts: int) -> None:
        """Lambda's on-failure destination: the invocation record, sent to an SQS queue."""
        import boto3

        def as_json(raw: bytes):
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return raw.decode(errors="replace")

        record = {
            "version": "1.0",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "requestContext": {
                "requestId": invoke_id,
                "functionArn": f"arn:aws:lambda:{self.region}:123456789012:function:{function}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": as_json(payload),
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": as_json(response),
        }
        from botocore.config import Config

        # Short timeouts, one attempt: a stopped local AWS (an outage test) must not hold wait_idle.
        config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})
        try:
            sqs = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name=self.region).client("sqs", endpoint_url=self.aws_endpoint,
                                                                        config=config)
            url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
        except Exception as e:  # noqa: BLE001 - Lambda would retry the destination; here it is logged
            sys.stderr.write(f"local-gateway: {function} event {invoke_id} failed {attempts} times; "
                             f"could not send it to {queue}: {e}\n")
            return
        sys.stderr.write(f"local-gateway: {function} event {invoke_id} failed {attempts} times; sent to {queue}\n")


def rest_event(method: str, path: str, query: str, headers, body: bytes, source_ip: str) -> dict:
    """The API Gateway REST API (v1) proxy event for a request, as the deployed routes send it."""
    from urllib.parse import parse_qs

    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers.items():
        single[name] = value
        multi.setdefault(name, []).append(value)
    params = parse_qs(query, keep_blank_values=True) if query else {}
    try:
        text, is_b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode(), True
    now = time.time()
    request_id = str(uuid.uuid4())
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": {k: v[-1] for k, v in params.items()} or None,
        "multiValueQueryStringParameters": params or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": path,
            "httpMethod": method,
            "extendedRequestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/local{path}",
            "accountId": "000000000000",
            "protocol": "HTTP/1.1",
            "stage": "local",
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent")},
            "domainName": "localhost",
            "apiId": "local",
        },
        "body": text if body else None,
        "isBase64Encoded": is_b64,
    }


def rest_response(answer: dict) -> tuple[int, dict, bytes]:
    """A v1 proxy response as API Gateway turns it into HTTP; malformed raises ValueError."""
    if not isinstance(answer, dict) or not isinstance(answer.get("statusCode"), int):
        raise ValueError("malformed Lambda proxy response: no integer statusCode")
    headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
    for name, values in (answer.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(map(str, values))
    body = answer.get("body") or ""
    if not isinstance(body, str):
        raise ValueError("malformed Lambda proxy response: body is not a string")
    raw = base64.b64decode(body) if answer.get("isBase64Encoded") else body.encode()
    headers.setdefault("Content-Type", "application/json")
    return answer["statusCode"], headers, raw


class Handler(BaseHTTPRequestHandler):
    server_version = "payment3-local-gateway/1"
    protocol_version = "HTTP/1.1"
    front: Front

    def log_message(self, fmt, *args):
        pass  # every invoke is in the JSON log; watch prints the function's own logs

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_local/pending":
            with self.front.lock:
                body = json.dumps({"pending": self.front.pending}).encode()
            return self._send(200, body, {"Content-Type": "application/json"})
        self._route("GET")

    def _route(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        binary = self.front.routes.get((method, path))
        if binary is None:
            return self._send(403, b'{"message":"Missing Authentication Token"}', {"Content-Type": "application/json"})
        event = rest_event(method, path, query, self.headers, body, self.client_address[0])
        status, _, answer = self.front.call(binary, json.dumps(event).encode())
        try:
            if status != 200:
                raise ValueError(f"function error {status}")
            status, headers, raw = rest_response(json.loads(answer))
        except (ValueError, TypeError, KeyError) as e:
            sys.stderr.write(f"local-gateway: {method} {path} -> {binary}: {e}: {answer[:300]!r}\n")
            return self._send(502, b'{"message": "Internal server error"}', {"Content-Type": "application/json"})
        self._send(status, raw, headers)

    def _inject(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            spec = json.loads(self.rfile.read(length) or b"{}")
            function, status, count = spec["function"], int(spec.get("status", 429)), int(spec.get("count", 1))
        except (ValueError, KeyError, TypeError):
            return self._send(400, b'{"message": "expected {function, status, count}"}')
        with self.front.lock:
            self.front.failures.setdefault(function, []).extend([status] * count)
        return self._send(200, b"{}")

    def do_PUT(self):
        if self.path == "/_local/fail":
            return self._inject()
        self._route("PUT")

    def do_OPTIONS(self):
        # CORS preflight: routed like any method (the bill APIs declare OPTIONS routes and answer them).
        self._route("OPTIONS")

    def do_PATCH(self):
        self._route("PATCH")

    def do_DELETE(self):
        self._route("DELETE")

    def do_POST(self):
        path = self.path.split("?")[0]
        if not (path.startswith(INVOKE_PREFIX) and path.endswith(INVOKE_SUFFIX)):
            return self._route("POST")
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length) if length else b""
        # A name, a partial or full ARN: the function name is the part after "function:".
        function = unquote(path[len(INVOKE_PREFIX):-len(INVOKE_SUFFIX)])
        if ":function:" in function:
            function = function.split(":function:", 1)[1]
        function = function.split(":")[0]
        kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        invoke_id = str(uuid.uuid4())
        front = self.front
        entry = {"id": invoke_id, "function": function, "type": kind,
                 "payload": payload.decode(errors="replace"), "received": time.time()}
        if self.headers.get("X-Local-Caller"):  # the test harness, not a function
            entry["caller"] = self.headers["X-Local-Caller"]
        failure = front.injected_failure(function)
        if failure is not None:
            entry["failed"] = failure
        front.log(entry)
        common = {"x-amzn-RequestId": invoke_id, "Content-Type": "application/json"}
        if failure is not None:
            error_type = {429: "TooManyRequestsException", 404: "ResourceNotFoundException"}.get(
                failure, "ServiceException")
            body = json.dumps({"Type": "User" if failure < 500 else "Service",
                               "message": "Rate Exceeded." if failure == 429 else "injected failure"})
            return self._send(failure, body.encode(), {**common, "x-amzn-ErrorType": error_type})

        if kind == "Event":
            with front.lock:
                front.pending += 1
            threading.Thread(target=front.run_event, args=(invoke_id, function, payload), daemon=True).start()
            return self._send(202, b"", common)
        if kind == "DryRun":
            return self._send(204, b"", common)

        status, headers, body = front.call(function, payload)
        if status == 200:
            return self._send(200, body, {**common, "X-Amz-Executed-Version": "$LATEST"})
        if status == 500:
            # watch's answer to a function error; Lambda's is 200 plus this header.
            return self._send(200, body, {**common, "X-Amz-Function-Error": "Unhandled",
                                          "X-Amz-Executed-Version": "$LATEST"})
        error_type = "ServiceException" if status >= 500 else "ResourceNotFoundException"
        return self._send(status if status < 599 else 502, body,
                          {**common, "x-amzn-ErrorType": headers.get("x-amzn-ErrorType", error_type)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="cargo lambda watch, e.g. http://127.0.0.1:9000")
    parser.add_argument("--log", required=True, help="JSON-lines file of every invoke")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--retry-delay", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="longest run of one function")
    parser.add_argument("--route", nargs=3, action="append", default=[], metavar=("METHOD", "PATH", "BINARY"),
                        help="an API route and the function binary behind it (repeatable)")
    parser.add_argument("--alias", nargs=2, action="append", default=[], metavar=("NAME", "BINARY"),
                        help="a deployed function name the Invoke API resolves to a binary (repeatable)")
    parser.add_argument("--on-failure", nargs=2, action="append", default=[], metavar=("BINARY", "QUEUE"),
                        help="the SQS queue a finally-failed Event invoke of BINARY goes to (repeatable)")
    parser.add_argument("--aws-endpoint", help="the local AWS (moto) holding the on-failure queues")
    parser.add_argument("--region", default="ap-southeast-1")
    args = parser.parse_args()
    Handler.front = Front(args.upstream, args.log, args.retries, args.retry_delay, args.timeout, args.route,
                          dict(args.alias), dict(args.on_failure), args.aws_endpoint, args.region)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
