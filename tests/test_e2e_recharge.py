"""The Recharge dunning webhook end to end (SPEC 9): signed deliveries through the local gateway
to the real recharge-webhook binary, the async hand-off to recharge-dunning, the stand-in dunning
service and Recharge API (scripts/fake_recharge.py), the ledger payment3-recharge-dunning-<branch>
in the local DynamoDB. Each test uses its own charge ids, so tests share one stack.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import stack as local_stack
from stack import recharge_failed_charge, recharge_headers

ROUTE = "/recharge/webhook"


def new_charge_id() -> str:
    return "38" + str(uuid.uuid4().int)[:8]


def in_days(days: int) -> str:
    return (datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=days)).isoformat()


def deliver(stack, body: bytes, topic: str = "charge/failed", **kw) -> tuple[int, dict]:
    status, _, raw = stack.post(ROUTE, body, recharge_headers(body, topic, **kw))
    return status, json.loads(raw)


def ledger(stack, charge_id: str, attempt: int) -> dict | None:
    return stack.dynamodb_resource().Table(stack.table("recharge-dunning")).get_item(
        Key={"chargeId": charge_id, "attempt": attempt}, ConsistentRead=True).get("Item")


def inbox(stack, charge_id: str) -> list[dict]:
    from boto3.dynamodb.conditions import Key

    table = stack.dynamodb_resource().Table(stack.table("callback-inbox"))
    return table.query(KeyConditionExpression=Key("orderId").eq(f"recharge-charge-{charge_id}"))["Items"]


def errors(stack, charge_id: str) -> list[dict]:
    """The error log's items for a charge (filed under the inbox key, found by its orderId-index)."""
    from boto3.dynamodb.conditions import Key

    table = stack.dynamodb_resource().Table(stack.table("callback-error-log"))
    return table.query(IndexName="orderId-index",
                       KeyConditionExpression=Key("orderId").eq(f"recharge-charge-{charge_id}"))["Items"]


def assert_alerted(stack, function: str, kind: str, per: str | None = None) -> None:
    """An alert went out for this function and kind within the cooldown (an earlier test's alert of
    the same kind holds this one back, as SPEC 6 asks): the shared cooldown item is recent, and SES
    accepted an alert of that kind. A money alert (`per`: the order or charge it is filed under) has
    a cooldown of its own per order (SPEC 6), so its own e-mail must be there."""
    key = f"{function}#{kind}" + (f"#{per}" if per else "")
    item = stack.get("alert-cooldown", alertKey=key)
    assert item is not None, f"no alert for {key}"
    assert int(item["sentAt"]) >= time.time() - 300
    subject = f"[payment3][{stack.branch}] {function} error"
    sent = [m for m in stack.sent_emails() if m.get("subject") == subject and kind in m.get("body", "")
            and (per is None or per in m.get("body", ""))]
    assert sent, f"no e-mail {subject!r} naming {kind}" + (f" and {per}" if per else "")


def dunning_runs(stack, since: int) -> list[dict]:
    return [r for r in stack.runs(since) if r["function"] == "recharge-dunning"]


