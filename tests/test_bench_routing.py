"""make bench's local AWS runs each DynamoDB table in its own moto process (scripts/bench.py,
`Upstreams`): a request goes to its table's process, anything else to the stack's own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench import Upstreams, tables_of  # noqa: E402

DDB = {"x-amz-target": "DynamoDB_20120810.UpdateItem"}


def body(**request) -> bytes:
    return json.dumps(request).encode()


def test_the_tables_a_request_names():
    assert tables_of(DDB, body(TableName="a", Key={})) == {"a"}
    assert tables_of({"x-amz-target": "DynamoDB_20120810.BatchWriteItem"},
                     body(RequestItems={"a": [], "b": []})) == {"a", "b"}
    assert tables_of({"x-amz-target": "DynamoDB_20120810.TransactWriteItems"},
                     body(TransactItems=[{"Put": {"TableName": "a"}}, {"Update": {"TableName": "c"}}])) == {"a", "c"}
    # Not DynamoDB, or not a request body: no table
    assert tables_of({"x-amz-target": "secretsmanager.GetSecretValue"}, body(SecretId="a")) == set()
    assert tables_of(DDB, b"not json") == set()
    assert tables_of(DDB, b"[1]") == set()


def test_each_table_to_its_process_and_the_rest_to_the_main_one():
    up = Upstreams("http://main", {"a": "http://a", "b": "http://b"})
    assert up.url_for(DDB, body(TableName="a")) == "http://a"
    assert up.url_for(DDB, body(TableName="b")) == "http://b"
    assert up.url_for(DDB, body(TableName="unknown")) == "http://main"
    assert up.url_for({"x-amz-target": "AmazonSES.SendEmail"}, b"") == "http://main"
    # A request spanning two processes cannot be served by either: the main one answers it
    # (ResourceNotFound), loudly, rather than half of it succeeding.
    assert up.url_for({"x-amz-target": "DynamoDB_20120810.BatchGetItem"},
                      body(RequestItems={"a": {}, "b": {}})) == "http://main"
    assert Upstreams("http://main").url_for(DDB, body(TableName="a")) == "http://main"
