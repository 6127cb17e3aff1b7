#!/usr/bin/env python3
"""moto server that applies one AWS request at a time: the local AWS of the stack.

DynamoDB serialises the writes to an item, so of two racing conditional writes one wins. Stock
`moto_server` is threaded and checks a condition and writes without a lock, so two racing
conditional writes can both succeed there (see crates/callback-core/tests/card_dynamodb.rs).
The exactly-once tests (process-paid run five times at once) mean something only if the local
DynamoDB keeps that guarantee, so every request here holds one lock. The recorder's replay
endpoint is the exception: it replays by sending requests to this server, which take the lock.
So is SQS ReceiveMessage: a long poll waits (up to its WaitTimeSeconds) for a message that only
another request can send, and the stack's S3-notification pollers (scripts/s3_events.py) poll all
the time; under the lock every other request queued behind those waits, and the whole local AWS
crawled at a few requests a second with the CPU idle. moto's queues have their own lock.
moto's recorder is not safe for that: it writes a large request's JSON and its newline in two
writes, and an unlocked request's line could land between them, so it gets a lock of its own.

DynamoDB's limits, as AWS enforces them and moto does not (SPEC 4.6): every write (PutItem,
UpdateItem, BatchWriteItem, TransactWriteItems) is checked before moto sees it, and refused with
DynamoDB's own ValidationException and message: a number out of range (over 38 significant
digits, magnitude outside 1E-130..9.9E+125), an item over 400 KB (for UpdateItem: the stored item
with the SET values applied), a key (table or global index) over 2048 (hash) / 1024 (range)
bytes or empty. So a check missing in our code shows up as a 500 in the tests, as on AWS.

Run: python scripts/moto_serial.py --host 127.0.0.1 --port 5050 (same options as moto_server's -H/-p).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import threading
from decimal import Decimal, InvalidOperation

from moto.moto_api._internal.recorder.models import Recorder
from moto.moto_server.threaded_moto_server import MotoRequestHandler
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

from stack import SENT_PATH  # the stack and the tests read what was sent there

UNLOCKED = ("/moto-api/recorder/replay-recording",)
UNLOCKED_TARGETS = ("AmazonSQS.ReceiveMessage",)


def unlocked(environ) -> bool:
    """True for the requests served outside the lock (see the module doc)."""
    if environ.get("PATH_INFO", "") in UNLOCKED:
        return True
    if environ.get("HTTP_X_AMZ_TARGET", "") in UNLOCKED_TARGETS:
        return True
    # SQS's query protocol names the action in the query string (or the form body, not read here).
    return "Action=ReceiveMessage" in environ.get("QUERY_STRING", "")


def record_whole_lines() -> None:
    """One request recorded at a time, so the recording stays one request per line."""
    record = Recorder._record_request
    lock = threading.Lock()

    def locked(self, request, body=None):
        with lock:
            return record(self, request, body)

    Recorder._record_request = locked


# ------------------------------------------------------------------ DynamoDB's limits (SPEC 4.6)

MAX_ITEM_BYTES = 400 * 1024
MAX_HASH_KEY_BYTES = 2048
MAX_RANGE_KEY_BYTES = 1024
WRITES = {"PutItem", "UpdateItem", "BatchWriteItem", "TransactWriteItems", "DeleteItem"}


class Invalid(Exception):
    """A request DynamoDB answers with ValidationException."""


def number_problem(text: str) -> str | None:
    """DynamoDB's message for a number it refuses, or None."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        return f"The parameter cannot be converted to a numeric value: {text[:64]}"
    if not d.is_finite():
        return f"The parameter cannot be converted to a numeric value: {text[:64]}"
    if d.is_zero():
        return None
    digits = d.as_tuple().digits
    significant = len("".join(map(str, digits)).strip("0"))
    if significant > 38:
        return "Attempting to store more than 38 significant digits in a Number"
    if d.copy_abs() >= Decimal("1E126"):
        return "Number overflow. Attempting to store a number with magnitude larger than supported range"
    if d.copy_abs() < Decimal("1E-130"):
        return "Number underflow. Attempting to store a number with magnitude smaller than supported range"
    return None