def test_a_failed_charge_delivered_five_times_two_at_once_is_rescheduled_once(stack):
    charge = new_charge_id()
    body = recharge_failed_charge(charge, attempt=1)
    position = stack.invoke_log_position()

    with ThreadPoolExecutor(2) as pool:
        first_two = list(pool.map(lambda _: deliver(stack, body), range(2)))
    later = [deliver(stack, body) for _ in range(3)]
    for status, reply in first_two + later:
        assert status == 200, reply
        assert reply["chargeId"] == charge and reply["attempt"] == 1
    stack.wait_idle(timeout=90)

    # One change_next_charge_date at Recharge, with the dunning service's date and Recharge's headers.
    calls = stack.recharge_requests(charge)
    assert [c["status"] for c in calls] == [200], calls
    assert calls[0]["body"] == {"next_charge_date": in_days(4)}
    assert calls[0]["tokenOk"] and calls[0]["version"] == "2021-01"
    assert len(stack.dunning_requests(charge)) == 1, "only the winning run asks the dunning service"
    request = stack.dunning_requests(charge)[0]["body"]
    assert request == {"charge_id": charge, "customer_id": "77000001", "amount": "49.90", "currency": "USD",
                       "error_type": "CARD_DECLINED", "attempt_count": 1}

    item = ledger(stack, charge, 1)
    assert item["state"] == "SCHEDULED"
    assert item["retryDate"] == in_days(4) and item["dateSource"] == "dunning-service"
    assert item["reason"] == f"the dunning service proposed {in_days(4)}"
    assert (item["rechargeCalls"], item["rechargeStatus"]) == (1, 200)

    # Every delivery is kept and was handed off; the runs: one rescheduled, the rest duplicates.
    kept = inbox(stack, charge)
    assert len(kept) == 5 and {e["outcome"] for e in kept} == {"dispatched"}
    invokes = [i for i in stack.invocations(position) if i["function"] == "recharge-dunning"]
    assert len(invokes) == 5
    results = [json.loads(r["result"]) for r in dunning_runs(stack, position) if r["status"] == 200]
    assert sorted(r["outcome"] for r in results) == ["duplicate"] * 4 + ["scheduled"], results
    assert not errors(stack, charge), "duplicates are not incidents"


def test_a_forged_or_unsigned_delivery_changes_nothing(stack):
    charge = new_charge_id()
    body = recharge_failed_charge(charge, attempt=1)

    status, reply = deliver(stack, body, secret="not-the-client-secret")
    assert (status, reply["error"]) == (401, "X-Recharge-Hmac-Sha256 does not match the body")
    status, _, raw = stack.post(ROUTE, body, {"Content-Type": "application/json", "X-Recharge-Topic": "charge/failed"})
    assert (status, json.loads(raw)["error"]) == (401, "X-Recharge-Hmac-Sha256 is missing")
    # A genuine digest over other bytes (a tampered amount) is as bad as a forged one.
    signed = recharge_headers(body)
    status, _, _ = stack.post(ROUTE, body.replace(b"49.90", b"0.01"), signed)
    assert status == 401
    stack.wait_idle()

    assert stack.recharge_requests(charge) == [] and stack.dunning_requests(charge) == []
    assert ledger(stack, charge, 1) is None
    kept = inbox(stack, charge)
    assert len(kept) == 3 and {(e["outcome"], int(e["status"])) for e in kept} == {("rejected", 401)}
    logged = errors(stack, charge)
    assert len(logged) == 3
    assert {(e["function_name"], e["errorType"], e["chargeId"]) for e in logged} == {("rechargewebhook", "ChecksumError", charge)}
    assert_alerted(stack, "rechargewebhook", "ChecksumError")


def test_a_dunning_service_that_is_down_slow_or_talks_nonsense_gets_the_fallback_date(stack):
    cases = {  # mode -> (attempt, the built-in schedule's date, what the reason says)
        "down": (1, in_days(3), "unreachable"),
        "slow": (2, in_days(5), "did not answer within 1000 ms"),
        "nonsense": (3, in_days(7), "nonsense"),
    }
    charges = {mode: new_charge_id() for mode in cases}
    for mode, charge in charges.items():
        stack.recharge_admin("PUT", "/_admin/dunning/mode", {"chargeId": charge, "mode": mode})
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda m: deliver(stack, recharge_failed_charge(charges[m], cases[m][0])), cases))
    assert [s for s, _ in replies] == [200, 200, 200]
    stack.wait_idle(timeout=90)

    for mode, (attempt, date, why) in cases.items():
        charge = charges[mode]
        assert [r["mode"] for r in stack.dunning_requests(charge)] == [mode]
        calls = stack.recharge_requests(charge)
        assert [(c["status"], c["body"]) for c in calls] == [(200, {"next_charge_date": date})], (mode, calls)
        item = ledger(stack, charge, attempt)
        assert (item["state"], item["dateSource"], item["retryDate"]) == ("SCHEDULED", "fallback", date), mode
        assert why in item["reason"] and "built-in schedule" in item["reason"], item["reason"]


