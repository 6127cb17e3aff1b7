"""The card path end to end on the local stack (SPEC 4.2-4.4): KBank's notify through the real
notify, delayed-notify and process-paid binaries, DynamoDB in moto, the fake KBank inquiry API.

Every test makes its own order, card payment record and charge, so tests share one stack
without seeing each other's items. What the tests count, and where it is read:
  order updates   moto's request recording (`moto-recording.jsonl`): UpdateItem calls on the
                  order table for the order, i.e. writes attempted, not just the final item
  paid notices    moto's SES (`Stack.sent_emails()`, /moto-api/data.json)
  outcomes        process-paid's own log line (`process-paid done ... outcome=`) in watch's log:
                  notify calls process-paid synchronously, so the invoke log has no result for it
  inquiries       the fake KBank's request log (`GET /_admin/requests`)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from boto3.dynamodb.conditions import Key

from conftest import new_order_id

import stack as local_stack

SECRET_KEY = "skey_test_payment3_local"  # the KBank demo secret the stack seeds (kbank-dev)
ALERT_COOLDOWN = 300  # ALERT_COOLDOWN_SECONDS in the stack's function environment
PROCESS_PAID = "process-paid"  # the card/QR process-paid, as watch names it
SHOP = "https://shop.e2e.example"  # the card payment records' `callback`


# --------------------------------------------------------------------------- KBank's side


def checksum(charge_id: str, amount: str, currency: str, status: str, state: str, key: str = SECRET_KEY) -> str:
    """SPEC 4.2 step 1, written independently of the Rust code: lowercase hex SHA-256 of
    id + amount (four decimals, from the decimal text) + currency + status + transaction_state + key."""
    amount4 = f"{Decimal(amount):.4f}"  # Decimal from the text: no float on the way
    return hashlib.sha256((charge_id + amount4 + currency + status + state + key).encode()).hexdigest()


def notify_json(charge_id: str, amount: str, status: str = "success", state: str = "Authorized",
                check: str | None = None) -> str:
    """A notify body as KBank writes it: JSON with the amount as a number in its own text
    (`2339.00`), plus fields the function must keep though it does not read them."""
    check = checksum(charge_id, amount, "THB", status, state) if check is None else check
    return ('{"id": "%s", "object": "charge", "amount": %s, "currency": "THB", "status": "%s", '
            '"transaction_state": "%s", "livemode": false, "checksum": "%s"}'
            % (charge_id, amount, status, state, check))


# --------------------------------------------------------------------------- helpers


class Card:
    """A fresh card order: the order, its card payment record, and the charge in the fake KBank."""

    def __init__(self, stack, total: str = "2339.00", status: str = "success", state: str = "Authorized"):
        suffix = uuid.uuid4().hex[:16]
        self.order_id = new_order_id()
        self.charge_id = f"chrg_e2e_{suffix}"
        self.token = f"tokn_e2e_{suffix}"
        self.total = total
        stack.put_order(self.order_id, total)
        stack.put_card_payment({"token": self.token, "chargeId": self.charge_id, "orderId": self.order_id,
                                "callback": SHOP})
        stack.set_charge(self.charge_id, amount=total, status=status, transaction_state=state)

    def process_paid_event(self) -> dict:
        return {"orderId": self.order_id, "paymentType": "card", "chargeId": self.charge_id}

    def redirect(self, status: str, amount: str | None = None) -> str:
        """The thank-you URL of the redirect page, as the page writes it (HTML-escaped)."""
        return (f"{SHOP}/thankyou?orderId={self.order_id}&amp;status={status}"
                f"&amp;amount={amount or self.total}")


def notify_records(stack, charge_id: str) -> list[dict]:
    table = stack.dynamodb_resource().Table(stack.table("credit-card-notify"))
    return table.query(KeyConditionExpression=Key("chargeId").eq(charge_id), ConsistentRead=True)["Items"]


def by_note(records: list[dict], note: str) -> list[dict]:
    return [r for r in records if r.get("note") == note]


def inbox_of(stack, key: str) -> list[dict]:
    table = stack.dynamodb_resource().Table(stack.table("callback-inbox"))
    return table.query(KeyConditionExpression=Key("orderId").eq(key), ConsistentRead=True)["Items"]


def errors_for(stack, *, charge_id: str | None = None, order_id: str | None = None) -> list[dict]:
    return [e for e in stack.scan("callback-error-log")
            if (charge_id and e.get("chargeId") == charge_id) or (order_id and e.get("orderId") == order_id)]


def paid_notices(stack, order_id: str) -> list[dict]:
    return [m for m in stack.sent_emails()
            if m.get("source") == local_stack.NOTICE_FROM and f"order {order_id} paid" in m.get("subject", "")]


def alerts_naming(stack, function: str, charge_id: str) -> list[dict]:
    return [m for m in stack.sent_emails()
            if m.get("source") == local_stack.ALERT_FROM
            and m.get("subject") == f"[payment3][{stack.branch}] {function} error"
            and f"Charge: {charge_id}\n" in m.get("body", "")]


def order_updates(stack, order_id: str) -> list[dict]:
    """Every UpdateItem the local AWS received for this order's item in the order table."""
    table = stack.table("order-table")
    found = []
    recording = stack.state_dir / "moto-recording.jsonl"
    for line in recording.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("headers", {}).get("X-Amz-Target") != "DynamoDB_20120810.UpdateItem":
            continue
        body = entry.get("body") or ""
        body = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
        request = json.loads(body)
        if request.get("TableName") == table and request.get("Key", {}).get("orderId") == {"S": order_id}:
            found.append(request)
    return found


