"""The operator tool (`payment3`, crates/cli; SPEC 12) end to end: the real binary, run as an
operator runs it, against the local stack (AWS_ENDPOINT_URL at moto, AWS_ENDPOINT_URL_LAMBDA at
the local gateway), on orders driven through the real functions.

Each test makes its own orders and charges, so the tests share one stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.request
import uuid
from decimal import Decimal

import pytest

from conftest import ROOT, new_order_id

import stack as local_stack

PAYMENT3 = ROOT / "target" / "debug" / "payment3"


def payment3(stack, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the binary as an operator would, with the stack's AWS environment (or `env`)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([str(PAYMENT3), *args], capture_output=True, text=True, timeout=120,
                          env={**base, **(stack.cli_env() if env is None else env)})


def trace_json(stack, order_id: str, *extra: str) -> dict:
    run = payment3(stack, "trace", order_id, "--json", *extra)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def wallet_callback(order_id: str, payment_id: str, success: bool = True, amount: float = 2339.0) -> dict:
    return {"orderId": order_id, "paymentId": payment_id, "success": success, "amount": amount,
            "userId": "u-cli", "message": "Payment successful" if success else "Insufficient funds"}


def notify_body(charge_id: str, amount: str, status: str = "success", state: str = "Authorized") -> str:
    key = local_stack.KBANK_SECRET_KEY
    check = hashlib.sha256(f"{charge_id}{Decimal(amount):.4f}THB{status}{state}{key}".encode()).hexdigest()
    return json.dumps({"id": charge_id, "amount": float(amount), "currency": "THB", "status": status,
                       "transaction_state": state, "checksum": check})


def card_order(stack, total: str, status: str, state: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:12]
    order_id, charge_id = new_order_id(), f"chrg_cli_{suffix}"
    stack.put_order(order_id, total)
    stack.put_card_payment({"token": f"tokn_cli_{suffix}", "chargeId": charge_id, "orderId": order_id})
    stack.set_charge(charge_id, amount=total, status=status, transaction_state=state)
    return order_id, charge_id


def invoke_event(stack, function: str, payload: dict) -> None:
    """An asynchronous (`Event`) invoke, as process-paid's callers make it."""
    req = urllib.request.Request(
        f"{stack.urls['gateway']}/2015-03-31/functions/{function}/invocations",
        data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Amz-Invocation-Type": "Event", "X-Local-Caller": "harness"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202


def queued_events(stack) -> list[dict]:
    """Every message of the failed-events queue (read without hiding them)."""
    sqs = stack.boto("sqs")
    url = stack.queue_url()
    seen: dict[str, dict] = {}
    for _ in range(20):
        out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        messages = out.get("Messages", [])
        new = [m for m in messages if m["MessageId"] not in seen]
        if not new:
            break
        seen.update({m["MessageId"]: json.loads(m["Body"]) for m in new})
    return list(seen.values())


# --------------------------------------------------------------------------- trace


def test_trace_of_a_paid_wallet_order_says_paid_by_what_and_when(stack):
    # Given an order paid through the wallet callback
    order_id = new_order_id()
    stack.put_order(order_id, "2339.0")
    status, _, body = stack.post_signed("/wallet/callback", wallet_callback(order_id, "pay_cli_paid"))
    assert status == 200, body
    stack.wait_idle()
    ledger = stack.get("paid-order", orderId=order_id)
    assert ledger["status"] == "PAID"

    # When the operator traces it
    trace = trace_json(stack, order_id)

    # Then the verdict names the payment and the ledger's time, and the timeline holds every source
    assert trace["verdict"]["kind"] == "paid"
    assert trace["verdict"]["text"] == f"paid by wallet pay_cli_paid at {ledger['paidAt']}"
    sources = [e["source"] for e in trace["timeline"]]
    assert sources.count("inbox") == 1 and "callback record" in sources
    assert "ledger" in sources and "order" in sources
    assert sources.index("inbox") < sources.index("ledger"), sources  # oldest first
    [delivery] = [e for e in trace["timeline"] if e["source"] == "inbox"]
    assert "walletcallback" in delivery["summary"] and "dispatched (200)" in delivery["summary"]
    assert trace["order"]["payment_status"] == "PAID" and trace["ledger"]["status"] == "PAID"
    assert trace["error_log_searched"] is True
    # And the text form ends with the same verdict line
    text = payment3(stack, "trace", order_id)
    assert text.returncode == 0, text.stderr
    assert text.stdout.rstrip().splitlines()[-1] == f"verdict: paid by wallet pay_cli_paid at {ledger['paidAt']}"


def test_trace_of_a_pending_card_order_says_pending_on_kbank(stack):
    # Given a card order whose notify arrived while KBank still reports the charge Pending
    order_id, charge_id = card_order(stack, "1250.50", status="pending", state="Pending")
    status, _, page = stack.post("/notify", notify_body(charge_id, "1250.50", "pending", "Pending"))
    assert status == 200, page
    stack.wait_idle()

    # When the operator traces the order (only its order id is known)
    trace = trace_json(stack, order_id)

    # Then the charge is found from the ledger, with its card payment record, notify records and
    # the notify delivery (filed under the charge id), and the verdict is pending on KBank
    assert trace["verdict"]["kind"] == "pending", trace["verdict"]
    assert trace["verdict"]["text"].startswith(f"pending on KBank: charge {charge_id}"), trace["verdict"]
    [charge] = trace["charges"]
    assert charge["charge_id"] == charge_id and "ledger" in charge["found_in"]
    assert charge["card_payment"]["order_id"] == order_id
    notes = [e["summary"] for e in trace["timeline"] if e["source"] == "notify record"]
    assert any(n.startswith("notify for") for n in notes) and any(n.startswith("delayed notify") for n in notes)
    [delivery] = [e for e in trace["timeline"] if e["source"] == "inbox"]
    assert f"filed under charge {charge_id}" in delivery["summary"]
    assert "checksum verified" in delivery["summary"]


def test_trace_of_a_rejected_callback_says_why_it_failed(stack):
    # Given an order whose only callback was rejected (no `success`)
    order_id = new_order_id()
    stack.put_order(order_id, "2339.0")
    bad = wallet_callback(order_id, "pay_cli_bad")
    del bad["success"]
    status, _, body = stack.post_signed("/wallet/callback", bad)
    assert status == 400, body
    stack.wait_idle()

    # When the operator traces it
    trace = trace_json(stack, order_id)

    # Then the verdict says the delivery was rejected, and why
    assert trace["verdict"]["kind"] == "failed", trace["verdict"]
    assert "rejected (400)" in trace["verdict"]["text"], trace["verdict"]
    assert "success is required" in trace["verdict"]["text"], trace["verdict"]
    assert trace["ledger"] is None


def test_trace_of_a_payment_process_paid_refused_names_the_error_from_the_error_log(stack):
    # Given a wallet success whose amount is not the order's total: process-paid refuses it
    order_id = new_order_id()
    stack.put_order(order_id, "2339.0")
    status, _, body = stack.post_signed("/wallet/callback", wallet_callback(order_id, "pay_cli_short", amount=1.0))
    assert status == 200, body
    stack.wait_idle()

    trace = trace_json(stack, order_id)

    # Then the error log entry is found through its orderId-index and the verdict names it
    errors = [e for e in trace["timeline"] if e["source"] == "error log"]
    assert errors, trace["timeline"]
    assert trace["verdict"]["kind"] == "failed", trace["verdict"]
    assert trace["verdict"]["text"].startswith("failed because processpaidwalletorder: "), trace["verdict"]


def test_trace_of_an_order_no_gateway_called_for_says_never_reached_us(stack):
    # Given an order the shop created, for which no gateway ever called
    order_id = new_order_id()
    stack.put_order(order_id, "99.0")

    trace = trace_json(stack, order_id)

    assert trace["verdict"]["kind"] == "never_reached", trace["verdict"]
    assert trace["verdict"]["text"].startswith("never reached us"), trace["verdict"]
    assert trace["timeline"] == []


def test_trace_of_an_unknown_order_is_a_clear_error(stack):
    run = payment3(stack, "trace", new_order_id())
    assert run.returncode == 3, (run.stdout, run.stderr)
    assert "is unknown" in run.stderr and run.stdout == ""


def test_a_wrong_branch_and_missing_credentials_are_clear_errors(stack):
    # A branch with no tables
    run = payment3(stack, "--branch", "nosuchbranch", "trace", "1")
    assert run.returncode == 1 and "branch \"nosuchbranch\" has no tables" in run.stderr, run.stderr
    # No credentials at all (no profile, no keys, no instance metadata)
    env = {k: v for k, v in stack.cli_env().items() if not k.startswith("AWS_ACCESS_KEY_ID")
           and not k.startswith("AWS_SECRET_ACCESS_KEY")}
    env.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "HOME": "/nonexistent"})
    run = payment3(stack, "tables", env=env)
    assert run.returncode == 1 and "no AWS credentials found" in run.stderr, run.stderr


