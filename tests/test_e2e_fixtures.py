"""Every fixture in events/, replayed through the real binaries on the local stack, meets its
expectation in tests/expected_events.json: once through the Lambda Invoke API, and once more
through its HTTP route (as a gateway would send it) when it has one.

The manifest is shared with callback-core's in-memory fixture test; here the functions run as
Lambda processes under cargo lambda watch, write to DynamoDB (moto) and invoke each other.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from conftest import manifest

import stack as local_stack

CASES = [(name, "invoke") for name in manifest()] + [
    (name, "http") for name, e in manifest().items() if e.get("route")
]


def test_every_fixture_file_is_in_the_manifest():
    files = {p.relative_to(local_stack.EVENTS).as_posix() for p in local_stack.EVENTS.glob("*/*.json")}
    assert files == set(manifest()), "events/ and tests/expected_events.json differ"


def _plain(value):
    """DynamoDB values as the manifest writes them (numbers as JSON numbers)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    return value


def check_record(stack, name: str, record: dict) -> None:
    table_short = record["table"]
    item = stack.get(table_short, **record["key"])
    assert item is not None, f"{name}: no item {record['key']} in {stack.table(table_short)}"
    for attr, want in record["attributes"].items():
        assert _plain(item.get(attr)) == want, f"{name}: {table_short}.{attr} = {item.get(attr)!r}, want {want!r}"


@pytest.mark.parametrize("name,via", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_fixture(replay, stack, name, via):
    r = replay(name, via)
    e = r.expected

    assert r.status == e["status"], f"{name}: status {r.status}, body {r.body_text[:300]}"
    try:
        body = json.loads(r.body_text)
    except ValueError:
        body = None
    if "body" in e:
        assert body == e["body"], f"{name}: body"
    for key, want in (e.get("body_includes") or {}).items():
        assert body[key] == want, f"{name}: body.{key}"
    if e.get("error_starts_with"):
        assert str(body.get("error", "")).startswith(e["error_starts_with"]), f"{name}: error {body}"
    if e.get("body_contains"):
        assert e["body_contains"] in r.body_text, f"{name}: body lacks {e['body_contains']!r}"
    if "outcome" in e and via == "invoke":
        assert r.response.get("outcome") == e["outcome"], f"{name}: outcome {r.response}"

    if e.get("record"):
        check_record(stack, name, e["record"])
    for record in e.get("records") or []:
        check_record(stack, name, record)

    # Dispatches, in order, as the Invoke API received them. Beyond the manifest's list (what the
    # replayed function itself invokes), only what an asynchronously dispatched delayed notify
    # invokes in turn may follow: process-paid, at most twice (SPEC 4.3).
    want = e.get("dispatch")
    want = [] if want is None else [want] if isinstance(want, str) else list(want)
    assert r.dispatched[: len(want)] == want, f"{name}: dispatched {r.dispatched}"
    extra = r.dispatched[len(want):]
    if "delayed-notify" in want and e["function"] != "delayed-notify":
        assert set(extra) <= {"process-paid"} and len(extra) <= 2, f"{name}: dispatched {r.dispatched}"
    else:
        assert extra == [], f"{name}: dispatched {r.dispatched}"

    assert bool(r.new_errors) == bool(e.get("error_log")), f"{name}: error log {r.new_errors}"
    # Every delivery is in the inbox, whatever its outcome; internal invokes are not deliveries.
    # (Nothing the replayed function dispatches writes the inbox, so every new entry is its.)
    assert len(r.new_inbox) == e.get("inbox", 1), f"{name}: inbox {r.new_inbox}"
