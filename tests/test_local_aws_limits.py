"""The local AWS refuses what DynamoDB refuses (SPEC 4.6), with DynamoDB's own error, so a limit
our code forgets to check fails the end-to-end tests as it would fail on AWS (moto alone takes
1e308, and more). Runs moto (scripts/moto_serial.py) on its own, without the functions."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import moto_serial  # noqa: E402
import stack as local_stack  # noqa: E402

REGION = "ap-southeast-1"


@pytest.fixture(scope="module")
def ddb(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "moto_serial.py"), "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        local_stack.wait_for_port(port, proc, 60, "moto")
        client = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        # The real tables: the inbox (hash + range) and the error log (with its orderId-index).
        for spec in local_stack.table_specs(local_stack.load_template(), "limits"):
            if spec.create["TableName"] in ("payment3-callback-inbox-limits", "payment3-callback-error-log-limits"):
                client.create_table(**spec.create)
        yield client
    finally:
        proc.terminate()
        proc.wait(10)


INBOX = "payment3-callback-inbox-limits"
ERRORS = "payment3-callback-error-log-limits"


def refused(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    assert info.value.response["Error"]["Code"] == "ValidationException", info.value.response
    return info.value.response["Error"]["Message"]


def inbox_item(order_id: str = "1", **extra) -> dict:
    return {"orderId": {"S": order_id}, "receivedAt#requestId": {"S": "2026-11-30T00:00:00#r"}, **extra}


@pytest.mark.parametrize("number, message", [
    ("1e308", "Number overflow"),
    ("1e126", "Number overflow"),
    ("1e-320", "Number underflow"),
    ("1e-131", "Number underflow"),
    ("123456789012345678901234567890123456789", "more than 38 significant digits"),
])
def test_numbers_out_of_dynamodbs_range_are_refused(ddb, number, message):
    assert message in refused(lambda: ddb.put_item(TableName=INBOX, Item=inbox_item(amount={"N": number})))
    # Also inside a map, and through UpdateItem
    assert message in refused(lambda: ddb.put_item(TableName=INBOX, Item=inbox_item(m={"M": {"a": {"N": number}}})))
    assert message in refused(lambda: ddb.update_item(
        TableName=INBOX, Key=inbox_item(), UpdateExpression="SET #a = :a",
        ExpressionAttributeNames={"#a": "amount"}, ExpressionAttributeValues={":a": {"N": number}}))


@pytest.mark.parametrize("number", ["0", "-0", "2339.00", "1E-130", "9.9999999999999999999999999999999999999E+125",
                                    "12345678901234567890123456789012345678"])
def test_numbers_dynamodb_takes_are_taken(ddb, number):
    ddb.put_item(TableName=INBOX, Item=inbox_item(amount={"N": number}))
    stored = ddb.get_item(TableName=INBOX, Key=inbox_item())["Item"]["amount"]["N"]
    assert Decimal(stored) == Decimal(number)


def test_items_over_400_kb_are_refused_also_when_an_update_makes_them_so(ddb):
    assert "Item size has exceeded" in refused(
        lambda: ddb.put_item(TableName=INBOX, Item=inbox_item(body={"S": "x" * (400 * 1024)})))
    ddb.put_item(TableName=INBOX, Item=inbox_item("big", body={"S": "x" * (300 * 1024)}))
    assert "Item size has exceeded" in refused(lambda: ddb.update_item(
        TableName=INBOX, Key=inbox_item("big"), UpdateExpression="SET #e = :e",
        ExpressionAttributeNames={"#e": "event"}, ExpressionAttributeValues={":e": {"S": "y" * (150 * 1024)}}))
    # Replacing an attribute counts its new size, not both
    ddb.update_item(TableName=INBOX, Key=inbox_item("big"), UpdateExpression="SET #b = :b",
                    ExpressionAttributeNames={"#b": "body"}, ExpressionAttributeValues={":b": {"S": "z" * (50 * 1024)}})


def test_keys_over_their_byte_limits_are_refused(ddb):
    emoji = "\N{GRINNING FACE}"
    assert "Size of hashkey" in refused(lambda: ddb.put_item(TableName=INBOX, Item=inbox_item(emoji * 513)))
    ddb.put_item(TableName=INBOX, Item=inbox_item(emoji * 512))  # 2048 bytes: the limit itself
    long_range = {"orderId": {"S": "1"}, "receivedAt#requestId": {"S": "r" * 1025}}
    assert "range keys" in refused(lambda: ddb.put_item(TableName=INBOX, Item=long_range))
    # A global index's key too (the error log's orderId-index), and an empty one
    error = {"id": {"S": "e1"}, "orderId": {"S": emoji * 600}}
    assert "Size of hashkey" in refused(lambda: ddb.put_item(TableName=ERRORS, Item=error))
    assert "secondary index key" in refused(
        lambda: ddb.put_item(TableName=ERRORS, Item={"id": {"S": "e2"}, "orderId": {"S": ""}}))


def test_the_checks_are_dynamodbs_own_rules():
    # The number rule on its own (no server): the same boundaries as domain/limits.rs
    assert moto_serial.number_problem("1E-130") is None
    assert moto_serial.number_problem("0.0") is None
    assert moto_serial.number_problem("1E-131").startswith("Number underflow")
    assert moto_serial.item_size({"a": {"S": "\N{GRINNING FACE}"}}) == 5
    assert moto_serial.item_size({"m": {"M": {"k": {"BOOL": True}}}}) == 1 + 3 + 1 + 1 + 1
    assert json.loads(json.dumps({"ok": True}))


def test_a_long_poll_of_an_empty_queue_does_not_hold_up_other_requests(ddb):
    """An SQS long poll waits for a message only another request can send: it must not hold the
    one-request-at-a-time lock, or every request queues behind the stack's S3-notification pollers."""
    import threading

    endpoint = ddb.meta.endpoint_url
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    queue_url = sqs.create_queue(QueueName="limits-long-poll")["QueueUrl"]
    received: list = []
    poller = threading.Thread(target=lambda: received.append(
        sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=20).get("Messages", [])))
    poller.start()
    time.sleep(0.5)  # the poll is waiting at moto
    # Served while the poll waits; and the message sent now ends the wait (under the lock it
    # could not be sent before the poll gave up, 20 s later, empty).
    ddb.put_item(TableName=INBOX, Item=inbox_item("during-poll"))
    sqs.send_message(QueueUrl=queue_url, MessageBody="hello")
    assert poller.is_alive() or received, "the poll ended before anything was sent"
    poller.join(25)
    assert not poller.is_alive()
    assert [m["Body"] for m in received[0]] == ["hello"]
    assert ddb.get_item(TableName=INBOX, Key=inbox_item("during-poll"))["Item"]["orderId"]["S"] == "during-poll"


