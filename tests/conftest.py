"""The end-to-end harness: one local stack per test session (scripts/stack.py), on free ports,
in its own state directory, stopped afterwards whatever happens.

Fixtures for tests that drive the real binaries:
  stack      the running `Stack` (its methods: invoke, post, scan, get, put_order,
             put_card_payment, set_charge, seed_given, invocations, runs, wait_idle,
             sent_emails, stop_aws/start_aws, ...)
  dynamodb   boto3 DynamoDB resource on the local AWS; `ddb` the client
  tables     table names by short name: tables["wallet-callback-record"], tables["order-table"]
  invoke     invoke("process-paid-wallet", payload) -> (HTTP status, decoded Lambda response)
  post       post("/wallet/callback", body, headers=None) -> (status, headers, raw body)
  kbank      kbank("PUT", "/_admin/charges/chrg_x", {...}): the fake KBank's admin API
  replay     replay(name, via) -> Replay: one fixture of tests/expected_events.json, seeded from
             its `given`, sent via "invoke" or "http", with what it wrote and dispatched

The stack is started only when a test asks for it, so `pytest tests/test_template.py` stays quick.
"""

from __future__ import annotations

import atexit
import json
import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import stack as local_stack  # noqa: E402

# The error log's `function_name` per binary (the original's names, SPEC 6): lets a test tell the
# replayed function's own error-log items from those of the functions it dispatched to.
ERROR_LOG_NAME = {
    "wallet": "walletcallback",
    "bankapp": "bankappcallback",
    "amex": "amexcallback",
    "notify": "notify",
    "delayed-notify": "delayednotify",
    "process-paid": "processpaidorder",
    "process-paid-wallet": "processpaidwalletorder",
    "process-paid-amex": "processpaidamexorder",
    "salary-import": "salaryimport",
    "bills-import": "billsimport",
    "bills-balance": "billsbalance",
    "bills-pay": "billspay",
    "recharge-webhook": "rechargewebhook",
    "recharge-dunning": "rechargedunning",
}


def manifest() -> dict[str, dict]:
    return json.loads(local_stack.MANIFEST.read_text())


def _interrupt(*_):
    raise KeyboardInterrupt


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> local_stack.Stack:
    state = tmp_path_factory.mktemp("local-stack")
    st = local_stack.Stack(state_dir=state, delayed_notify_seconds=1)
    atexit.register(st.stop)  # also when the session dies without running fixture teardown
    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so the teardown below runs.
    signal.signal(signal.SIGTERM, _interrupt)
    st.start()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture(scope="session")
def dynamodb(stack):
    return stack.dynamodb_resource()


@pytest.fixture(scope="session")
def ddb(stack):
    return stack.boto("dynamodb")


@pytest.fixture(scope="session")
def tables(stack) -> dict[str, str]:
    return stack.tables


@pytest.fixture
def invoke(stack):
    def call(function: str, payload: Any) -> tuple[int, Any]:
        status, _, body = stack.invoke(function, payload)
        return status, body

    return call


@pytest.fixture
def post(stack):
    return stack.post


@pytest.fixture
def kbank(stack):
    return stack.kbank


def new_order_id() -> str:
    """A fresh 12-digit order id, so tests sharing one stack do not see each other's items."""
    return "49" + str(uuid.uuid4().int)[:10]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On an end-to-end failure, attach the tail of each service's log to the report."""
    outcome = yield
    report = outcome.get_result()
    st = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if report.failed and st is not None:
        for service in ("gateway", "watch", "kbank", "recharge", "moto"):
            log = st.state_dir / "logs" / f"{service}.log"
            if log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
                report.sections.append((f"{service} log (last 60 lines)", tail))


# --------------------------------------------------------------------------- fixture replay


@dataclass
class Replay:
    name: str
    expected: dict
    via: str
    status: int = 0
    body_text: str = ""
    response: Any = None  # the Lambda response (invoke) or None (http)
    dispatched: list[str] = field(default_factory=list)
    new_errors: list[dict] = field(default_factory=list)
    new_inbox: list[dict] = field(default_factory=list)


def _keys(items: list[dict], *names: str) -> set:
    return {tuple(str(i.get(n)) for n in names) for i in items}


@pytest.fixture
def replay(stack):
    def run(name: str, via: str) -> Replay:
        expected = manifest()[name]
        stack.seed_given(expected.get("given"))

        stack.wait_idle()
        errors_before = stack.scan("callback-error-log")
        inbox_before = stack.scan("callback-inbox")
        position = stack.invoke_log_position()

        result = Replay(name, expected, via)
        # Callback fixtures are signed now, as their gateway would (signatures expire in 300 s).
        event = local_stack.signed_fixture(expected["function"], local_stack.fixture(name))
        if via == "http":
            raw, headers = local_stack.http_request_of(event)
            result.status, _, body = stack.post(expected["route"], raw, headers)
            result.body_text = body.decode(errors="replace")
        else:
            http_status, _, response = stack.invoke(expected["function"], event)
            assert http_status == 200, f"{name}: the Invoke API answered {http_status}"
            result.response = response
            result.status = response.get("statusCode") if isinstance(response, dict) else None
            result.body_text = response.get("body", "") if isinstance(response, dict) else ""
        stack.wait_idle()

        result.dispatched = [i["function"] for i in stack.invocations(since=position)]
        known = _keys(errors_before, "id")
        own = ERROR_LOG_NAME[expected["function"]]
        result.new_errors = [e for e in stack.scan("callback-error-log")
                             if (str(e.get("id")),) not in known and e.get("function_name") == own]
        known_inbox = _keys(inbox_before, "orderId", "receivedAt#requestId")
        result.new_inbox = [e for e in stack.scan("callback-inbox")
                            if (str(e.get("orderId")), str(e.get("receivedAt#requestId"))) not in known_inbox]
        return result

    return run