def value_size(value: dict) -> int:
    """The bytes DynamoDB counts for one attribute value."""
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return (len(v.strip("-").replace(".", "")) + 1) // 2 + 1
    if kind == "B":
        return len(base64.b64decode(v))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(x.encode()) for x in v)
    if kind == "NS":
        return sum((len(x) + 1) // 2 + 1 for x in v)
    if kind == "BS":
        return sum(len(base64.b64decode(x)) for x in v)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(x) + 1 for k, x in v.items())
    if kind == "L":
        return 3 + sum(value_size(x) + 1 for x in v)
    return 0


def item_size(item: dict) -> int:
    return sum(len(k.encode()) + value_size(v) for k, v in item.items())


def check_numbers(value) -> None:
    """Every N (and NS) anywhere in a request part."""
    if isinstance(value, dict):
        for kind, v in value.items():
            if kind == "N" and isinstance(v, str):
                problem = number_problem(v)
                if problem:
                    raise Invalid(problem)
            elif kind == "NS" and isinstance(v, list):
                for n in v:
                    problem = number_problem(n)
                    if problem:
                        raise Invalid(problem)
            else:
                check_numbers(v)
    elif isinstance(value, list):
        for v in value:
            check_numbers(v)


def key_names(table) -> list[tuple[str, str, str | None]]:
    """(kind, attribute, index name) of the table's keys and its global indexes' keys."""
    keys = [("HASH", table.hash_key_attr, None)]
    if table.range_key_attr:
        keys.append(("RANGE", table.range_key_attr, None))
    for index in getattr(table, "global_indexes", []) or []:
        for elem in index.schema:
            keys.append((elem["KeyType"], elem["AttributeName"], index.name))
    return keys


def check_item(table, item: dict) -> None:
    if item_size(item) > MAX_ITEM_BYTES:
        raise Invalid("Item size has exceeded the maximum allowed size")
    for kind, name, index in key_names(table):
        value = item.get(name)
        if value is None:
            continue
        size = value_size(value)
        if size == 0 and ("S" in value or "B" in value):
            if index:
                raise Invalid("One or more parameter values are not valid. A value specified for a secondary "
                              "index key is not supported. The AttributeValue for a key attribute cannot "
                              f"contain an empty string value. IndexName: {index}, IndexKey: {name}")
            raise Invalid("One or more parameter values are not valid. The AttributeValue for a key attribute "
                          f"cannot contain an empty string value. Key: {name}")
        if kind == "HASH" and size > MAX_HASH_KEY_BYTES:
            raise Invalid("One or more parameter values were invalid: Size of hashkey has exceeded the "
                          "maximum size limit of2048 bytes")
        if kind == "RANGE" and size > MAX_RANGE_KEY_BYTES:
            raise Invalid("One or more parameter values were invalid: Aggregated size of all range keys has "
                          "exceeded the size limit of 1024 bytes")


SET_PAIR = re.compile(r"(#\w+|\w+)\s*=\s*(?:if_not_exists\(\s*[#\w]+\s*,\s*)?(:\w+)")


