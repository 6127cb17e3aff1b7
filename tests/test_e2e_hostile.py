"""Hostile input against the real binaries on the local stack (issue 9, SPEC 4.5, 4.6, 6).

At least 200 generated inputs per callback route (wallet, bank app, Amex) and 100 for /notify:
broken and deeply nested JSON, every required field missing, null, of every wrong type, out of
DynamoDB's range, too long in bytes, invalid base64 and invalid UTF-8, form bodies, duplicate keys,
2 MB bodies, card numbers, CVVs and secrets in bodies, messages and headers, odd direct-invoke
events, and (once callback signatures are on the stack) forged, stale, replayed and
empty-after-`v1,` signatures. They run concurrently. Then, for every one of them:

- a 4xx with a JSON reason, never a 5xx (the local AWS refuses what DynamoDB refuses, so a limit
  our code forgets to check shows up here as a 500), no panic in the function logs;
- nothing dispatched (no process-paid, no delayed notify);
- the delivery kept in the inbox (found by key: the route's order id, the charge id, or the 16
  `UNKNOWN#<n>` partitions; matched by the body's SHA-256), rejected with the status answered;
- an error-log item per delivery, at most one alert e-mail per function and error kind;
- afterwards no card number, CVV or secret in any table, e-mail or function log line (one scan of
  each table at the end).

The figures (cases per route, 5xx, panics, leaks, duration) are written to
`<state dir>/hostile-figures.json` and printed (`pytest -s`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

CALLBACKS = {
    "wallet": ("/wallet/callback", "walletcallback", "wallet"),
    "bankapp": ("/bankapp/callback", "bankappcallback", "bankapp"),
    "amex": ("/amex/callback", "amexcallback", "amex"),
}
NOTIFY = ("/notify", "notify", "notify")
DISPATCH_TARGETS = ("process-paid", "process-paid-wallet", "process-paid-amex", "delayed-notify")

# What must never be stored or logged. Card numbers pass Luhn; secrets are distinctive tokens.
PANS = ["4111111111111111", "5555555555554444", "378282246310005", "6011000990139424"]
PAN_FORMS = ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5555 5555 5555 4444",
             "3782 822463 10005", "6011-0009-9013-9424"]
SKEY = "skey_live_HOSTILEk3y9x7Q"
PKEY = "pkey_test_HOSTILEpub4k2"
WHSEC = "whsec_SG9zdGlsZVNpZ25pbmdLZXkxMjM0NQ=="
BEARER = "hostileBearerT0ken998877"
SECRET_TOKENS = ["HOSTILEk3y9x7Q", "HOSTILEpub4k2", "SG9zdGlsZVNpZ25pbmdLZXkxMjM0NQ", BEARER]
CVV_WORDS = ["cvv", "CVV", "cvc", "cvv2", "securityCode", "security_code", "card_cvv", "CVC2"]
# A CVV next to its word, in any stored or logged form (also inside escaped JSON).
CVV_LEAK = re.compile(r"(?i)(cvv2?|cvc2?|cvn|csc|security[ _-]?code|card_cvv)(\\*[\"'])?[\s\\\"':=#-]*"
                      r"(?:is\s+)?(\\*[\"'])?\s*\d{3,4}\b")
TWO_MB = 2 * 1024 * 1024


@dataclass
class Case:
    name: str
    route: str  # "wallet", "bankapp", "amex", "notify"
    via: str = "http"  # "http" (through the gateway) or "invoke" (the Invoke API, a raw event)
    body: bytes = b""  # http: the raw body
    event: Any = None  # invoke: the event
    headers: dict = field(default_factory=dict)
    # The SHA-256 of the body as the function sees it; None when it cannot be known here.
    body_sha: str | None = None
    # Filled in when run:
    status: int | None = None
    reply: Any = None
    error: str | None = None

    @property
    def function(self) -> str:
        return (CALLBACKS.get(self.route) or NOTIFY)[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ generation


def callback_cases(route: str, order_id: str, sign) -> list[Case]:
    """At least 200 invalid deliveries for one callback route; every one has a defect."""
    good = {"orderId": order_id, "paymentId": "pay_hostile_1", "success": True, "amount": 2339.0,
            "userId": "u-hostile", "message": "Payment successful"}
    good_text = json.dumps(good)
    cases: list[Case] = []

    def add(name: str, body: bytes | str | dict, headers: dict | None = None):
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json", **sign(route, body), **(headers or {})}
        cases.append(Case(f"{route}:{name}", route, body=body, headers=h, body_sha=sha(body)))

    def with_(**changes) -> dict:
        body = dict(good)
        for k, v in changes.items():
            if v is MISSING:
                body.pop(k, None)
            else:
                body[k] = v
        return body

    # Broken JSON: every prefix of a valid body (a cut connection), and malformed texts.
    for k in range(1, len(good_text), 3):
        add(f"prefix-{k}", good_text[:k])
    for i, text in enumerate([
        "", " ", "\n", "{", "}", "{}", "[]", "null", "true", "0", "\"text\"", "[1,2,3]", "{,}",
        '{"orderId": }', "{'orderId': '1'}", good_text + ",", good_text + "}", good_text + good_text,
        good_text.replace(":", "=", 1), good_text.replace('"', "", 2), '{"amount": NaN}',
        '{"amount": Infinity}', '{"a": 1 /* comment */}', "\ufeff" + good_text,
        good_text.replace("true", "True"), good_text[:-1] + ', "x": }', '{"orderId": "\\ud800"}',
        '{"orderId": "\\x41"}', "<xml/>", "orderId",
    ]):
        add(f"malformed-{i}", text)
    # Deeply nested.
    for depth in (129, 1000, 20000):
        add(f"nested-array-{depth}", "[" * depth + "]" * depth)
        add(f"nested-object-{depth}", '{"a":' * depth + "1" + "}" * depth)
        add(f"nested-message-{depth}", good_text[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}")
    # Every required field missing, alone and in pairs, and all of them.
    required = ["orderId", "paymentId", "success", "userId"]
    for f in required:
        add(f"missing-{f}", with_(**{f: MISSING}))
        add(f"null-{f}", with_(**{f: None}))
        add(f"empty-{f}", with_(**{f: ""}))
    for i, a in enumerate(required):
        for b in required[i + 1:]:
            add(f"missing-{a}-{b}", with_(**{a: MISSING, b: MISSING}))
    add("missing-all", {})
    add("only-unknown-fields", {"foo": "bar", "amount": 1})
    # Every field of every wrong type.
    wrong = {"number": 1, "float": 1.5, "true": True, "false": False, "array": [], "array1": ["x"],
             "object": {}, "operator": {"$gt": ""}}
    for f in ["orderId", "paymentId", "userId", "message"]:
        for label, value in wrong.items():
            add(f"type-{f}-{label}", with_(**{f: value}))
    for label, value in {"string-true": "true", "string-false": "false", "one": 1, "zero": 0, "yes": "yes",
                         "array": [True], "object": {"v": True}, "float": 1.0}.items():
        add(f"type-success-{label}", with_(success=value))
    for label, value in {"string": "2339.00", "true": True, "array": [2339], "object": {"v": 1},
                         "empty-string": ""}.items():
        add(f"type-amount-{label}", with_(amount=value))
    # Snake-case aliases of the wrong type too.
    add("alias-order_id-number", with_(orderId=MISSING, order_id=482500007436))
    add("alias-user_id-array", with_(userId=MISSING, user_id=["u"]))
    add("alias-payment_id-object", with_(paymentId=MISSING, payment_id={"id": 1}))
    # Out of DynamoDB's number range (checked on the text, never through a float).
    for i, amount in enumerate(["1e308", "1e-320", "-1", "1e126", "123456789012345678901234567890123456789",
                                "-0.0001", "1e400", "-1e308", "1E-131", "99.9e125",
                                "1234567890123456789012345678901234567.89", "0.000000000000000000000000000000"
                                "000000000000000000000000000000000000000000000000000000000000000000000000000"
                                "0000000000000000000000000000000000000000000000000000000001"]):
        add(f"amount-{i}-{amount[:12]}", good_text.replace("2339.0", amount))
    # Too long in bytes (DynamoDB's key limit is in bytes): emoji are 4 bytes each.
    emoji = "\N{GRINNING FACE}"
    for f, value in [("orderId", emoji * 1000), ("orderId", "9" * 1025), ("orderId", emoji * 257),
                     ("orderId", "\u00e9" * 513), ("paymentId", emoji * 1000), ("userId", emoji * 1000),
                     ("paymentId", "p" * 5000), ("orderId", "\u0000"), ("orderId", "a\nb"),
                     ("userId", "u\u0007"), ("orderId", " " * 10)]:
        add(f"long-{f}-{len(value.encode())}", with_(**{f: value}))
    # Invalid UTF-8 (the gateway sends it base64-encoded, as API Gateway does with binary).
    for i, raw in enumerate([b"\xff\xfe\xfd", b'{"orderId": "\xff"}', b"\xc3\x28", b"\xc0\xaf",
                             b"\xed\xa0\x80", good_text.encode()[:-3] + b"\xe2\x82", "é".encode("latin-1") * 10,
                             b'{"orderId":"1","paymentId":"p","success":true,"userId":"\x80"}']):
        add(f"utf8-{i}", raw)
    # Form bodies.
    for i, form in enumerate([f"orderId={order_id}&paymentId=p&success=true&userId=u",
                              "orderId=1", "a=b&c=d", f"orderId={order_id}&success=true&cardNumber=4111111111111111",
                              "=&=&="]):
        add(f"form-{i}", form, {"Content-Type": "application/x-www-form-urlencoded"})
    # Duplicate keys, the last one wrong (serde keeps the last).
    base = f'"orderId": "{order_id}", "paymentId": "p", "userId": "u"'
    for i, text in enumerate([
        '{' + base + ', "success": true, "success": "true"}',
        '{' + base + ', "success": true, "orderId": 5}',
        '{' + base + ', "success": true, "amount": 1, "amount": 1e308}',
        '{' + base + ', "success": true, "userId": null}',
        '{' + base + ', "success": true, "paymentId": []}',
        '{' + base + ', "success": true, "message": "ok", "message": 5}',
        '{' + base + ', "success": false, "success": "false"}',
        '{' + base + ', "success": true, "amount": -5}',
    ]):
        add(f"duplicate-{i}", text)
    # 2 MB (and just over 64 KiB) bodies: 413, still recorded.
    pad = "x" * TWO_MB
    add("2mb-json", good_text[:-1] + f', "pad": "{pad}"}}')
    add("2mb-card", good_text[:-1] + f', "cardNumber": "4111 1111 1111 1111", "cvv": "987", "pad": "{pad}"}}')
    add("2mb-emoji", json.dumps({"orderId": emoji * (TWO_MB // 4)}))
    add("2mb-control", "\u0001" * TWO_MB)
    add("2mb-binary", b"\xff" * TWO_MB)
    add("64kib-plus-1", good_text[:-1] + ', "pad": "' + "y" * (64 * 1024) + '"}')
    # Card numbers, CVVs and secrets in bodies, messages and headers (each with a defect).
    for i, pan in enumerate(PAN_FORMS):
        add(f"pan-body-{i}", with_(success="true", cardNumber=pan, message=f"paid with {pan}"))
    add("pan-number", with_(success="yes", cardNumber=4111111111111111))
    for i, word in enumerate(CVV_WORDS):
        add(f"cvv-key-{word}", with_(success="true", **{word: "987" if i % 2 else 987}))
        add(f"cvv-text-{word}", with_(success=None, message=f"card 4111 1111 1111 1111 {word}: 123"))
    add("cvv-free-text", with_(success="true", message="card 4111 1111 1111 1111 cvv 987 exp 12/29"))
    add("pan-in-error", with_(success="4111111111111111"))
    add("pan-as-amount-string", with_(amount="4111111111111111"))
    add("skey-in-message", with_(success="true", message=f"merchant key {SKEY}"))
    add("pkey-in-field", with_(success="true", publicKey=PKEY))
    add("whsec-in-message", with_(success="true", message=f"our signing key is {WHSEC}"))
    add("bearer-in-message", with_(success="true", message=f"Authorization: Bearer {BEARER}"))
    add("secret-fields", with_(success="true", secretKey=SKEY, password="hunter2hostile", apiKey=SKEY))
    add("escaped-pan", good_text[:-1].replace("true", '"true"') + ', "card": "\\u0034111111111111111"}')
    add("escaped-cvv-key", good_text[:-1].replace("true", '"true"') + ', "c\\u0076v": "987"}')
    add("nested-card", with_(success="true", payer={"card": {"number": "5555 5555 5555 4444", "cvc": "321"}}))
    add("authorization-header", with_(success="true"), {"Authorization": f"Bearer {BEARER}"})
    add("api-key-header", with_(success="true"), {"X-Api-Key": SKEY, "Cookie": f"session={BEARER}"})
    add("card-header", with_(success="true"), {"X-Card": "4111-1111-1111-1111", "X-Note": "cvv 987"})
    return cases


class _Missing:
    pass


MISSING = _Missing()


def invoke_cases(route: str, order_id: str) -> list[Case]:
    """Raw events through the Invoke API: what a misconfigured caller or a test console sends."""
    rest = {"resource": "/x", "path": "/x", "httpMethod": "POST", "headers": {"Content-Type": "application/json"},
            "requestContext": {"resourcePath": "/x", "httpMethod": "POST", "stage": "local", "requestId": "h",
                               "identity": {"sourceIp": "203.0.113.7"}}}
    cases = []

    def add(name, event, body_sha=None):
        cases.append(Case(f"{route}:invoke-{name}", route, via="invoke", event=event, body_sha=body_sha))

    for text in ["%%%not base64%%%", "abc", "====", "eyJvcmRlcklkIjo"]:
        add(f"bad-base64-{text[:6]}", {**rest, "body": text, "isBase64Encoded": True}, sha(text.encode()))
    for raw in [b"\xff\xfe", b'{"orderId": "\xff"}']:
        add(f"base64-binary-{raw[:2].hex()}",
            {**rest, "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}, sha(raw))
    add("base64-of-broken-json", {**rest, "body": base64.b64encode(b'{"orderId":').decode(), "isBase64Encoded": True},
        sha(b'{"orderId":'))
    for i, event in enumerate([None, 5, [], {"body": 5}, {"body": [1]}, {"httpMethod": 5, "requestContext": "x"},
                               {"requestContext": {}, "body": None}, {"orderId": {"$gt": 1}},
                               {"body": {"orderId": order_id, "success": "true"}},
                               {**rest, "headers": {"X-Pad": "h" * 200_000}, "body": "{}"}]):
        add(f"odd-{i}", event)
    return cases


def notify_cases(charge_id: str) -> list[Case]:
    """At least 100 invalid KBank notifies; none carries a valid checksum."""
    good = {"id": charge_id, "amount": "2339.00", "currency": "THB", "status": "success",
            "transaction_state": "Authorized", "checksum": "0" * 64}
    good_text = json.dumps(good)
    cases: list[Case] = []

    def add(name: str, body: bytes | str | dict, headers: dict | None = None):
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json", **(headers or {})}
        cases.append(Case(f"notify:{name}", "notify", body=body, headers=h, body_sha=sha(body)))

    def with_(**changes) -> dict:
        body = dict(good)
        for k, v in changes.items():
            if v is MISSING:
                body.pop(k, None)
            else:
                body[k] = v
        return body

    for k in range(1, len(good_text), 6):
        add(f"prefix-{k}", good_text[:k])
    for i, text in enumerate(["", "{}", "[]", "null", "\"x\"", "{,}", good_text + "}", "{'id': 'x'}",
                              "[" * 2000 + "]" * 2000, '{"a":' * 500 + "1" + "}" * 500]):
        add(f"malformed-{i}", text)
    for f in ["id", "checksum"]:
        add(f"missing-{f}", with_(**{f: MISSING}))
        add(f"null-{f}", with_(**{f: None}))
    for label, value in {"number": 5, "true": True, "array": ["chrg"], "object": {"id": 1}, "blank": "  ",
                         "path": "../etc/passwd", "long": "c" * 129, "emoji": "\N{GRINNING FACE}" * 300,
                         "control": "chrg\u0000x", "slash": "chrg/1"}.items():
        add(f"id-{label}", with_(id=value))
    for i, amount in enumerate(["1e308", "1e-320", "1e126", "123456789012345678901234567890123456789"]):
        add(f"amount-number-{i}", good_text.replace('"2339.00"', amount))
        add(f"amount-string-{i}", with_(amount=amount))
    for label, value in {"wrong": "f" * 64, "short": "abc", "empty": "", "number": 12345, "array": [],
                         "upper": "F" * 64, "long": "a" * 5000}.items():
        add(f"checksum-{label}", with_(checksum=value))
    for i, form in enumerate([f"id={charge_id}&amount=2339.00&currency=THB&status=success&transaction_state=Authorized",
                              f"objectId={charge_id}&amount=1e308", "amount=1", "id=&amount=1", f"id={charge_id}&checksum=zz",
                              f"id={charge_id}&card=4111+1111+1111+1111&cvv=987"]):
        add(f"form-{i}", form, {"Content-Type": "application/x-www-form-urlencoded"})
    for i, raw in enumerate([b"\xff\xfe", b'{"id": "\xff"}', b"\xc3\x28" * 10]):
        add(f"utf8-{i}", raw)
    add("duplicate-id", '{"id": "' + charge_id + '", "id": 5, "checksum": "' + "0" * 64 + '"}')
    add("duplicate-amount", good_text[:-1] + ', "amount": 1e308}')
    add("2mb", good_text[:-1] + f', "pad": "{"x" * TWO_MB}"}}')
    add("2mb-card", good_text[:-1] + f', "card_number": "4111 1111 1111 1111", "pad": "{"x" * TWO_MB}"}}')
    add("2mb-binary", b"\xfe" * TWO_MB)
    for i, pan in enumerate(PAN_FORMS):
        add(f"pan-{i}", with_(card_number=pan, description=f"card {pan}"))
    for word in CVV_WORDS:
        add(f"cvv-{word}", with_(**{word: "987"}, note=f"{word} 123"))
    add("pan-status", with_(status="4111 1111 1111 1111", transaction_state="cvv 987"))
    add("secrets", with_(secretKey=SKEY, note=f"key {SKEY} {WHSEC}"), {"Authorization": f"Bearer {BEARER}"})
    add("pan-number", good_text[:-1] + ', "card": 4111111111111111}')
    return cases


# ------------------------------------------------------------------------------ signing


def signing_keys(stack) -> dict | None:
    """The callback signing keys the stack seeded (SPEC 4.5), or None before signatures landed."""
    sm = stack.boto("secretsmanager")
    for name in (f"payment3-callback-keys-{stack.branch}",):
        try:
            return json.loads(sm.get_secret_value(SecretId=name)["SecretString"])
        except Exception:  # not seeded: the stack has no callback signatures yet
            continue
    return None


def standard_webhooks_headers(key: str, body: bytes, msg_id: str | None = None,
                              timestamp: int | None = None) -> dict:
    secret = base64.b64decode(key.removeprefix("whsec_"))
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def signature_cases(route: str, order_id: str, key: str) -> list[Case]:
    """Forged, stale, future, replayed, empty-after-`v1,` and malformed signatures on a callback
    that would otherwise be a valid success (so only the signature stops it)."""
    body = json.dumps({"orderId": order_id, "paymentId": "pay_forged", "success": True, "amount": 2339.0,
                       "userId": "attacker"}).encode()
    good = standard_webhooks_headers(key, body)
    forged_key = "whsec_" + base64.b64encode(b"not-the-gateway-key-0123456789ab").decode()
    other_body = body.replace(b"pay_forged", b"pay_other")
    now = int(time.time())
    variants = {
        "unsigned": {},
        "forged-key": standard_webhooks_headers(forged_key, body),
        "stale": standard_webhooks_headers(key, body, timestamp=now - 301),
        # an hour ahead, not 301 s: the cases are sent up to a minute after they are built
        "future": standard_webhooks_headers(key, body, timestamp=now + 3600),
        "empty-after-v1": {**good, "webhook-signature": "v1,"},
        "v1-comma-space": {**good, "webhook-signature": "v1, "},
        "wrong-version": {**good, "webhook-signature": good["webhook-signature"].replace("v1,", "v2,")},
        "signature-of-another-body": standard_webhooks_headers(key, other_body, msg_id=good["webhook-id"]),
        "replayed-signature-new-id": {**good, "webhook-id": "msg_replayed_" + uuid.uuid4().hex},
        "bad-timestamp": {**good, "webhook-timestamp": "yesterday"},
        "missing-id": {k: v for k, v in good.items() if k != "webhook-id"},
        "missing-timestamp": {k: v for k, v in good.items() if k != "webhook-timestamp"},
        "truncated-mac": {**good, "webhook-signature": good["webhook-signature"][:-8]},
        "not-base64": {**good, "webhook-signature": "v1,%%%%"},
        "many-bad": {**good, "webhook-signature": " ".join(["v1,AAAA"] * 50)},
        "huge": {**good, "webhook-signature": "v1," + "A" * 8000},
    }
    return [Case(f"{route}:sig-{name}", route, body=body, body_sha=sha(body),
                 headers={"Content-Type": "application/json", **headers})
            for name, headers in variants.items()]


# ------------------------------------------------------------------------------ the run


def run_case(stack, case: Case) -> Case:
    try:
        if case.via == "http":
            path = (CALLBACKS.get(case.route) or NOTIFY)[0]
            status, _, raw = stack.post(path, case.body, case.headers)
            case.status = status
            case.reply = json.loads(raw) if raw else None
        else:
            http_status, _, response = stack.invoke((CALLBACKS.get(case.route) or NOTIFY)[2], case.event)
            if http_status != 200 or not isinstance(response, dict):
                case.status, case.reply = 502, response
            else:
                case.status = response.get("statusCode")
                case.reply = json.loads(response.get("body") or "null")
    except Exception as e:  # noqa: BLE001 - any failure to get an answer is the case's finding
        case.error = repr(e)[:300]
    return case


def query_partition(stack, order_id: str) -> list[dict]:
    table = stack.dynamodb_resource().Table(stack.table("callback-inbox"))
    items, kwargs = [], {"KeyConditionExpression": "orderId = :o", "ExpressionAttributeValues": {":o": order_id},
                         "ConsistentRead": True}
    while True:
        page = table.query(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def leaks_in(text: str, where: str) -> list[str]:
    found = []
    digits_only = re.sub(r"[\s\-]", "", text)
    for pan in PANS:
        if pan in digits_only:
            found.append(f"{where}: card number {pan[:6]}...")
    for token in SECRET_TOKENS:
        if token in text:
            found.append(f"{where}: secret {token[:8]}...")
    if "\\u0034111111111111111" in text:
        found.append(f"{where}: escaped card number")
    for m in CVV_LEAK.finditer(text):
        found.append(f"{where}: CVV {m.group(0)[:40]!r}")
    return found


def test_hostile_inputs_are_4xx_recorded_undispatched_and_leave_no_secret(stack):
    run = uuid.uuid4().hex[:6]
    order_ids = {route: f"4{i + 6}{int(run, 16) % 10**10:010d}" for i, route in enumerate(CALLBACKS)}
    charge_id = f"chrg_hostile_{run}"
    keys = signing_keys(stack)

    def sign(route: str, body: bytes) -> dict:
        # Once callbacks are signed (SPEC 4.5), the hostile bodies are signed correctly, so they
        # reach validation instead of stopping at the signature.
        if keys and keys.get(route):
            return standard_webhooks_headers(keys[route][0], body)
        return {}

    cases: list[Case] = []
    for route in CALLBACKS:
        cases += callback_cases(route, order_ids[route], sign)
        cases += invoke_cases(route, order_ids[route])
        if keys and keys.get(route):
            cases += signature_cases(route, order_ids[route], keys[route][0])
    cases += notify_cases(charge_id)
    cases += invoke_cases("notify", charge_id)
    per_route = Counter(c.route for c in cases)
    for route in CALLBACKS:
        assert per_route[route] >= 200, per_route
    assert per_route["notify"] >= 100, per_route

    # Before: where the logs, the invoke log and the e-mails stand.
    stack.wait_idle()
    watch_log = stack.state_dir / "logs" / "watch.log"
    log_offset = watch_log.stat().st_size if watch_log.exists() else 0
    position = stack.invoke_log_position()
    mails_before = {m.get("id") for m in stack.sent_emails()}
    started = time.time()

    # When: every case at once, a few at a time (the stack runs 5 instances per function).
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = list(pool.map(lambda c: run_case(stack, c), cases))
    stack.wait_idle()
    duration = time.time() - started

    # Then: each one a 4xx with a reason; no 5xx, no transport failure
    failures = [f"{c.name}: {c.error}" for c in done if c.error]
    five_xx = [f"{c.name}: {c.status} {str(c.reply)[:200]}" for c in done if c.status and c.status >= 500]
    not_4xx = [f"{c.name}: {c.status} {str(c.reply)[:200]}" for c in done
               if not c.error and not (c.status and 400 <= c.status < 500)]
    no_reason = [c.name for c in done if c.status and 400 <= c.status < 500
                 and not (isinstance(c.reply, dict) and c.reply.get("success") is False
                          and isinstance(c.reply.get("error"), str) and c.reply["error"])]

    # No panic in the function logs
    log_text = watch_log.read_bytes()[log_offset:].decode(errors="replace") if watch_log.exists() else ""
    panics = [line for line in log_text.splitlines() if "panicked" in line]

    # Nothing dispatched
    dispatched = [i for i in stack.invocations(since=position) if i["function"] in DISPATCH_TARGETS]

    # Every delivery kept in the inbox, rejected with the status answered (queried by key)
    entries = []
    for partition in [*order_ids.values(), charge_id] + [f"UNKNOWN#{n}" for n in range(16)]:
        entries += query_partition(stack, partition)
    kept = Counter((e.get("function"), e.get("bodySha256"), int(e.get("status", 0))) for e in entries
                   if e.get("outcome") in ("rejected", "failed"))
    expected = Counter((c.function, c.body_sha, c.status) for c in done if c.body_sha and c.status)
    missing_inbox = [f"{fn} {digest[:12]} {status} x{n - kept[(fn, digest, status)]}"
                     for (fn, digest, status), n in expected.items() if kept[(fn, digest, status)] < n]
    hot = Counter(e["orderId"] for e in entries if str(e["orderId"]).startswith("UNKNOWN"))

    # One error-log item per delivery, at most one alert per function and error kind
    errors = [e for e in stack.scan("callback-error-log") if e.get("created_at", "") >= time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(started - 1))]
    error_counts = Counter(e.get("function_name") for e in errors)
    new_mails = [m for m in stack.sent_emails() if m.get("id") not in mails_before]
    alerts = Counter()
    for m in new_mails:
        body = json.dumps(m)
        kind = re.search(r"Error type: (\w+)", body)
        alerts[(m.get("subject"), kind.group(1) if kind else "?")] += 1
    repeated_alerts = {k: n for k, n in alerts.items() if n > 1}

    # No card number, CVV or secret in any table, e-mail or function log line
    leaks = []
    for short in stack.tables:
        for item in stack.scan(short):
            leaks += leaks_in(json.dumps(item, default=str, ensure_ascii=False), f"table {short}")
    for m in stack.sent_emails():
        leaks += leaks_in(json.dumps(m, ensure_ascii=False), "e-mail")
    leaks += leaks_in(log_text, "function log")

    figures = {
        "cases": dict(per_route), "signature_cases": sum(1 for c in done if ":sig-" in c.name),
        "statuses": dict(Counter(str(c.status) for c in done)), "5xx": len(five_xx), "not_4xx": len(not_4xx),
        "transport_failures": len(failures), "panics": len(panics), "dispatched": len(dispatched),
        "inbox_missing": len(missing_inbox), "unknown_partitions_used": len(hot),
        "largest_unknown_partition": max(hot.values(), default=0), "error_log_items": dict(error_counts),
        "alerts": len(new_mails), "repeated_alerts": len(repeated_alerts), "leaks": len(leaks),
        "duration_seconds": round(duration, 1), "signatures": "on" if keys else "not on the stack yet",
    }
    (stack.state_dir / "hostile-figures.json").write_text(json.dumps(figures, indent=2))
    print("\nhostile-input figures:", json.dumps(figures, indent=2))

    assert not failures, failures[:20]
    assert not five_xx, five_xx[:20]
    assert not not_4xx, not_4xx[:20]
    assert not no_reason, no_reason[:20]
    assert not panics, panics[:5]
    assert not dispatched, dispatched[:5]
    assert not missing_inbox, missing_inbox[:20]
    # Deliveries without an order id are spread, not piled on one key
    assert len(hot) >= 8, hot
    for route in CALLBACKS:
        assert error_counts[CALLBACKS[route][1]] >= per_route[route], (route, error_counts)
    assert error_counts["notify"] >= per_route["notify"], error_counts
    assert not repeated_alerts, repeated_alerts
    assert not leaks, leaks[:30]


def test_signature_cases_need_the_signed_stack(stack):
    """Forged, stale, replayed and empty-after-`v1,` signatures are part of the run above once
    the stack seeds callback signing keys (SPEC 4.5, the i9 work); until then they cannot run."""
    if signing_keys(stack) is None:
        pytest.skip("callback signatures (SPEC 4.5) are not on main yet: no payment3-callback-keys-local "
                    "secret on the stack, so forged/stale/replayed/empty-after-v1 cases are not generated")
    # With keys present, the run above includes them; here: each kind is among the generated cases.
    names = {c.name.split(":sig-")[1] for c in signature_cases("wallet", "1", "whsec_" + "A" * 44)}
    assert {"forged-key", "stale", "future", "empty-after-v1", "signature-of-another-body",
            "replayed-signature-new-id"} <= names


def test_accepted_callbacks_store_no_card_number_cvv_or_secret(stack):
    """A valid `success: false` (nothing to dispatch) carrying a card number, a CVV and a key in
    its body and message: answered 200, and the record, inbox and logs hold none of them."""
    keys = signing_keys(stack)
    order_id = f"47{uuid.uuid4().int % 10**10:010d}"
    body = json.dumps({"orderId": order_id, "paymentId": "pay_redact", "success": False, "amount": 10,
                       "userId": "u", "cardNumber": "4111 1111 1111 1111", "cvv": "987",
                       "message": f"declined 5555-5555-5555-4444 cvv 321 {SKEY}"}).encode()
    headers = standard_webhooks_headers(keys["wallet"][0], body) if keys and keys.get("wallet") else {}
    status, _, raw = stack.post("/wallet/callback", body, headers)
    assert status == 200, raw
    record = stack.get("wallet-callback-record", orderId=order_id)
    assert record is not None
    text = json.dumps(record, default=str)
    assert leaks_in(text, "record") == []
    assert "411111******1111" in text
    assert json.loads(record["body"])["cvv"] == "[REDACTED]"
    [entry] = query_partition(stack, order_id)
    assert leaks_in(json.dumps(entry, default=str), "inbox") == []
    assert entry["bodySha256"] == sha(body) and int(entry["bodyBytes"]) == len(body)
    assert Decimal(str(entry["bodyBytes"])) == len(body)