def test_help_explains_the_commands(stack):
    run = payment3(stack, "--help")
    assert run.returncode == 0
    for word in ("trace", "replay", "redrive", "tables", "AWS_PROFILE", "AWS_ENDPOINT_URL", "--branch"):
        assert word in run.stdout, word


# --------------------------------------------------------------------------- tables


def test_tables_lists_each_table_of_the_branch_with_its_count(stack):
    # Given two more orders in the order table
    for _ in range(2):
        stack.put_order(new_order_id(), "1.0")
    expected = {name: stack.boto("dynamodb").describe_table(TableName=name)["Table"]["ItemCount"]
                for name in stack.tables.values()}

    run = payment3(stack, "tables", "--json")

    assert run.returncode == 0, run.stderr
    counts = {row["name"]: row["item_count"] for row in json.loads(run.stdout)}
    assert counts == expected
    assert counts[stack.table("order-table")] >= 2


# --------------------------------------------------------------------------- redrive


def test_redrive_empties_the_queue_of_an_event_that_now_succeeds_and_keeps_one_that_still_fails(stack):
    # Given two card orders whose KBank inquiry fails (503) on every attempt, invoked asynchronously:
    # after Lambda's retries both land in the failed-events queue
    fixed_order, fixed_charge = card_order(stack, "310.00", "success", "Authorized")
    broken_order, broken_charge = card_order(stack, "320.00", "success", "Authorized")
    for charge in (fixed_charge, broken_charge):
        stack.set_charge(charge, _answer_status=503)
    for order, charge in ((fixed_order, fixed_charge), (broken_order, broken_charge)):
        invoke_event(stack, "process-paid", {"orderId": order, "paymentType": "card", "chargeId": charge})
    stack.wait_idle()
    ours = lambda: {e["requestPayload"]["orderId"]: e for e in queued_events(stack)  # noqa: E731
                    if e["requestPayload"].get("orderId") in (fixed_order, broken_order)}
    queued = ours()
    assert set(queued) == {fixed_order, broken_order}
    record = queued[fixed_order]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].split(":function:")[1].startswith("process-paid")
    assert "responsePayload" in record

    # When the operator looks (dry run), then KBank recovers for one of them
    dry = payment3(stack, "redrive")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("process-paid") >= 2 and "dry run" in dry.stdout
    assert set(ours()) == {fixed_order, broken_order}, "a dry run must leave the queue as it was"
    stack.set_charge(fixed_charge, _answer_status=None)

    # And redrives with --yes
    run = payment3(stack, "redrive", "--yes")

    # Then the event that now succeeds is invoked, pays its order and leaves the queue; the other stays
    assert run.returncode == 1, (run.stdout, run.stderr)  # something is still failing
    assert "kept in the queue" in run.stdout
    assert set(ours()) == {broken_order}
    assert stack.get("paid-order", orderId=fixed_order)["status"] == "PAID"
    assert stack.get("paid-order", orderId=broken_order) is None
    stack.set_charge(broken_charge, _answer_status=None)  # leave nothing failing for other tests