class Limits:
    """DynamoDB's checks against moto's own tables (so key schemas and stored items are known)."""

    def __init__(self, region_of):
        self.region_of = region_of

    def backend(self, environ):
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        return dynamodb_backends[DEFAULT_ACCOUNT_ID][self.region_of(environ)]

    def table(self, environ, name):
        try:
            return self.backend(environ).get_table(name)
        except Exception:  # an unknown table: moto answers that itself
            return None

    def check(self, environ, operation: str, request: dict) -> None:
        if operation == "PutItem":
            self.put(environ, request["TableName"], request.get("Item", {}))
        elif operation == "UpdateItem":
            self.update(environ, request)
        elif operation == "DeleteItem":
            check_numbers(request.get("Key"))
        elif operation == "BatchWriteItem":
            for table, writes in request.get("RequestItems", {}).items():
                for write in writes:
                    if "PutRequest" in write:
                        self.put(environ, table, write["PutRequest"].get("Item", {}))
        elif operation == "TransactWriteItems":
            for entry in request.get("TransactItems", []):
                if "Put" in entry:
                    self.put(environ, entry["Put"]["TableName"], entry["Put"].get("Item", {}))
                elif "Update" in entry:
                    self.update(environ, entry["Update"])
                for part in entry.values():
                    check_numbers(part.get("ExpressionAttributeValues"))

    def put(self, environ, table_name: str, item: dict) -> None:
        check_numbers(item)
        table = self.table(environ, table_name)
        if table is not None:
            check_item(table, item)

    def update(self, environ, request: dict) -> None:
        check_numbers(request.get("Key"))
        values = request.get("ExpressionAttributeValues") or {}
        check_numbers(values)
        table = self.table(environ, request["TableName"])
        if table is None:
            return
        key = request.get("Key", {})
        try:
            stored = self.backend(environ).get_item(request["TableName"], key)
            item = dict(stored.to_json()["Attributes"]) if stored else {}
        except Exception:
            item = {}
        item.update(key)
        names = request.get("ExpressionAttributeNames") or {}
        expression = request.get("UpdateExpression") or ""
        for name, value in SET_PAIR.findall(expression):
            if value in values:
                item[names.get(name, name)] = values[value]
        check_item(table, item)


# ------------------------------------------------------------------ what SES and SNS sent


def sent_messages() -> dict:
    """Every e-mail moto's SES accepted ({id, source, destinations, subject, body} or, raw,
    {id, source, destinations, raw_data}) and every SMS its SNS accepted ({message_id,
    phone_number, message}), oldest first, read from moto's backends in this process. The same
    records as /moto-api/data.json's ses.Message, ses.RawMessage and sns.SMS, without serialising
    every other object moto holds (every DynamoDB item among them), which took seconds and then
    timed out once the tests had filled the tables."""
    from moto.ses import ses_backends
    from moto.sns import sns_backends

    def each(backends):
        for regions in list(backends.values()):
            yield from list(regions.values())

    fields = ("id", "source", "destinations", "subject", "body", "raw_data")
    emails = [{f: getattr(m, f) for f in fields if hasattr(m, f)}
              for ses in each(ses_backends) for m in list(ses.sent_messages)]
    sms = [{"message_id": m.message_id, "phone_number": m.phone_number, "message": m.message}
           for sns in each(sns_backends) for m in list(sns.sms_message_objects.values())]
    return {"emails": emails, "sms": sms}


def serve_sent(start_response) -> list[bytes]:
    body = json.dumps(sent_messages()).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def region_of(environ) -> str:
    match = re.search(r"Credential=[^/]+/\d+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else os.environ.get("AWS_DEFAULT_REGION", "us-east-1")


def validation_exception(start_response, message: str) -> list[bytes]:
    body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
                       "message": message}).encode()
    start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0"),
                                       ("x-amzn-ErrorType", "ValidationException"),
                                       ("Content-Length", str(len(body)))])
    return [body]


class OneAtATime:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.limits = Limits(region_of)

    def refused(self, environ) -> str | None:
        """DynamoDB's ValidationException message for a write it would refuse, or None."""
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("DynamoDB_"):
            return None
        operation = target.split(".", 1)[-1]
        if operation not in WRITES:
            return None
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)  # moto reads it again
        try:
            self.limits.check(environ, operation, json.loads(raw or b"{}"))
        except Invalid as e:
            return str(e)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # malformed: moto answers it
        return None

    def __call__(self, environ, start_response):
        if unlocked(environ):
            return self.app(environ, start_response)
        with self.lock:
            if environ.get("PATH_INFO", "") == SENT_PATH:
                return serve_sent(start_response)
            message = self.refused(environ)
            if message is not None:
                return validation_exception(start_response, message)
            # Materialise the body inside the lock: the work happens while it is produced.
            return list(self.app(environ, start_response))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    record_whole_lines()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, OneAtATime(app), threaded=True, use_reloader=False,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
