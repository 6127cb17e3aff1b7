"""Bill payments end to end (SPEC 10) on the local stack: the import through the bucket's real
notification path (S3 -> SQS -> scripts/s3_events.py -> the import function), the balance and
payment APIs through the local gateway, and the payment workflow executed by moto from
statemachines/bill-payment.asl.json (DynamoDB conditional write, SES e-mail, SNS SMS).

Every test uses its own invoice numbers, e-mail addresses and phone numbers, and reads items
by key, so tests share one stack without seeing each other.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from decimal import Decimal

import pytest

CARD = "4242424242424242"


def unique_base() -> int:
    return random.randint(10**8, 9 * 10**8) * 1000


def phone() -> str:
    return "+6681" + "".join(random.choice("0123456789") for _ in range(7))


def email() -> str:
    return f"payer-{uuid.uuid4().hex[:10]}@example.com"


def put_bill(stack, invoice: int, balance: str, name: str = "Jane Doe", processed: int = 0) -> None:
    stack.boto("dynamodb").put_item(TableName=stack.table("payment-balance"), Item={
        "InvoiceID": {"N": str(invoice)}, "CustomerName": {"S": name},
        "Balance": {"N": balance}, "IsProcessed": {"N": str(processed)}})


def bill(stack, invoice: int) -> dict | None:
    return stack.get("payment-balance", InvoiceID=Decimal(invoice))


def upload(stack, key: str, body: str) -> str:
    out = stack.boto("s3").put_object(Bucket=stack.bucket(), Key=key, Body=body.encode())
    return out["ETag"].strip('"')


def wait_report(stack, key: str, etag: str, timeout: float = 120) -> dict:
    s3 = stack.boto("s3")
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            report = json.loads(s3.get_object(Bucket=stack.bucket(), Key=f"{key}.report.json")["Body"].read())
            if report["etag"] == etag:
                return report
        except s3.exceptions.NoSuchKey:
            pass
        time.sleep(0.3)
    log = (stack.state_dir / "logs" / "s3events.log").read_text()[-2000:]
    raise AssertionError(f"no report for {key} within {timeout}s; s3events log:\n{log}")


def s3_event(stack, key: str, etag: str) -> dict:
    """The event moto's S3 sends for an upload (quote_plus key, no userIdentity, no zone)."""
    from urllib.parse import quote_plus

    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "ap-southeast-1",
        "eventTime": "2026-11-30T07:00:00.000", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "BillsImportFunction",
               "bucket": {"name": stack.bucket(), "arn": f"arn:aws:s3:::{stack.bucket()}"},
               "object": {"key": quote_plus(key), "size": 1, "eTag": etag}}}]}


def get_balance(stack, invoice) -> tuple[int, dict, dict]:
    import urllib.error
    import urllib.request

    url = f"{stack.urls['gateway']}/paymentbalance/id?InvoiceID={invoice}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


def pay(stack, form: dict) -> tuple[int, dict]:
    status, _, body = stack.post("/paymentbalance", form)
    return status, json.loads(body)


def good_form(invoice: int, amount: str, **over) -> dict:
    form = {"InvoiceID": str(invoice), "BillersName": "Jane Doe", "BillingAmount": amount,
            "CardNumber": "4242 4242 4242 4242", "ExpiryDate": "12/30", "EmailId": email(),
            "PhnNumber": phone(), "Choices": "both", "WaitSeconds": 0}
    form.update(over)
    return form


def wait_execution(stack, arn: str, timeout: float = 60) -> dict:
    sfn = stack.boto("stepfunctions")
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            d = sfn.describe_execution(executionArn=arn)
            if d["status"] != "RUNNING":
                return d
        except sfn.exceptions.ExecutionDoesNotExist:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{arn} still running after {timeout}s")


def mails_to(stack, address: str) -> list[dict]:
    return [m for m in stack.sent_emails() if address in json.dumps(m.get("destinations"))]


def sms_to(stack, number: str) -> list[dict]:
    return [m for m in stack.sent_sms() if m.get("phone_number") == number]


# ------------------------------------------------------------------------------------- import