OUTCOME_LINE = re.compile(r'process-paid done function="processpaidorder" order_id="(?P<order>[^"]+)" '
                          r'outcome="(?P<outcome>[a-z_]+)"')


def logged_outcomes(stack, order_id: str, at_least: int = 0) -> list[str]:
    """The outcome of every card process-paid run for the order, from the functions' log. The
    line is written before the run answers, but reaches the file through watch's pipe: with
    `at_least`, waits (up to 10 s) until that many lines are there."""
    log = stack.state_dir / "logs" / "watch.log"

    def read():
        text = log.read_text(errors="replace")
        found = sorted(m["outcome"] for m in OUTCOME_LINE.finditer(text) if m["order"] == order_id)
        return found if len(found) >= at_least else None

    return read() if not at_least else wait_until(read, 10, f"{at_least} process-paid log lines for {order_id}")


def inquiries(stack, charge_id: str) -> list[dict]:
    return [r for r in stack.kbank("GET", "/_admin/requests") if r["chargeId"] == charge_id]


def dispatches(stack, since: int, function: str, charge_id: str) -> list[dict]:
    return [i for i in stack.invocations(since=since) if i["function"] == function and charge_id in i["payload"]]


def runs_of(stack, since: int, invoke_ids: set[str]) -> list[dict]:
    return [r for r in stack.runs(since=since) if r["id"] in invoke_ids]