# --------------------------------------------------------------------------- replay


def inbox_of(stack, key: str) -> list[dict]:
    table = stack.dynamodb_resource().Table(stack.table("callback-inbox"))
    return table.query(KeyConditionExpression="orderId = :o", ExpressionAttributeValues={":o": key},
                       ConsistentRead=True)["Items"]


def paid_notices(stack, order_id: str) -> list[dict]:
    return [m for m in stack.sent_emails() if m.get("source") == local_stack.NOTICE_FROM and order_id in json.dumps(m)]


def test_replaying_a_paid_delivery_changes_nothing_however_often(stack):
    # Given an order paid through the wallet callback, its one delivery in the inbox
    order_id = new_order_id()
    stack.put_order(order_id, "2339.0")
    status, _, body = stack.post_signed("/wallet/callback", wallet_callback(order_id, "pay_cli_replay"))
    assert status == 200, body
    stack.wait_idle()
    [original] = inbox_of(stack, order_id)
    key = original["receivedAt#requestId"]
    ledger = stack.get("paid-order", orderId=order_id)
    order = stack.get("order-table", orderId=order_id)
    record = stack.get("wallet-callback-record", orderId=order_id)
    notices = len(paid_notices(stack, order_id))
    assert ledger["status"] == "PAID" and notices == 1

    # When the operator asks for a replay: the delivery's signature was verified (SPEC 4.5), so
    # it needs no --force; a dry run says what it would do, and invokes nothing
    assert original["signatureVerified"] is True
    since = stack.invoke_log_position()
    run = payment3(stack, "replay", order_id)
    assert run.returncode == 0, run.stderr
    assert "payment3-wallet-callback-local" in run.stdout and "already PAID" in run.stdout
    assert "dry run" in run.stdout and stack.invocations(since=since) == []
    assert len(inbox_of(stack, order_id)) == 1

    # When it is replayed twice, for real
    for _ in range(2):
        run = payment3(stack, "replay", order_id, "--delivery", key, "--yes", "--operator", "e2e-operator")
        assert run.returncode == 0, (run.stdout, run.stderr)
        assert f"replayed {key} -> payment3-wallet-callback-local: 200" in run.stdout
        stack.wait_idle()

    # Then each replay is a new inbox entry marked as a replay of the original, which is untouched
    entries = inbox_of(stack, order_id)
    assert len(entries) == 3
    replays = [e for e in entries if e.get("replayOf")]
    assert [e["replayOf"] for e in replays] == [key, key]
    assert {e["replayOperator"] for e in replays} == {"e2e-operator"}
    assert [e for e in entries if not e.get("replayOf")] == [original]
    # And the functions' idempotency held: each replay dispatched process-paid, which found the
    # payment already applied; ledger and order are exactly as before, no second paid notice
    runs = [r for r in stack.runs(since=since) if r["function"] == "process-paid-wallet"]
    assert [json.loads(r["result"])["outcome"] for r in runs] == ["already_paid", "already_paid"], runs
    assert stack.get("paid-order", orderId=order_id) == ledger
    assert stack.get("order-table", orderId=order_id) == order
    after = stack.get("wallet-callback-record", orderId=order_id)
    for name in ("success", "paymentId", "amount", "created_at"):
        assert after[name] == record[name], name
    assert len(paid_notices(stack, order_id)) == notices
    # And the trace shows the replays, every page of the inbox query read (one item per page here)
    run = payment3(stack, "trace", order_id, "--json", env={**stack.cli_env(), "PAYMENT3_QUERY_PAGE_SIZE": "1"})
    assert run.returncode == 0, run.stderr
    trace = json.loads(run.stdout)
    assert sum(e["source"] == "inbox" for e in trace["timeline"]) == 3
    assert sum("REPLAY of " + key in e["summary"] for e in trace["timeline"]) == 2
    assert trace["verdict"]["kind"] == "paid"


def test_a_rejected_delivery_is_not_replayed_without_force(stack):
    order_id = new_order_id()
    bad = wallet_callback(order_id, "pay_cli_rejected")
    bad["success"] = "true"  # a string is not a boolean: 400
    status, _, _ = stack.post_signed("/wallet/callback", bad)
    assert status == 400
    [entry] = inbox_of(stack, order_id)
    since = stack.invoke_log_position()

    run = payment3(stack, "replay", order_id, "--delivery", entry["receivedAt#requestId"], "--yes")

    assert run.returncode == 4, (run.stdout, run.stderr)
    assert "was rejected" in run.stderr and "--force" in run.stderr
    assert stack.invocations(since=since) == [] and len(inbox_of(stack, order_id)) == 1
