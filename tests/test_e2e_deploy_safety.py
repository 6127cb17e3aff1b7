"""What deploying must not lose, run on the real binaries of the local stack (docs/deploy.md):

- a panic in a handler ends in one failed invocation, with the error path run (an error-log item)
  and the container still serving the next request (runtime::start::PanicGuard; the deployed build
  keeps panic = "unwind", which the closing note of issue 16 shows in a built bootstrap);
- the log line the stack's metric filters count is the one the functions write: a real 401 and a
  real 400 answer, read back from the functions' log, are matched by template.yaml's filter
  patterns exactly as CloudWatch would match them (tests/test_template.py evaluates the patterns).

The panic is asked for with a direct-invoke field that only debug builds look at (TEST_PANIC_FIELD
in runtime/start.rs); `make dev` and these tests run debug builds.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import stack as local_stack
from conftest import ERROR_LOG_NAME, new_order_id
from test_template import filter_matches, metric_filters

TEST_PANIC_FIELD = "payment3TestPanic"
FUNCTIONS = sorted(ERROR_LOG_NAME)  # every binary the stack runs, by its local function name


def test_a_panic_is_one_failed_invocation_with_the_error_path_run(stack):
    before = {e["id"] for e in stack.scan("callback-error-log")}
    marker = str(uuid.uuid4())

    def panic_once(function: str):
        return function, stack.invoke(function, {TEST_PANIC_FIELD: True, "probe": marker})

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = dict(pool.map(panic_once, FUNCTIONS))

    # Each invoke failed as Lambda reports a failed invocation: 200 with X-Amz-Function-Error.
    for function, (status, headers, body) in answers.items():
        assert status == 200, (function, status, body)
        assert headers.get("X-Amz-Function-Error") == "Unhandled", (function, headers, body)
        assert "panicked" in json.dumps(body), (function, body)

    # The error path ran once per invocation: one error-log item each, naming the panic.
    new = [e for e in stack.scan("callback-error-log") if e["id"] not in before and str(e.get("error", "")).startswith("panic:")]
    by_function = {}
    for item in new:
        by_function.setdefault(item["function_name"], []).append(item)
    for function in FUNCTIONS:
        items = by_function.get(ERROR_LOG_NAME[function], [])
        assert len(items) == 1, f"{function}: {len(items)} panic items in the error log: {items}"
        [item] = items
        assert item["errorType"] == "InternalError", item
        assert "test panic requested" in item["error"], item
        assert marker not in json.dumps(item, default=str), "the raw event of a panic is not stored"

    # And the function still serves: the next request is handled normally by the same stack.
    status, _, body = stack.post_signed("/wallet/callback", {"orderId": "", "paymentId": "p", "success": True, "userId": "u"})
    assert status == 400, body
    # (a direct invoke carries no signature: refused 401 under CALLBACK_AUTH_POLICY enforce, answered, not crashed)
    status, headers, response = stack.invoke("wallet", {"orderId": new_order_id()})
    assert status == 200 and "X-Amz-Function-Error" not in headers and response["statusCode"] == 401, response


def test_the_marker_cannot_come_through_a_route(stack):
    """API Gateway puts the request body in `body`: the field at the top of a body is not the
    top of the event, so a public caller cannot make a function panic."""
    before = {e["id"] for e in stack.scan("callback-error-log")}
    status, _, body = stack.post_signed("/wallet/callback", {TEST_PANIC_FIELD: True})
    assert status == 400, body
    new = [e for e in stack.scan("callback-error-log") if e["id"] not in before]
    assert not any(str(e.get("error", "")).startswith("panic:") for e in new), new


ANSWERED = re.compile(r'\{requestId="(?P<request>[^"]+)"[^}]*\}: answered (?P<fields>.*)$', re.M)
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def answered_lines(stack) -> list[dict]:
    """The functions' `answered` lines from watch's log, as the JSON subscriber would write them
    on Lambda (LogFormat: JSON): {"fields": {"message": "answered", "function": .., "status": ..}}."""
    text = (stack.state_dir / "logs" / "watch.log").read_text(errors="replace")
    lines = []
    for m in ANSWERED.finditer(text):
        fields = {"message": "answered"}
        for name, raw in FIELD.findall(m["fields"]):
            fields[name] = json.loads(raw) if raw.startswith('"') or raw.isdigit() else raw
        lines.append({"level": "INFO", "fields": fields, "span": {"requestId": m["request"]}})
    return lines


def pattern_of(metric: str) -> str:
    [pattern] = {f["Properties"]["FilterPattern"] for f in metric_filters().values()
                 if f["Properties"]["MetricTransformations"][0]["MetricName"] == metric}
    return pattern


def test_the_alarm_filters_count_the_answers_the_functions_log(stack):
    # A forged notify (401) and an invalid wallet callback (400), through their routes.
    forged = local_stack.notify_body("chrg_forged_" + uuid.uuid4().hex[:8], "10.00")
    forged["checksum"] = "0" * 64
    status, _, body = stack.post("/notify", forged)
    assert status == 401, body
    status, _, body = stack.post_signed("/wallet/callback", {"orderId": new_order_id()})
    assert status == 400, body

    deadline, lines = time.time() + 10, []
    while time.time() < deadline:
        lines = answered_lines(stack)
        statuses = {(line["fields"].get("function"), line["fields"].get("status")) for line in lines}
        if {("notify", 401), ("walletcallback", 400)} <= statuses:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no answered lines for the 401 and the 400 in watch's log: {lines[-5:]}")

    rejected, answered_5xx = pattern_of("RejectedSignatures"), pattern_of("Answered5xx")
    for line in lines:
        status = line["fields"]["status"]
        assert isinstance(status, int), line
        assert filter_matches(rejected, line) == (status == 401), line
        assert filter_matches(answered_5xx, line) == (status >= 500), line
