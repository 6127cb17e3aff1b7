"""The card path end to end on the local stack (SPEC 4.2-4.4): KBank's notify through the real
notify, delayed-notify and process-paid binaries, DynamoDB in moto, the fake KBank inquiry API.

Every test makes its own order, card payment record and charge, so tests share one stack
without seeing each other's items. What the tests count, and where it is read:
  order updates   moto's request recording (`moto-recording.jsonl`): UpdateItem calls on the
                  order table for the order, i.e. writes attempted, not just the final item
  paid notices    moto's SES (`Stack.sent_emails()`, scripts/moto_serial.py /payment3/sent)
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
from datetime import datetime, timedelta, timezone
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


def assert_alerted_or_held(stack, function: str, error_type: str, charge_id: str) -> None:
    """The incident's alert went out, or one of the same key went out less than the cooldown ago
    and holds it. Never vacuous: a held alert must point at an earlier alert that really went
    out (the cooldown is taken only once an e-mail was sent), so broken alerting fails here."""
    alerts = alerts_naming(stack, function, charge_id)
    gate = stack.get("alert-cooldown", alertKey=f"{function}#{error_type}")
    assert gate, "no cooldown gate: the alert was neither sent nor held"
    sent_at = int(gate["sentAt"])
    if alerts:
        assert len(alerts) == 1, alerts
        assert f"Error type: {error_type}\n" in alerts[0]["body"]
        assert alerts[0]["destinations"]["ToAddresses"] == [local_stack.ALERT_TO]
        assert SECRET_KEY not in alerts[0]["body"]
        assert abs(time.time() - sent_at) < 60, gate
        return
    assert time.time() - sent_at < ALERT_COOLDOWN, f"no alert, and no cooldown holds it: {gate}"
    # The alert that holds it: an incident of the same kind logged when the gate was taken,
    # whose e-mail is in SES.
    earlier = [e for e in stack.scan("callback-error-log")
               if e.get("function_name") == function and e.get("errorType") == error_type
               and e.get("chargeId") and e["chargeId"] != charge_id
               and abs(datetime.fromisoformat(e["created_at"]).timestamp() - sent_at) <= 5]
    sent = [e for e in earlier if alerts_naming(stack, function, e["chargeId"])]
    assert sent, f"the cooldown {gate} points at no alert that went out"


def assert_no_process_paid_line(stack, order_id: str) -> None:
    """No process-paid ran for the order: a marker run of process-paid, after everything, is
    waited for in the log, so a line for the order cannot still be on its way."""
    marker, charge = new_order_id(), f"chrg_e2e_marker_{uuid.uuid4().hex[:12]}"
    stack.set_charge(charge, amount="1.00", status="pending", transaction_state="Pending")
    status, _, answer = stack.invoke(PROCESS_PAID, {"orderId": marker, "paymentType": "card",
                                                    "chargeId": charge})
    assert status == 200 and answer["outcome"] == "pending", answer
    logged_outcomes(stack, marker, at_least=1)
    assert logged_outcomes(stack, order_id) == []


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
    assert_alerted_or_held(stack, "notify", "ChecksumError", card.charge_id)
    # And nothing was processed: no process-paid, no delayed notify, no inquiry, no ledger, order untouched
    assert stack.invocations(since=since) == []
    assert by_note(notify_records(stack, card.charge_id), "delayed notify") == []
    assert inquiries(stack, card.charge_id) == []
    assert_unpaid(stack, card, ledger_status=None)
    assert_no_process_paid_line(stack, card.order_id)


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


# --------------------------------------------------------------------------- 6. real AWS failures (issue 15)


def set_order_fields(stack, order_id: str, **fields) -> dict:
    """Sets attributes on an order as the Python stack (or the shop) left them; returns the item."""
    table = stack.dynamodb_resource().Table(stack.table("order-table"))
    item = table.get_item(Key={"orderId": order_id}, ConsistentRead=True)["Item"]
    item.update(fields)
    table.put_item(Item=item)
    return item


def money_alerts(stack, order_id: str, error_type: str) -> list[dict]:
    return [m for m in stack.sent_emails()
            if m.get("source") == local_stack.ALERT_FROM and f"Order: {order_id}\n" in m.get("body", "")
            and f"Error type: {error_type}\n" in m.get("body", "")]


def test_a_charge_in_another_currency_or_naming_another_order_is_not_applied(stack):
    # Given a THB 2339.00 order whose charge KBank reports Authorized, but in JPY
    card = Card(stack, total="2339.00")
    stack.set_charge(card.charge_id, currency="JPY")

    # When process-paid runs for it
    status, headers, answer = stack.invoke(PROCESS_PAID, card.process_paid_event())

    # Then the payment is not applied (before: outcome paid), recorded and alerted for this order
    assert status == 200 and "X-Amz-Function-Error" not in headers, answer
    assert answer["outcome"] == "rejected" and "JPY" in answer["error"], answer
    assert_unpaid(stack, card, ledger_status=None)
    [error] = errors_for(stack, order_id=card.order_id)
    assert error["errorType"] == "CurrencyMismatch" and error["function_name"] == "processpaidorder", error
    assert len(money_alerts(stack, card.order_id, "CurrencyMismatch")) == 1

    # And a THB charge whose reference_order names another order is not applied either
    other = Card(stack, total="2339.00")
    stack.set_charge(other.charge_id, reference_order=card.order_id)
    status, _, answer = stack.invoke(PROCESS_PAID, other.process_paid_event())
    assert answer["outcome"] == "rejected", answer
    assert [e["errorType"] for e in errors_for(stack, order_id=other.order_id)] == ["ReferenceMismatch"]
    assert_unpaid(stack, other, ledger_status=None)
    # (one order's money alert does not hide the other's)
    assert len(money_alerts(stack, other.order_id, "ReferenceMismatch")) == 1


def test_an_order_paid_by_the_python_stack_is_a_second_payment_never_overwritten(stack):
    # Given an order the Python stack marked PAID by a wallet payment (it kept no ledger entry)
    card = Card(stack, total="2339.00")
    before = set_order_fields(stack, card.order_id, paymentStatus="PAID", paymentId="pay_python_1",
                              paymentType="wallet", paidAt="2026-11-20T10:00:00.123456")
    since = stack.invoke_log_position()

    # When KBank notifies a card charge for it, Authorized
    status, _, page = post_notify(stack, notify_json(card.charge_id, card.total))
    stack.wait_idle()

    # Then the order is exactly as the Python stack left it (before: paymentId, paymentType,
    # paidAt overwritten and a second notice sent, no alert)
    assert status == 200 and card.redirect("success") in page, page
    assert stack.get("order-table", orderId=card.order_id) == before
    assert order_updates(stack, card.order_id) == []
    assert paid_notices(stack, card.order_id) == []
    assert stack.get("paid-order", orderId=card.order_id) is None
    # And the second payment is recorded and alerted for a refund
    errors = errors_for(stack, order_id=card.order_id)
    assert errors and {e["errorType"] for e in errors} == {"SecondPayment"}, errors
    assert "already paid by pay_python_1" in errors[0]["error"], errors[0]
    assert money_alerts(stack, card.order_id, "SecondPayment"), stack.sent_emails()[-3:]
    assert logged_outcomes(stack, card.order_id, at_least=2) == ["already_paid", "already_paid"]
    assert len(dispatches(stack, since, "delayed-notify", card.charge_id)) == 1


def test_kbank_rate_limit_is_retried_and_the_retry_pays(stack):
    # Given an Authorized charge, and KBank answering 429 (a sale's rate limit), then a 2xx page
    # that is not a charge
    card = Card(stack, total="61.00")
    stack.wait_idle()
    since = stack.invoke_log_position()
    stack.kbank("PUT", "/_admin/fail", {"status": 429, "count": 1})
    stack.kbank("PUT", "/_admin/fail", {"status": 200, "count": 1, "body": "<html>maintenance</html>"})

    # When process-paid is invoked asynchronously
    invoke_id = invoke_event(stack, PROCESS_PAID, card.process_paid_event())
    stack.wait_idle()

    # Then both failures fail the run for Lambda's retry (before: 429 was a final `rejected`),
    # and the third attempt pays the order
    runs = sorted(runs_of(stack, since, {invoke_id}), key=lambda r: r["attempt"])
    assert [r["status"] != 200 for r in runs] == [True, True, False], runs
    assert json.loads(runs[2]["result"])["outcome"] == "paid", runs[2]
    assert [r["status"] for r in inquiries(stack, card.charge_id)] == [429, 200, 200]
    assert sorted(e["errorType"] for e in errors_for(stack, order_id=card.order_id)) == [
        "GatewayThrottled", "GatewayUnexpectedResponse"]
    assert_paid_once(stack, card)


def rotate_kbank_key(stack, key: str) -> None:
    stack.boto("secretsmanager").put_secret_value(SecretId="kbank-dev", SecretString=json.dumps({"secretKey": key}))
    stack.kbank("PUT", "/_admin/key", {"secretKey": key})


def test_a_rotated_key_is_picked_up_at_once_by_notify_and_process_paid(stack):
    # Given notify and process-paid containers that have read the current key
    warm = Card(stack, total="10.00")
    assert post_notify(stack, notify_json(warm.charge_id, warm.total))[0] == 200
    stack.wait_idle()
    new_key = "skey_test_payment3_rotated_" + uuid.uuid4().hex[:8]
    card = Card(stack, total="2339.00")
    try:
        # When the merchant key is rotated (Secrets Manager and KBank), well within
        # SECRET_REFRESH_SECONDS, and KBank signs the next notify with the new key
        rotate_kbank_key(stack, new_key)
        body = notify_json(card.charge_id, card.total,
                           check=checksum(card.charge_id, card.total, "THB", "success", "Authorized", new_key))
        status, _, page = post_notify(stack, body)
        stack.wait_idle()

        # Then notify reads the secret again before refusing, and process-paid does on KBank's 401
        # (before: 401 until the refresh interval, nothing processed, no delayed notify)
        assert status == 200 and card.redirect("success") in page, page
        assert all(r["checksumVerified"] is True for r in notify_records(stack, card.charge_id))
        assert_paid_once(stack, card)
        assert errors_for(stack, charge_id=card.charge_id, order_id=card.order_id) == []
    finally:
        rotate_kbank_key(stack, SECRET_KEY)
        time.sleep(2.2)  # past the forced-read gap, so the next test's first refusal reads it back


def test_a_forged_notify_after_a_genuine_one_leaves_the_record_verified(stack):
    # Given a genuine notify, verified and paid
    card = Card(stack, total="2339.00")
    assert post_notify(stack, notify_json(card.charge_id, card.total))[0] == 200
    stack.wait_idle()
    assert stack.get("card-payment-record", token=card.token)["checksumVerified"] is True

    # When someone POSTs a forged notify for the same charge
    forged = notify_json(card.charge_id, card.total, check="0" * 64)
    status, _, text = post_notify(stack, forged)

    # Then it is refused, kept as unverified, and the card record stays verified (before: false)
    assert status == 401, text
    assert stack.get("card-payment-record", token=card.token)["checksumVerified"] is True
    flags = sorted(r["checksumVerified"] for r in by_note(notify_records(stack, card.charge_id), "notify"))
    assert flags == [False, True], flags
    assert_paid_once(stack, card)


# Delayed notify's wait on the variant below: the test writes the record inside it, after
# delayed notify's first look. The session stack's 1 s was too short for that on a loaded machine
# (the look again came before the write: the test failed with the order unpaid, see issue-15.md).
LATE_RECORD_WAIT = 10


@pytest.fixture(scope="module")
def late_gateway(stack) -> str:
    """notify, delayed notify and process-paid with delayed notify waiting LATE_RECORD_WAIT s
    between its looks (production: 60 s), on the same local AWS and fake KBank."""
    return stack.start_variant("late", {"DELAYED_NOTIFY_SECONDS": str(LATE_RECORD_WAIT)})


def variant_idle(gateway: str) -> bool:
    with urllib.request.urlopen(f"{gateway}/_local/pending", timeout=10) as r:
        return json.loads(r.read())["pending"] == 0


def test_delayed_notify_looks_again_for_a_card_record_written_late(stack, late_gateway):
    # Given an Authorized charge whose card payment record the shop has not written yet
    suffix = uuid.uuid4().hex[:16]
    order_id, charge_id, token = new_order_id(), f"chrg_e2e_{suffix}", f"tokn_e2e_{suffix}"
    stack.put_order(order_id, "2339.00")
    stack.set_charge(charge_id, amount="2339.00", status="success", transaction_state="Authorized")

    # When KBank notifies, and the shop writes the record while delayed notify waits
    req = urllib.request.Request(f"{late_gateway}/notify", data=notify_json(charge_id, "2339.00").encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        status, page = resp.status, resp.read().decode()
    assert status == 200, page
    [first] = wait_until(lambda: by_note(notify_records(stack, charge_id), "delayed notify"), 60,
                         "delayed notify's first look")
    stack.put_card_payment({"token": token, "chargeId": charge_id, "orderId": order_id, "callback": SHOP})
    written = datetime.now(timezone.utc).replace(tzinfo=None)  # created_at is naive UTC
    # delayed notify saved its record after its first look and looks again LATE_RECORD_WAIT s later
    looked_again = datetime.fromisoformat(first["created_at"]) + timedelta(seconds=LATE_RECORD_WAIT)
    assert written < looked_again, (
        f"the record was written at {written}, after delayed notify looked again ({looked_again}):"
        " the machine was too slow for this test's window, not a verdict on delayed notify")
    wait_until(lambda: variant_idle(late_gateway), 120, "the variant's delayed notify to finish")

    # Then delayed notify looked again after its wait and paid the order (before: it returned at
    # once, no log, no alert, order unpaid)
    assert "orderId" not in first, first  # its first look did not find the record
    order = stack.get("order-table", orderId=order_id)
    assert order["paymentStatus"] == "PAID" and order["paymentId"] == charge_id, order
    assert stack.get("card-payment-record", token=token)["checksumVerified"] is True
    assert len(order_updates(stack, order_id)) == 1
    assert errors_for(stack, charge_id=charge_id, order_id=order_id) == []


def test_an_authorized_charge_no_card_record_ever_names_is_an_incident(stack):
    # Given an Authorized charge at KBank and no card payment record for it
    charge_id = f"chrg_e2e_orphan_{uuid.uuid4().hex[:12]}"
    stack.set_charge(charge_id, amount="990.00", status="success", transaction_state="Authorized")

    # When KBank notifies and delayed notify has waited, looked again and asked KBank
    assert post_notify(stack, notify_json(charge_id, "990.00"))[0] == 200
    stack.wait_idle()

    # Then it is recorded and alerted: money taken with no order to pay
    [error] = [e for e in errors_for(stack, charge_id=charge_id) if e["function_name"] == "delayednotify"]
    assert error["errorType"] == "ChargedWithoutOrder" and "990.00 THB" in error["error"], error
    assert [m for m in stack.sent_emails() if f"Charge: {charge_id}\n" in m.get("body", "")
            and "Error type: ChargedWithoutOrder\n" in m.get("body", "")]
    assert len(inquiries(stack, charge_id)) == 1


# --------------------------------------------------------------------------- 7. test gaps closed (issue 15 item 8)


def test_a_failed_lambda_invoke_on_dispatch_is_500_and_the_retry_dispatches(stack):
    # Given an unpaid order, and Lambda refusing the next invokes of process-paid-wallet (429,
    # more times than the SDK retries)
    order_id = new_order_id()
    stack.put_order(order_id, "2339.0")
    since = stack.invoke_log_position()
    req = urllib.request.Request(f"{stack.urls['gateway']}/_local/fail", method="PUT",
                                 data=json.dumps({"function": "process-paid-wallet", "status": 429,
                                                  "count": 3}).encode())
    urllib.request.urlopen(req, timeout=10).read()
    body = {"orderId": order_id, "paymentId": "pay_dispatch_1", "success": True, "amount": 2339.0,
            "userId": "u-dispatch", "message": "ok"}
    raw = json.dumps(body)
    signature = local_stack.sign_headers("wallet", raw.encode())  # the retry is the same message

    # When the wallet gateway POSTs its success callback
    status, _, text = stack.post("/wallet/callback", raw, signature)

    # Then the answer is 500, so the gateway retries; the record and the inbox entry are kept
    assert status == 500, text
    assert "internal error" in json.loads(text)["error"], text
    attempts = [i for i in stack.invocations(since=since) if i["function"] == "process-paid-wallet"]
    assert [i.get("failed") for i in attempts] == [429, 429, 429], attempts
    assert stack.get("wallet-callback-record", orderId=order_id)["success"] is True
    # And the gateway's retry (same webhook-id) dispatches again, and the order is paid once
    status, _, text = stack.post("/wallet/callback", raw, signature)
    assert status == 200, text
    stack.wait_idle()
    attempts = [i for i in stack.invocations(since=since) if i["function"] == "process-paid-wallet"]
    assert [i.get("failed") for i in attempts] == [429, 429, 429, None], attempts
    order = stack.get("order-table", orderId=order_id)
    assert order["paymentStatus"] == "PAID" and order["paymentId"] == "pay_dispatch_1", order
    assert any(e["errorType"] == "DispatchError" for e in errors_for(stack, order_id=order_id))


@pytest.fixture(scope="module")
def mark_gateway(stack) -> str:
    """notify, delayed notify and process-paid under CHECKSUM_POLICY=mark (the original's
    warn-and-continue, used while moving from the Python stack), on the same local AWS."""
    return stack.start_variant("mark", {"CHECKSUM_POLICY": "mark"})


def test_checksum_policy_mark_end_to_end_processes_a_bad_checksum_and_marks_it(stack, mark_gateway):
    # Given an order whose charge KBank reports Authorized, and notify under CHECKSUM_POLICY=mark
    card = Card(stack, total="2339.00")
    forged = notify_json(card.charge_id, card.total, check="f" * 64)

    # When a notify with a checksum that does not match arrives
    req = urllib.request.Request(f"{mark_gateway}/notify", data=forged.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        status, page = resp.status, resp.read().decode()
    def idle():
        with urllib.request.urlopen(f"{mark_gateway}/_local/pending", timeout=10) as r:
            return json.loads(r.read())["pending"] == 0
    wait_until(lambda: by_note(notify_records(stack, card.charge_id), "delayed notify") and idle(), 60,
               "the mark variant's delayed notify to finish")

    # Then it is processed as the original did: 200, the order paid once (KBank confirms it)
    assert status == 200 and card.redirect("success") in page, page
    order = stack.get("order-table", orderId=card.order_id)
    assert order["paymentStatus"] == "PAID" and order["paymentId"] == card.charge_id, order
    assert len(order_updates(stack, card.order_id)) == 1
    # And marked unverified everywhere, with no incident (mark only warns)
    records = notify_records(stack, card.charge_id)
    assert sorted(r["note"] for r in records) == ["delayed notify", "notify"], records
    assert all(r["checksumVerified"] is False and r["checksumError"] for r in records), records
    assert stack.get("card-payment-record", token=card.token)["checksumVerified"] is False
    assert errors_for(stack, charge_id=card.charge_id, order_id=card.order_id) == []
    # And delayed notify was handed the event by the mark notify, through the variant's Lambda
    invokes = [json.loads(line) for line in
               (stack.state_dir / "invocations-mark.jsonl").read_text().splitlines()]
    assert [i["function"] for i in invokes if i.get("type") == "Event" and card.charge_id in i["payload"]] == [
        "delayed-notify"]