def test_the_recording_stays_one_request_per_line_while_unlocked_requests_run(tmp_path):
    """The tests read moto's recording line by line. A long poll is served outside the lock, so
    the recorder can be writing two requests at once; each must still be one whole JSON line (a
    large request is written in two parts, and another request's line landed between them)."""
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recording = tmp_path / "recording.jsonl"
    env = {**os.environ, "MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(recording)}
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "moto_serial.py"), "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        local_stack.wait_for_port(port, proc, 60, "moto")
        endpoint = f"http://127.0.0.1:{port}"
        keys = dict(region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        ddb = boto3.client("dynamodb", endpoint_url=endpoint, **keys)
        sqs = boto3.client("sqs", endpoint_url=endpoint, **keys)
        ddb.create_table(TableName="recorded", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
        queue_url = sqs.create_queue(QueueName="recorded")["QueueUrl"]
        done = threading.Event()

        def poll():
            while not done.is_set():
                sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)

        pollers = [threading.Thread(target=poll) for _ in range(4)]
        for p in pollers:
            p.start()
        try:
            for i in range(150):  # each body is over the 8 KiB a file write buffers
                ddb.put_item(TableName="recorded", Item={"k": {"S": str(i)}, "v": {"S": "x" * 12_000}})
        finally:
            done.set()
            for p in pollers:
                p.join(10)
    finally:
        proc.terminate()
        proc.wait(10)
    lines = recording.read_text().split("\n")
    assert lines[-1] == "", "the recording ends with a whole line"
    entries = [json.loads(line) for line in lines[:-1]]  # an interleaved write fails here
    puts = [e for e in entries if e["headers"].get("X-Amz-Target") == "DynamoDB_20120810.PutItem"]
    assert len(puts) == 150
