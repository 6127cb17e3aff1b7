"""Items written by this project load in the original's PynamoDB model, and the other way round
(SPEC 5). The model is the one in seed 000 (WalletCallbackRecordTable; the Amex table has the
same attributes). Our side is the `item_codec` example of callback-core, which uses the very
encoder and decoder the functions use."""

import json
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from pynamodb.attributes import (BooleanAttribute, JSONAttribute, NumberAttribute,
                                 UnicodeAttribute)
from pynamodb.models import Model

ROOT = Path(__file__).resolve().parent.parent


class WalletCallbackRecordTable(Model):
    """Seed 000's model, verbatim in its attributes."""

    class Meta:
        table_name = "payment3-wallet-callback-record-dev"
        region = "ap-southeast-1"

    orderId = UnicodeAttribute(hash_key=True)
    paymentId = UnicodeAttribute()
    success = BooleanAttribute()
    userId = UnicodeAttribute()
    message = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    event = JSONAttribute(null=True)
    body = JSONAttribute(null=True)
    amount = NumberAttribute(null=True)


def codec(mode: str, text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["cargo", "run", "-q", "-p", "callback-core", "--example", "item_codec", "--", mode],
        input=text, capture_output=True, text=True, cwd=ROOT, timeout=600,
    )


def encode(body: dict) -> dict:
    out = codec("encode", json.dumps(body))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


SEED_BODY = {
    "orderId": "482500007436",
    "paymentId": "pay_wallet_1234567890",
    "success": True,
    "amount": 2339.0,
    "userId": "b5f392f7-6d89-433c-b24f-bf6a772cab1a",
    "message": "Payment successful",
}


def test_our_item_loads_in_the_original_model():
    item = encode(SEED_BODY)
    record = WalletCallbackRecordTable.from_raw_data(item)
    assert record.orderId == "482500007436"
    assert record.paymentId == "pay_wallet_1234567890"
    assert record.success is True
    assert record.userId == SEED_BODY["userId"]
    assert record.message == "Payment successful"
    assert record.amount == 2339.0
    assert record.body == SEED_BODY
    assert json.loads(record.event["body"]) == SEED_BODY
    # Timestamps parse as Python's isoformat.
    datetime.fromisoformat(record.created_at)
    datetime.fromisoformat(record.updated_at)
    # And PynamoDB writes it back the same (types and values of every attribute).
    assert WalletCallbackRecordTable.from_raw_data(record.serialize()).serialize() == record.serialize()


@pytest.mark.parametrize("amount", [0, 100, 2339.5, 1234567.89])
def test_amounts_keep_their_value(amount):
    item = encode({**SEED_BODY, "amount": amount})
    assert WalletCallbackRecordTable.from_raw_data(item).amount == amount


def test_original_item_loads_here():
    now = datetime.now().isoformat()
    original = WalletCallbackRecordTable(
        orderId="482500007436",
        paymentId="pay_wallet_123",
        success=True,
        userId="b5f392f7-6d89-433c-b24f-bf6a772cab1a",
        message="Payment successful",
        created_at=now,
        updated_at=now,
        event={"body": json.dumps(SEED_BODY)},
        body=SEED_BODY,
        amount=2339.0,
    )
    out = codec("decode", json.dumps(original.serialize()))
    assert out.returncode == 0, out.stderr
    ours = json.loads(out.stdout)
    assert ours["orderId"] == "482500007436"
    assert ours["success"] is True
    assert ours["amount"] == 2339.0
    assert ours["body"] == SEED_BODY
    assert ours["event"] == {"body": json.dumps(SEED_BODY)}
    assert ours["created_at"] == now


def test_original_item_with_nulls_loads_here():
    now = datetime.now().isoformat()
    original = WalletCallbackRecordTable(
        orderId="1", paymentId="p", success=False, userId="u", created_at=now, updated_at=now,
    )
    out = codec("decode", json.dumps(original.serialize()))
    assert out.returncode == 0, out.stderr
    ours = json.loads(out.stdout)
    assert ours["success"] is False
    assert ours["amount"] is None and ours["message"] is None and ours["body"] is None


def test_a_wrongly_typed_item_is_refused_with_the_attribute_named():
    bad = {"orderId": {"S": "1"}, "paymentId": {"S": "p"}, "success": {"S": "true"},
           "userId": {"S": "u"}, "created_at": {"S": "t"}, "updated_at": {"S": "t"}}
    out = codec("decode", json.dumps(bad))
    assert out.returncode != 0
    assert "attribute success: expected BOOL, found S" in out.stderr


def test_the_original_model_loads_what_the_running_wallet_wrote(stack):
    """Not only the codec: the wallet function, through its UpdateItem against the local AWS,
    writes a record the original model reads with PynamoDB's own GetItem."""
    import uuid

    order_id = f"4825{uuid.uuid4().int % 10**8:08d}"
    body = {**SEED_BODY, "orderId": order_id, "paymentId": f"pay_compat_{order_id}", "success": False,
            "message": "Insufficient balance"}  # a failure: no dispatch, nothing else runs
    status, _, text = stack.post_signed("/wallet/callback", body)
    assert status == 200, text

    class Running(WalletCallbackRecordTable):
        class Meta:
            table_name = stack.table("wallet-callback-record")
            region = "ap-southeast-1"
            host = stack.urls["moto"]
            aws_access_key_id = "testing"
            aws_secret_access_key = "testing"

    record = Running.get(order_id, consistent_read=True)
    assert record.paymentId == body["paymentId"] and record.success is False
    assert record.userId == SEED_BODY["userId"] and record.message == "Insufficient balance"
    assert record.amount == 2339.0
    assert record.body == body
    assert json.loads(record.event["body"]) == body
    datetime.fromisoformat(record.created_at)
    datetime.fromisoformat(record.updated_at)
    # PynamoDB can write it back, and the function still updates it (keeping its created_at).
    record.save()
    status, _, text = stack.post_signed("/wallet/callback", {**body, "message": "Retry declined"})
    assert status == 200, text
    again = Running.get(order_id, consistent_read=True)
    assert again.message == "Retry declined" and again.created_at == record.created_at