def invoke_event(stack, function: str, payload: dict) -> str:
    """An asynchronous (`Event`) invoke through the Invoke API, as Lambda's async callers make it;
    returns its request id (the id of its background runs in the invoke log)."""
    req = urllib.request.Request(
        f"{stack.urls['gateway']}/2015-03-31/functions/{function}/invocations",
        data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Amz-Invocation-Type": "Event", "X-Local-Caller": "harness"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202
        return resp.headers["x-amzn-RequestId"]


def post_notify(stack, body: str, content_type: str = "application/json"):
    status, headers, raw = stack.post("/notify", body, {"Content-Type": content_type})
    return status, headers, raw.decode(errors="replace")


def wait_until(condition, timeout: float, what: str, interval: float = 0.02):
    """Polls `condition` (no fixed sleep): returns its first truthy value, fails after `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def assert_paid_once(stack, card: Card) -> dict:
    """The order is paid by this charge, by exactly one order update and one paid notice."""
    order = stack.get("order-table", orderId=card.order_id)
    assert order["paymentStatus"] == "PAID", order
    assert order["paymentType"] == "card" and order["paymentId"] == card.charge_id, order
    assert order["paidAt"]
    assert order["data"]["status"] == "pending_payment", "the order's own document is the shop's"
    ledger = stack.get("paid-order", orderId=card.order_id)
    assert ledger["status"] == "PAID" and ledger["paymentType"] == "card", ledger
    assert ledger["paymentId"] == card.charge_id and ledger["chargeId"] == card.charge_id, ledger
    assert ledger["amount"] == Decimal(card.total), ledger
    assert ledger["effectsDone"] is True, ledger
    assert ledger["paidAt"] == order["paidAt"], (ledger, order)
    updates = order_updates(stack, card.order_id)
    assert len(updates) == 1, f"order updated {len(updates)} times: {updates}"
    notices = paid_notices(stack, card.order_id)
    assert len(notices) == 1, notices
    assert f"Payment id: {card.charge_id}\n" in notices[0]["body"], notices[0]
    outcomes = logged_outcomes(stack, card.order_id, at_least=1)
    assert outcomes.count("paid") == 1, outcomes
    return order


def assert_unpaid(stack, card: Card, ledger_status: str | None) -> None:
    order = stack.get("order-table", orderId=card.order_id)
    assert not ({"paymentStatus", "paidAt", "paymentType", "paymentId"} & set(order)), order
    ledger = stack.get("paid-order", orderId=card.order_id)
    assert (ledger or {}).get("status") == ledger_status, ledger
    assert order_updates(stack, card.order_id) == []
    assert paid_notices(stack, card.order_id) == []


# --------------------------------------------------------------------------- 0. the stack's settings


def test_stack_runs_the_card_functions_under_enforce_with_a_short_delayed_wait(stack):
    # The functions get their settings from this file (watch's --env-file): what the tests below rely on.
    env = dict(line.split("=", 1) for line in (stack.state_dir / "functions.env").read_text().splitlines() if line)
    assert env["CHECKSUM_POLICY"] == "enforce"  # SPEC 4.2: the default, and the stack's
    assert env["DELAYED_NOTIFY_SECONDS"] == "1"
    assert env["ALERT_COOLDOWN_SECONDS"] == str(ALERT_COOLDOWN)
    assert env["KBANK_API_BASE"] == stack.urls["kbank"] and env["KBANK_SECRET_NAME"] == "kbank-dev"
    secret = stack.boto("secretsmanager").get_secret_value(SecretId="kbank-dev")["SecretString"]
    assert json.loads(secret)["secretKey"] == SECRET_KEY
    # The independent checksum agrees with the one the demo curl (and the fixtures) are signed with.
    demo = local_stack.notify_body("chrg_demo_482500007437", "1250.50")
    assert demo["checksum"] == checksum("chrg_demo_482500007437", "1250.50", "THB", "success", "Authorized")


# --------------------------------------------------------------------------- 1. forged checksum


def _prior_checksum_incident_age(stack) -> float | None:
    """Seconds since the latest notify ChecksumError incident of this session, if any."""
    times = [datetime.fromisoformat(e["created_at"]) for e in stack.scan("callback-error-log")
             if e.get("function_name") == "notify" and e.get("errorType") == "ChecksumError"]
    return (datetime.utcnow() - max(times)).total_seconds() if times else None


@pytest.mark.parametrize("kind", ["forged", "missing"])
def test_bad_checksum_under_enforce_is_401_recorded_alerted_and_never_processed(stack, kind):
    # Given an order whose charge KBank reports as Authorized: were the checksum ignored, it would get paid
    card = Card(stack)
    stack.wait_idle()
    if kind == "forged":  # signed with a key that is not the merchant's
        body = notify_json(card.charge_id, card.total,
                           check=checksum(card.charge_id, card.total, "THB", "success", "Authorized", "skey_forged"))
    else:
        body = notify_json(card.charge_id, card.total).replace(', "checksum": "', ', "nochecksum": "')
    # Alerts of one kind are held for the cooldown (SPEC 6.3), in the shared gate and per container:
    # whether this one may e-mail depends on an earlier ChecksumError of this session.
    prior = _prior_checksum_incident_age(stack)
    if prior is not None and ALERT_COOLDOWN - 10 < prior < ALERT_COOLDOWN + 10:
        pytest.skip("an earlier ChecksumError alert is at the edge of its cooldown")  # not seen in practice
    since = stack.invoke_log_position()

    # When KBank (or someone pretending to be it) POSTs it
    status, headers, text = post_notify(stack, body)
    stack.wait_idle()

    # Then it is refused with 401 and a message that says no more than that
    assert status == 401, text
    assert json.loads(text) == {"success": False, "error": "checksum verification failed",
                                "message": "Failed to process notify"}
    # And the attempt is stored, marked unverified, on the notify record and the card payment record
    [record] = notify_records(stack, card.charge_id)
    assert record["note"] == "notify" and record["checksumVerified"] is False, record
    assert record["checksumError"] and record["orderId"] == card.order_id, record
    assert json.loads(record["body"])["id"] == card.charge_id and json.loads(record["body"])["livemode"] is False
    assert stack.get("card-payment-record", token=card.token)["checksumVerified"] is False
    [delivery] = inbox_of(stack, card.charge_id)
    assert delivery["function"] == "notify"
    # And it went down the error path: an error-log item, and an alert unless one is cooling down
    [error] = errors_for(stack, charge_id=card.charge_id)
    assert error["function_name"] == "notify" and error["errorType"] == "ChecksumError", error
    assert error["orderId"] == card.order_id and error["status"] == 401, error
    alerts = alerts_naming(stack, "notify", card.charge_id)
    if prior is None or prior > ALERT_COOLDOWN:
        assert len(alerts) == 1, alerts
        assert "Error type: ChecksumError\n" in alerts[0]["body"]
        assert alerts[0]["destinations"]["ToAddresses"] == [local_stack.ALERT_TO]
        assert SECRET_KEY not in alerts[0]["body"]
    else:  # a ChecksumError alert went out less than ALERT_COOLDOWN_SECONDS ago: held
        assert alerts == [], "a second ChecksumError alert within the cooldown"
        gate = stack.get("alert-cooldown", alertKey="notify#ChecksumError")
        assert time.time() - int(gate["sentAt"]) < ALERT_COOLDOWN, gate
    # And nothing was processed: no process-paid, no delayed notify, no inquiry, no ledger, order untouched
    assert stack.invocations(since=since) == []
    assert by_note(notify_records(stack, card.charge_id), "delayed notify") == []
    assert inquiries(stack, card.charge_id) == []
    assert_unpaid(stack, card, ledger_status=None)
    assert logged_outcomes(stack, card.order_id) == []


# --------------------------------------------------------------------------- 2. authorized, repeated


def test_valid_notify_for_an_authorized_charge_pays_the_order_once_however_often_it_comes(stack):
    # Given an unpaid order whose charge KBank reports as Authorized
    card = Card(stack, total="2339.00")
    body = notify_json(card.charge_id, card.total)
    since = stack.invoke_log_position()

    # When KBank notifies
    status, headers, page = post_notify(stack, body)

    # Then the browser is sent to the shop's thank-you page with status=success
    assert status == 200, page
    assert headers["Content-Type"].startswith("text/html"), headers
    assert card.redirect("success") in page, page
    # And the order is paid before the answer (notify runs process-paid synchronously)
    assert stack.get("order-table", orderId=card.order_id)["paymentStatus"] == "PAID"

    # And delayed notify was handed the same event once, asynchronously, and found the order paid
    stack.wait_idle()
    [delayed] = dispatches(stack, since, "delayed-notify", card.charge_id)
    assert delayed["type"] == "Event"
    [run] = runs_of(stack, since, {delayed["id"]})
    assert run["status"] == 200 and card.redirect("success") in json.loads(run["result"])["body"], run
    records = notify_records(stack, card.charge_id)
    assert len(by_note(records, "notify")) == 1 and len(by_note(records, "delayed notify")) == 1, records
    assert all(r["checksumVerified"] is True and r["orderId"] == card.order_id for r in records), records
    assert stack.get("card-payment-record", token=card.token)["checksumVerified"] is True
    first = assert_paid_once(stack, card)
    assert logged_outcomes(stack, card.order_id, at_least=2) == ["already_paid", "paid"]
    assert errors_for(stack, charge_id=card.charge_id, order_id=card.order_id) == []

    # When KBank delivers the same notify again, twice, then four times at once
    again = [post_notify(stack, body) for _ in range(2)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        again += list(pool.map(lambda _: post_notify(stack, body), range(4)))
    stack.wait_idle()
    # And Lambda retries delayed notify with the event notify handed it, and process-paid once more
    status, _, retried = stack.invoke("delayed-notify", json.loads(delayed["payload"]))
    assert status == 200 and card.redirect("success") in retried["body"], retried
    status, _, direct = stack.invoke(PROCESS_PAID, card.process_paid_event())
    assert status == 200 and direct["outcome"] == "already_paid", direct
    assert direct["statusCode"] == 200 and direct["body"] == '"success"', direct

    # Then every delivery is answered with the success page
    assert [a[0] for a in again] == [200] * 6, [a[2][:200] for a in again]
    assert all(card.redirect("success") in a[2] for a in again)
    # Every delivery is kept (notify records and inbox), each handed to delayed notify exactly once
    records = notify_records(stack, card.charge_id)
    assert len(by_note(records, "notify")) == 7, len(records)
    assert len(by_note(records, "delayed notify")) == 8, len(records)  # 7 hand-offs + the retry
    assert all(r["checksumVerified"] is True for r in records)
    assert len(inbox_of(stack, card.charge_id)) == 7
    assert len(dispatches(stack, since, "delayed-notify", card.charge_id)) == 7
    # And still: one order update (the first one, unchanged), one paid notice, one `paid` outcome
    assert assert_paid_once(stack, card)["paidAt"] == first["paidAt"]
    # (2 runs per notify: its own and its delayed run's; the delayed retry; the direct invoke)
    outcomes = logged_outcomes(stack, card.order_id, at_least=7 * 2 + 1 + 1)
    assert outcomes == ["already_paid"] * 15 + ["paid"], outcomes
    assert errors_for(stack, charge_id=card.charge_id, order_id=card.order_id) == []


# --------------------------------------------------------------------------- 3. not yet authorized


def test_charge_not_yet_authorized_stays_pending_until_the_delayed_run_sees_it_authorized(stack):
    # Given an unpaid order whose charge KBank does not report as Authorized yet
    card = Card(stack, total="1250.50", status="pending", state="Pending")
    body = notify_json(card.charge_id, "1250.50", status="pending", state="Pending")
    since = stack.invoke_log_position()

    # When KBank notifies
    status, _, page = post_notify(stack, body)

    # Then the browser is sent back with status=failure, and nothing is paid: the ledger says PENDING
    assert status == 200, page
    assert card.redirect("failure") in page, page
    assert_unpaid(stack, card, ledger_status="PENDING")
    # And the delayed run asks twice, DELAYED_NOTIFY_SECONDS apart, and leaves it pending too
    stack.wait_idle()
    [delayed] = dispatches(stack, since, "delayed-notify", card.charge_id)
    [run] = runs_of(stack, since, {delayed["id"]})
    assert run["status"] == 200 and card.redirect("failure") in json.loads(run["result"])["body"], run
    assert run["finished"] - run["started"] >= 1.0, "delayed notify did not wait DELAYED_NOTIFY_SECONDS"
    assert len(inquiries(stack, card.charge_id)) == 3  # notify's process-paid, then the delayed run's two
    assert logged_outcomes(stack, card.order_id, at_least=3) == ["pending"] * 3
    assert_unpaid(stack, card, ledger_status="PENDING")
    # And process-paid asked directly says the same
    status, _, direct = stack.invoke(PROCESS_PAID, card.process_paid_event())
    assert status == 200 and direct["outcome"] == "pending" and direct["orderId"] == card.order_id, direct
    assert_unpaid(stack, card, ledger_status="PENDING")
    assert errors_for(stack, charge_id=card.charge_id, order_id=card.order_id) == []

    # When KBank notifies again (it retries), and the charge becomes Authorized while the delayed run waits
    since = stack.invoke_log_position()
    asked = len(inquiries(stack, card.charge_id))
    status, _, page = post_notify(stack, body)
    assert status == 200 and card.redirect("failure") in page, page  # notify's own run: still pending
    # (delayed notify is queued before notify's own process-paid: its first inquiry may be in too)
    assert asked + 1 <= len(inquiries(stack, card.charge_id)) <= asked + 2
    # The flip waits for an event, not a time: the delayed run's first inquiry has been answered
    # (pending: the fake reads the charge before it logs the request), so that run is now in its
    # DELAYED_NOTIFY_SECONDS wait, and its next inquiry is at least that long away.
    wait_until(lambda: len(inquiries(stack, card.charge_id)) >= asked + 2, 60, "the delayed run's first inquiry")
    stack.set_charge(card.charge_id, status="success", transaction_state="Authorized")
    flipped_before = len(inquiries(stack, card.charge_id))
    assert flipped_before == asked + 2, "the delayed run asked again before the flip: its wait was not honoured"
    stack.wait_idle()

    # Then the delayed run's second process-paid marks the order paid, once
    [delayed] = dispatches(stack, since, "delayed-notify", card.charge_id)
    [run] = runs_of(stack, since, {delayed["id"]})
    assert run["status"] == 200 and card.redirect("success") in json.loads(run["result"])["body"], run
    assert len(inquiries(stack, card.charge_id)) == asked + 3
    assert_paid_once(stack, card)
    assert logged_outcomes(stack, card.order_id, at_least=7) == ["paid"] + ["pending"] * 6
    # And a later delivery (KBank's final notify) changes nothing
    status, _, page = post_notify(stack, notify_json(card.charge_id, "1250.50"))
    stack.wait_idle()
    assert status == 200 and card.redirect("success") in page, page
    assert_paid_once(stack, card)


# --------------------------------------------------------------------------- 4. ten at once


def test_process_paid_twelve_times_at_once_pays_once(stack):
    # Given an unpaid order whose charge KBank reports as Authorized
    card = Card(stack, total="999.99")
    event = card.process_paid_event()

    # When process-paid is invoked twelve times at once (Lambda retries, notify and delayed notify racing)
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: stack.invoke(PROCESS_PAID, event), range(12)))

    # Then every run succeeds: exactly one applied the payment, the others found it applied
    assert all(status == 200 and "X-Amz-Function-Error" not in headers for status, headers, _ in answers), answers
    outcomes = sorted(body["outcome"] for _, _, body in answers)
    assert outcomes == ["already_paid"] * 11 + ["paid"], outcomes
    assert all(body["statusCode"] == 200 and body["orderId"] == card.order_id for _, _, body in answers)
    # One ledger entry PAID, one order update, one paid notice
    assert_paid_once(stack, card)
    assert logged_outcomes(stack, card.order_id, at_least=12) == outcomes
    assert errors_for(stack, order_id=card.order_id) == []


# --------------------------------------------------------------------------- 5. form body; gateway down


def test_form_urlencoded_notify_with_a_valid_checksum_is_accepted(stack):
    card = Card(stack, total="1250.50")
    form = urlencode({"id": card.charge_id, "amount": "1250.50", "currency": "THB", "status": "success",
                      "transaction_state": "Authorized",
                      "checksum": checksum(card.charge_id, "1250.50", "THB", "success", "Authorized"),
                      "description": "order & more"})

    status, _, page = post_notify(stack, form, "application/x-www-form-urlencoded")
    stack.wait_idle()

    assert status == 200, page
    assert card.redirect("success", amount="1250.50") in page, page
    records = notify_records(stack, card.charge_id)
    assert sorted(r["note"] for r in records) == ["delayed notify", "notify"], records
    assert all(r["checksumVerified"] is True for r in records), records
    stored = json.loads(by_note(records, "notify")[0]["body"])
    assert stored["amount"] == "1250.50" and stored["description"] == "order & more", stored
    assert stack.get("card-payment-record", token=card.token)["checksumVerified"] is True
    assert_paid_once(stack, card)


def test_kbank_5xx_fails_process_paid_so_lambda_retries_and_the_retry_pays(stack):
    # Given an unpaid order with an Authorized charge, and a KBank that answers 503 to the next inquiry
    card = Card(stack, total="500.25")
    stack.wait_idle()  # the injected failure goes to the next inquiry, whoever makes it: nothing else runs
    stack.kbank("PUT", "/_admin/fail", {"status": 503, "count": 1})

    # When process-paid runs
    status, headers, failed = stack.invoke(PROCESS_PAID, card.process_paid_event())

    # Then it fails as a Lambda function error (so the async invoke is retried), writing nothing
    assert status == 200 and headers.get("X-Amz-Function-Error") == "Unhandled", (headers, failed)
    assert "outcome" not in (failed or {}), failed
    assert SECRET_KEY not in json.dumps(failed)
    assert [r["status"] for r in inquiries(stack, card.charge_id)] == [503]
    assert_unpaid(stack, card, ledger_status=None)
    [error] = errors_for(stack, order_id=card.order_id)
    assert error["function_name"] == "processpaidorder" and "503" in error["error"], error

    # And the retry, with KBank back, pays the order once
    status, _, paid = stack.invoke(PROCESS_PAID, card.process_paid_event())
    assert status == 200 and paid["outcome"] == "paid", paid
    assert_paid_once(stack, card)


def test_kbank_down_on_an_async_invoke_is_retried_by_lambda_until_it_pays(stack):
    # Given an unpaid order with an Authorized charge, and a KBank that answers 502 to the next two inquiries
    card = Card(stack, total="75.00")
    stack.wait_idle()
    since = stack.invoke_log_position()
    stack.kbank("PUT", "/_admin/fail", {"status": 502, "count": 2})

    # When process-paid is invoked asynchronously, as notify's callers and wallet invoke it
    invoke_id = invoke_event(stack, PROCESS_PAID, card.process_paid_event())
    stack.wait_idle()

    # Then the first two attempts fail, and Lambda's retry (the local gateway retries twice) pays it
    runs = sorted(runs_of(stack, since, {invoke_id}), key=lambda r: r["attempt"])
    assert [r["attempt"] for r in runs] == [1, 2, 3], runs
    assert [r["status"] != 200 for r in runs] == [True, True, False], runs
    assert json.loads(runs[2]["result"])["outcome"] == "paid", runs[2]
    assert [r["status"] for r in inquiries(stack, card.charge_id)] == [502, 502, 200]
    assert len(errors_for(stack, order_id=card.order_id)) == 2
    assert_paid_once(stack, card)