def test_import_through_the_bucket_notification_good_and_bad_rows(stack):
    base = unique_base()
    rows = [
        "InvoiceID,CustomerName,Balance,IsProcessed",
        f"{base + 1},Jane Doe,512.50,0",
        f"{base + 2},\"Doe, John\",10,0",
        "not-a-number,Bob,5,0",
        f"{base + 3},Al,-1,0",
        "",
        f"{base + 4},Ann,7.125,0",
        f"{base + 5},Bea,8,2",
        f"{base + 6},Short",
        f"{base + 7},Cy,99,1",
    ]
    key = f"bills/e2e-{base}.csv"
    etag = upload(stack, key, "\n".join(rows) + "\n")
    report = wait_report(stack, key, etag)
    assert report["status"] == "complete"
    assert (report["rows"], report["written"], report["rejected"], report["kept"]) == (8, 3, 5, 0), report
    assert [(r["line"]) for r in report["rejected_rows"]] == [4, 5, 7, 8, 9]
    reasons = " | ".join(r["reason"] for r in report["rejected_rows"])
    for part in ("not a whole number", "negative", "more than two decimals", "IsProcessed", "expected 4 fields"):
        assert part in reasons, reasons
    item = bill(stack, base + 1)
    assert (item["CustomerName"], item["Balance"], item["IsProcessed"]) == ("Jane Doe", Decimal("512.5"), 0)
    assert bill(stack, base + 2)["CustomerName"] == "Doe, John"
    assert bill(stack, base + 7)["IsProcessed"] == 1
    assert bill(stack, base + 3) is None and bill(stack, base + 4) is None
    # One error-log item for the file's rejected rows (not one per row).
    errors = [e for e in stack.scan("callback-error-log") if e.get("orderId") == key]
    assert len(errors) == 1 and errors[0]["errorType"] == "BillRowsRejected", errors