def test_recharge_503_then_ok_reschedules_once_after_the_retry(stack):
    charge = new_charge_id()
    stack.recharge_admin("PUT", "/_admin/recharge/fail", {"chargeId": charge, "answers": [503]})
    position = stack.invoke_log_position()
    assert deliver(stack, recharge_failed_charge(charge, 2))[0] == 200
    stack.wait_idle(timeout=90)

    calls = stack.recharge_requests(charge)
    assert [c["status"] for c in calls] == [503, 200], calls
    assert calls[0]["body"] == calls[1]["body"] == {"next_charge_date": in_days(4)}, "the retry sends the recorded date"
    assert len(stack.dunning_requests(charge)) == 1
    runs = dunning_runs(stack, position)
    assert [r["status"] == 200 for r in runs] == [False, True], "the 503 failed the run; Lambda's retry succeeded"
    item = ledger(stack, charge, 2)
    assert (item["state"], item["rechargeCalls"], item["rechargeStatus"], item["takeovers"]) == ("SCHEDULED", 2, 200, 1)
    logged = errors(stack, charge)
    assert [e["function_name"] for e in logged] == ["rechargedunning"] and "503" in logged[0]["error"]


def test_a_recharge_4xx_is_recorded_and_alerted_and_not_retried(stack):
    charge = new_charge_id()
    stack.recharge_admin("PUT", "/_admin/recharge/fail", {"chargeId": charge, "answers": [422]})
    position = stack.invoke_log_position()
    assert deliver(stack, recharge_failed_charge(charge, 1))[0] == 200
    stack.wait_idle(timeout=90)

    assert [c["status"] for c in stack.recharge_requests(charge)] == [422]
    runs = dunning_runs(stack, position)
    assert len(runs) == 1 and json.loads(runs[0]["result"])["outcome"] == "refused"
    item = ledger(stack, charge, 1)
    assert (item["state"], item["rechargeStatus"]) == ("REFUSED", 422)
    assert [e["errorType"] for e in errors(stack, charge)] == ["RechargeRefused"]
    assert_alerted(stack, "rechargedunning", "RechargeRefused", per=f"recharge-charge-{charge}")
    # A redelivery of the same failure changes nothing.
    assert deliver(stack, recharge_failed_charge(charge, 1))[0] == 200
    stack.wait_idle()
    assert len(stack.recharge_requests(charge)) == 1


def test_max_retries_reached_is_recorded_and_alerted_never_rescheduled(stack):
    charge = new_charge_id()
    body = recharge_failed_charge(charge, attempt=4)
    for _ in range(2):
        status, reply = deliver(stack, body, topic="charge/max_retries_reached")
        assert (status, reply["topic"]) == (200, "charge/max_retries_reached")
    stack.wait_idle()

    item = ledger(stack, charge, 0)
    assert item["state"] == "MAX_RETRIES_REACHED" and "4 attempts" in item["reason"]
    assert stack.recharge_requests(charge) == [] and stack.dunning_requests(charge) == []
    logged = errors(stack, charge)
    assert [(e["function_name"], e["errorType"]) for e in logged] == [("rechargedunning", "RechargeMaxRetriesReached")]
    assert_alerted(stack, "rechargedunning", "RechargeMaxRetriesReached", per=f"recharge-charge-{charge}")
    assert len(inbox(stack, charge)) == 2


@pytest.mark.parametrize("topic", ["subscription/created", "charge/paid"])
def test_other_topics_are_kept_and_answered_200(stack, topic):
    charge = new_charge_id()
    position = stack.invoke_log_position()
    status, reply = deliver(stack, recharge_failed_charge(charge), topic=topic)
    assert (status, reply["message"]) == (200, "Recharge webhook kept")
    stack.wait_idle()
    assert [e["outcome"] for e in inbox(stack, charge)] == ["recorded"]
    assert [i for i in stack.invocations(position) if i["function"] == "recharge-dunning"] == []