def test_the_same_event_twice_a_retry_after_a_crash_and_a_paid_bill(stack, invoke):
    base = unique_base()
    key = f"bills/twice-{base}.csv"
    body = "".join(f"{base + i},Name {i},{100 + i},0\n" for i in range(1, 51))
    etag = upload(stack, key, body)
    first = wait_report(stack, key, etag)
    assert (first["rows"], first["written"]) == (50, 50)

    # The bill is paid meanwhile; the same S3 event arrives again (moto's shape, and SQS-wrapped).
    stack.boto("dynamodb").update_item(
        TableName=stack.table("payment-balance"), Key={"InvoiceID": {"N": str(base + 1)}},
        UpdateExpression="SET Balance = :z, IsProcessed = :one", ExpressionAttributeValues={":z": {"N": "0"}, ":one": {"N": "1"}})
    event = s3_event(stack, key, etag)
    status, out = invoke("bills-import", event)
    assert status == 200 and out["objects"][0]["outcome"] == "duplicate", out
    wrapped = {"Records": [
        {"eventSource": "aws:sqs", "messageId": "m1", "body": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": stack.bucket()})},
        {"eventSource": "aws:sqs", "messageId": "m2", "body": json.dumps(event)},
    ]}
    status, out = invoke("bills-import", wrapped)
    assert out["objects"][0]["outcome"] == "duplicate" and out["ignored"] == ["s3:TestEvent"], out
    assert bill(stack, base + 1)["IsProcessed"] == 1

    # A crash halfway leaves no complete report: the retried event runs the file again; rows
    # already written are written to the same values, the paid bill stays paid.
    stack.boto("s3").delete_object(Bucket=stack.bucket(), Key=f"{key}.report.json")
    status, out = invoke("bills-import", event)
    assert out["objects"][0]["outcome"] == "imported", out
    assert (out["objects"][0]["written"], out["objects"][0]["kept"]) == (49, 1), out
    assert bill(stack, base + 1)["Balance"] == 0 and bill(stack, base + 1)["IsProcessed"] == 1
    assert bill(stack, base + 2)["Balance"] == 102

    # A new version of the file re-lists the paid bill with a balance: it is kept, and reported.
    etag2 = upload(stack, key, f"{base + 1},Name 1,999,0\n{base + 2},Name 2,202,0\n")
    second = wait_report(stack, key, etag2)
    assert (second["written"], second["kept"]) == (1, 1)
    assert second["kept_rows"][0]["line"] == 1 and "paid" in second["kept_rows"][0]["reason"]
    assert bill(stack, base + 1)["IsProcessed"] == 1 and bill(stack, base + 1)["Balance"] == 0
    assert bill(stack, base + 2)["Balance"] == 202



def test_a_file_outside_the_filter_and_garbage_events(stack, invoke):
    base = unique_base()
    etag = upload(stack, f"reports/{base}.csv", f"{base},X,1,0\n")
    time.sleep(2)
    assert bill(stack, base) is None, "only bills/*.csv is imported"
    status, out = invoke("bills-import", {"Service": "Amazon S3", "Event": "s3:TestEvent"})
    assert status == 200 and out["objects"] == []
    status, out = invoke("bills-import", {"hello": "world"})
    assert status == 200 and "not an S3 notification" in out["error"]
    assert etag


@pytest.fixture
def bulk_stack(stack, tmp_path_factory):
    """A stack of its own for the 100 000 bills (the binaries are built by the session's): the
    shared stack's moto keeps a small table and a short recording to replay (test_e2e_flows
    restarts it)."""
    import stack as local_stack  # scripts/ is on sys.path (conftest)

    st = local_stack.Stack(state_dir=tmp_path_factory.mktemp("bulk-stack"), concurrency=1)
    try:
        st.start(build=False)
        yield st
    finally:
        st.stop()


def test_a_100000_row_file(bulk_stack):
    """Time and AWS calls per row are printed (`-s`), not asserted: new bills go in BatchWriteItem
    Puts after one BatchGetItem per 100 rows (crates/bills/src/import.rs)."""
    stack = bulk_stack
    base = unique_base()
    key = f"bills/bulk-{base}.csv"
    lines = ["InvoiceID,CustomerName,Balance,IsProcessed"]
    lines += [f"{base + i},Customer {i},{500 + i % 400}.{i % 100:02d},0" for i in range(100_000)]
    body = "\n".join(lines) + "\n"
    started = time.time()
    etag = upload(stack, key, body)
    report = wait_report(stack, key, etag, timeout=240)
    took = time.time() - started
    assert (report["rows"], report["written"], report["rejected"]) == (100_000, 100_000, 0), {k: report[k] for k in ("rows", "written", "rejected", "kept")}
    assert bill(stack, base + 99_999)["Balance"] == Decimal("899.99")
    print(f"\n[bench] bills import of 100000 rows ({len(body) / 1e6:.1f} MB): {took:.1f} s end to end "
          f"(upload -> SQS -> import -> report), {100_000 / took:.0f} rows/s, {report['calls']} AWS calls "
          f"= {report['calls'] / 100_000:.4f} calls per row")


# ------------------------------------------------------------------------------------- APIs


def test_balance_api(stack):
    base = unique_base()
    put_bill(stack, base, "512.50", "Jane Doe")
    status, headers, body = get_balance(stack, base)
    assert status == 200
    assert body == {"Item": {"InvoiceID": base, "CustomerName": "Jane Doe", "Balance": 512.5, "IsProcessed": 0}}
    assert headers.get("Access-Control-Allow-Origin") == "*"
    assert get_balance(stack, base + 1)[0] == 404
    assert get_balance(stack, "abc")[0] == 400
    assert get_balance(stack, "")[0] == 400
    import urllib.request

    req = urllib.request.Request(f"{stack.urls['gateway']}/paymentbalance", method="OPTIONS",
                                 headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 204
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]


def test_pay_a_bill_follow_the_workflow_then_pay_again(stack):
    base = unique_base()
    put_bill(stack, base, "512.50", "Jane Doe")
    form = good_form(base, "512.50")
    status, body = pay(stack, form)
    assert status == 200 and body["Status"] == "Submitted", body
    assert body["CardLast4"] == "4242" and CARD not in json.dumps(body)
    done = wait_execution(stack, body["ExecutionArn"])
    assert done["status"] == "SUCCEEDED", done
    assert CARD not in done["input"] and "4242 4242" not in done["input"]
    assert json.loads(done["output"])["Outcome"] == "paid"
    item = bill(stack, base)
    assert (item["Balance"], item["IsProcessed"], item["PaymentRef"], item["CardLast4"]) == (0, 1, body["PaymentRef"], "4242")
    assert item.get("PaidAt")
    mails, texts = mails_to(stack, form["EmailId"]), sms_to(stack, form["PhnNumber"])
    assert len(mails) == 1 and len(texts) == 1, (mails, texts)
    assert "512.5" in mails[0]["subject"] and str(base) in mails[0]["subject"]
    assert CARD not in json.dumps(mails) + json.dumps(texts) and "4242" in texts[0]["message"]
    assert get_balance(stack, base)[2]["Item"]["IsProcessed"] == 1

    # Paying again: refused by the API (already paid), nothing started.
    status, again = pay(stack, form)
    assert status == 400 and [e["field"] for e in again["Errors"]] == ["InvoiceID"]
    assert "already paid" in again["Errors"][0]["message"]
    # Two payments that both passed validation (a race): the second execution takes the
    # "already paid" branch: no second write, no second alert.
    sfn = stack.boto("stepfunctions")
    arn = body["ExecutionArn"].rsplit(":", 1)[0].replace(":execution:", ":stateMachine:")
    second = sfn.start_execution(stateMachineArn=arn, name=f"bill-{base}-race0000001", input=json.dumps({
        "InvoiceID": str(base), "Amount": "512.5", "PaymentRef": "race0000001", "CardLast4": "4444",
        "CustomerName": "Jane Doe", "Choices": "both", "EmailId": form["EmailId"], "PhnNumber": form["PhnNumber"],
        "WaitSeconds": 0, "ErrorTtl": "1900000000"}))["executionArn"]
    done2 = wait_execution(stack, second)
    assert done2["status"] == "SUCCEEDED" and json.loads(done2["output"])["Outcome"] == "already paid"
    assert bill(stack, base)["PaymentRef"] == body["PaymentRef"]
    assert len(mails_to(stack, form["EmailId"])) == 1 and len(sms_to(stack, form["PhnNumber"])) == 1


def test_a_double_submit_starts_one_execution(stack):
    base = unique_base()
    put_bill(stack, base, "80")
    form = good_form(base, "80", Choices="email", WaitSeconds=2, PaymentRef="dbl" + uuid.uuid4().hex[:12])
    first = pay(stack, form)
    second = pay(stack, form)
    assert first[0] == 200 and second[0] == 200, (first, second)
    # The second is ExecutionAlreadyExists ("AlreadySubmitted"), or, when it comes within the
    # same second while the first still runs (the same input), StartExecution's idempotent answer:
    # the first execution again ("Submitted"). Either way one execution, checked below.
    assert first[1]["Status"] == "Submitted", first
    assert second[1]["Status"] in ("Submitted", "AlreadySubmitted"), second
    assert first[1]["ExecutionArn"] == second[1]["ExecutionArn"]
    done = wait_execution(stack, first[1]["ExecutionArn"])
    assert done["status"] == "SUCCEEDED"
    assert len(mails_to(stack, form["EmailId"])) == 1
    sfn = stack.boto("stepfunctions")
    sm = first[1]["ExecutionArn"].rsplit(":", 1)[0].replace(":execution:", ":stateMachine:")
    names = [e["name"] for e in sfn.list_executions(stateMachineArn=sm)["executions"] if e["name"].startswith(f"bill-{base}-")]
    assert names == [f"bill-{base}-{form['PaymentRef']}"]


def test_email_only_and_text_only(stack):
    base = unique_base()
    put_bill(stack, base, "10")
    put_bill(stack, base + 1, "11")
    mail_form = good_form(base, "10", Choices="email")
    text_form = good_form(base + 1, "11", Choices="text")
    a, b = pay(stack, mail_form), pay(stack, text_form)
    assert wait_execution(stack, a[1]["ExecutionArn"])["status"] == "SUCCEEDED"
    assert wait_execution(stack, b[1]["ExecutionArn"])["status"] == "SUCCEEDED"
    assert len(mails_to(stack, mail_form["EmailId"])) == 1 and sms_to(stack, mail_form["PhnNumber"]) == []
    assert mails_to(stack, text_form["EmailId"]) == [] and len(sms_to(stack, text_form["PhnNumber"])) == 1


@pytest.mark.parametrize("change,field,text", [
    ({"InvoiceID": "UNKNOWN"}, "InvoiceID", "unknown invoice"),
    ({"InvoiceID": "abc"}, "InvoiceID", "not a whole number"),
    ({"BillingAmount": "500"}, "BillingAmount", "not the balance due"),
    ({"BillingAmount": "12,5"}, "BillingAmount", "not an amount"),
    ({"CardNumber": "4242424242424241"}, "CardNumber", "Luhn"),
    ({"CardNumber": "1234"}, "CardNumber", "12 to 19 digits"),
    ({"ExpiryDate": "01/20"}, "ExpiryDate", "expired"),
    ({"ExpiryDate": "soon"}, "ExpiryDate", "MM/YY"),
    ({"Choices": "email", "EmailId": ""}, "EmailId", "required"),
    ({"Choices": "both", "EmailId": "not-an-address"}, "EmailId", "not an e-mail"),
    ({"Choices": "text", "PhnNumber": ""}, "PhnNumber", "required"),
    ({"Choices": "text", "PhnNumber": "0812345678"}, "PhnNumber", "international"),
    ({"Choices": "pigeon"}, "Choices", "email, text or both"),
    ({"WaitSeconds": 301}, "WaitSeconds", "0 to 300"),
    ({"WaitSeconds": -1}, "WaitSeconds", "0 to 300"),
    ({"WaitSeconds": "soon"}, "WaitSeconds", "0 to 300"),
])
def test_each_validation_error(stack, change, field, text):
    base = unique_base()
    put_bill(stack, base, "512.50")
    form = good_form(base, "512.50", **change)
    if form["InvoiceID"] == "UNKNOWN":
        form["InvoiceID"] = str(base + 1)
    status, body = pay(stack, form)
    assert status == 400, body
    assert [e["field"] for e in body["Errors"]] == [field], body
    assert text in body["Errors"][0]["message"], body
    assert CARD not in json.dumps(body)
    assert bill(stack, base)["IsProcessed"] == 0


def test_every_problem_at_once_and_a_paid_bill(stack):
    base = unique_base()
    put_bill(stack, base, "512.50")
    put_bill(stack, base + 1, "0", processed=1)
    status, body = pay(stack, {"InvoiceID": str(base), "BillingAmount": "1", "CardNumber": "4242424242424241",
                               "ExpiryDate": "01/21", "Choices": "both", "WaitSeconds": 999})
    assert status == 400
    assert [e["field"] for e in body["Errors"]] == ["BillingAmount", "CardNumber", "ExpiryDate", "EmailId", "PhnNumber", "WaitSeconds"]
    status, body = pay(stack, good_form(base + 1, "0"))
    assert status == 400 and "already paid" in body["Errors"][0]["message"]
    status, _, raw = stack.post("/paymentbalance", "not json")
    assert status == 400 and b"not a JSON object" in raw


def test_a_failed_payment_is_recorded_and_alerted(stack):
    """The bill changes between the API's check and the workflow's write: the conditional write
    refuses, the workflow records the failure in the error log and e-mails the payments team."""
    base = unique_base()
    put_bill(stack, base, "70")
    form = good_form(base, "70", Choices="email", WaitSeconds=3)
    status, body = pay(stack, form)
    assert status == 200
    put_bill(stack, base, "75")  # a new bills file changed the balance meanwhile
    done = wait_execution(stack, body["ExecutionArn"])
    assert done["status"] == "FAILED" and done["error"] == "BillPaymentFailed"
    assert bill(stack, base)["IsProcessed"] == 0 and bill(stack, base)["Balance"] == 75
    name = body["ExecutionArn"].rsplit(":", 1)[1]
    item = stack.get("callback-error-log", id=name)
    assert item and item["function_name"] == "billpayment" and item["errorType"] == "BillChanged", item
    assert item["orderId"] == str(base) and CARD not in json.dumps(item, default=str)
    alerts = [m for m in stack.sent_emails() if "billpayment error" in m.get("subject", "") and name in m.get("body", "")]
    assert len(alerts) == 1
    assert mails_to(stack, form["EmailId"]) == [], "no confirmation for a payment that was not applied"
