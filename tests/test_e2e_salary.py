"""Salary files end to end (SPEC 11): CSV files put into the local S3 reach the real
salary-import binary the way they would in AWS (bucket notification -> queue -> function, see
docs/local-stack.md), and the tests read back what it wrote: the salary table (by key, never a
scan), the per-file ledger, the PSV copies and the reports.

The expected totals are computed here, from the generated CSV text with Python's csv module and
Decimal, not from anything the Rust code computes. Each test uses its own employee ids and its
own key prefix, so the tests can share the stack and run in any order.
"""

from __future__ import annotations

import csv
import io
import json
import time
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import ROOT, local_stack

import salary_samples  # scripts/ is on sys.path (conftest)

FUNCTION = "salary-import"
FIXTURE = "salary-import/s3-object-created.json"
BATCH_ROWS = 24  # crates/salary/src/domain/batch.rs MAX_BATCH_ROWS


# ------------------------------------------------------------------------------ helpers


# The stack reads template.yaml on every name lookup; the tests poll, so the names are kept.
_NAMES: dict[str, str] = {}


def bucket(stack) -> str:
    if "bucket" not in _NAMES:
        _NAMES["bucket"] = stack.bucket("BillsBucket")
    return _NAMES["bucket"]


def table(stack, short: str) -> str:
    if short not in _NAMES:
        _NAMES[short] = stack.table(short)
    return _NAMES[short]


def get(stack, short: str, **key):
    item = stack.dynamodb_resource().Table(table(stack, short)).get_item(Key=key, ConsistentRead=True)
    return item.get("Item")


def expected_totals(files: dict[str, str]) -> dict[tuple[int, str], Decimal]:
    """Per (EmpID, EmpName), the sum of every month's Salary, read with Python's csv module."""
    totals: dict[tuple[int, str], Decimal] = {}
    for text in files.values():
        for row in csv.reader(io.StringIO(text)):
            if row == ["EmpID", "EmpName", "Salary"]:
                continue
            key = (int(row[0]), row[1])
            totals[key] = totals.get(key, Decimal(0)) + Decimal(row[2])
    return totals


def salaries(stack, keys) -> dict[tuple[int, str], Decimal]:
    """EmpSalary of each key (BatchGetItem by key, 100 at a time; absent items are left out)."""
    ddb = stack.dynamodb_resource()
    salary_table = table(stack, "employee-salary")
    found: dict[tuple[int, str], Decimal] = {}
    keys = list(keys)
    for start in range(0, len(keys), 100):
        request = {salary_table: {"Keys": [{"EmpID": k[0], "EmpName": k[1]} for k in keys[start:start + 100]],
                           "ConsistentRead": True}}
        while request:
            page = ddb.batch_get_item(RequestItems=request)
            for item in page["Responses"].get(salary_table, []):
                found[(int(item["EmpID"]), item["EmpName"])] = item["EmpSalary"]
            request = page.get("UnprocessedKeys") or None
    return found


def put_file(stack, key: str, text: str) -> str:
    """Puts a file into the bills bucket (which notifies the import); returns its eTag."""
    response = stack.boto("s3").put_object(Bucket=bucket(stack), Key=key, Body=text.encode())
    return response["ETag"].strip('"')


def import_id(stack, key: str, etag: str) -> str:
    return f"{bucket(stack)}/{key}#{etag}"


def ledger_file(stack, key: str, etag: str) -> dict | None:
    return get(stack, "salary-import-ledger", ImportId=import_id(stack, key, etag), Entry="file")


def ledger_batches(stack, key: str, etag: str) -> list[dict]:
    from boto3.dynamodb.conditions import Key

    ledger = stack.dynamodb_resource().Table(table(stack, "salary-import-ledger"))
    items = ledger.query(KeyConditionExpression=Key("ImportId").eq(import_id(stack, key, etag))
                        & Key("Entry").begins_with("batch#"), ConsistentRead=True)["Items"]
    return items


def wait_until(what: str, check, timeout: float = 300.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def wait_imported(stack, key: str, etag: str, timeout: float = 300.0) -> dict:
    return wait_until(f"{key} imported",
                      lambda: (e := ledger_file(stack, key, etag)) and e.get("Status") == "done" and e,
                      timeout)


def s3_event(stack, key: str, etag: str, size: int) -> dict:
    """The fixture S3 event, pointed at this object (what S3 would send for it)."""
    event = local_stack.fixture(FIXTURE)
    record = event["Records"][0]["s3"]
    record["bucket"]["name"] = bucket(stack)
    record["bucket"]["arn"] = f"arn:aws:s3:::{bucket(stack)}"
    record["object"].update({"key": key.replace(" ", "+"), "eTag": etag, "size": size})
    return event


def deliver_again(stack, key: str, etag: str, size: int) -> dict:
    """A second delivery of the object's event, straight to the function (as a retry would)."""
    status, headers, response = stack.invoke(FUNCTION, s3_event(stack, key, etag, size))
    assert status == 200, (status, response)
    assert "X-Amz-Function-Error" not in headers, response
    return response


def report(stack, key: str) -> dict:
    body = stack.boto("s3").get_object(Bucket=bucket(stack), Key=f"{key}.report.json")["Body"].read()
    return json.loads(body)


def psv(stack, key: str) -> bytes:
    return stack.boto("s3").get_object(Bucket=bucket(stack), Key=key)["Body"].read()


def months(first_id: int) -> dict[str, str]:
    return salary_samples.generate(first_id=first_id)


# ------------------------------------------------------------------------------ tests


def test_twelve_monthly_files_give_the_yearly_totals(stack):
    # Given the sample generator's 12 monthly files of 100 employees
    files = months(first_id=110001)
    want = expected_totals(files)
    assert len(want) == 100
    # When they are dropped into the bucket under salary/
    prefix = "salary/e2e-year/"
    etags = {name: put_file(stack, prefix + name, text) for name, text in files.items()}
    for name, etag in etags.items():
        wait_imported(stack, prefix + name, etag)
    # Then every employee's EmpSalary is the sum of their 12 salaries
    got = salaries(stack, want)
    assert got == want
    total = sum(want.values())
    print(f"yearly totals: 100 employees, 1200 rows, payroll {total} (test-computed) == {sum(got.values())} (table)")
    # and each file has its PSV copy and a report with nothing rejected
    for name in files:
        r = report(stack, prefix + name)
        assert (r["rows"], r["written"], r["rejected"]) == (100, 100, 0), r
        copy = psv(stack, "processed/e2e-year/" + name.removesuffix(".csv") + ".psv")
        assert list(csv.reader(io.StringIO(copy.decode(), newline=""), delimiter="|")) == \
            list(csv.reader(io.StringIO(files[name])))


def test_each_file_delivered_twice_gives_the_same_totals(stack):
    files = months(first_id=120001)
    want = expected_totals(files)
    prefix = "salary/e2e-twice/"
    etags = {name: put_file(stack, prefix + name, text) for name, text in files.items()}
    # A second delivery of every event, while the first is on its way (a duplicate S3 event)
    answers = [deliver_again(stack, prefix + n, etags[n], len(files[n])) for n in files]
    for name, etag in etags.items():
        entry = wait_imported(stack, prefix + name, etag)
    # Both deliveries ran; the salaries were added once
    wait_until("both runs of every file", lambda: all(
        ledger_file(stack, prefix + n, e).get("Runs") == 2 for n, e in etags.items()))
    assert salaries(stack, want) == want
    outcomes = [f["outcome"] for a in answers for f in a["files"]]
    assert set(outcomes) <= {"imported", "already_imported"}, answers
    # Every file: 5 batch markers (100 rows / 24), whichever run wrote them
    for name, etag in etags.items():
        assert len(ledger_batches(stack, prefix + name, etag)) == 5
    print(f"delivered twice: {len(files)} files x 2 runs, outcomes of the direct deliveries {sorted(outcomes)}, "
          f"payroll {sum(want.values())}")


def test_a_crash_halfway_then_a_retry_gives_the_same_totals(stack):
    files = months(first_id=130001)
    want = expected_totals(files)
    prefix = "salary/e2e-crash/"
    crashed = "salarydata-6.csv"
    fault = Path(stack.function_env()["SALARY_TEST_FAULT_FILE"])
    # Given the import of June crashes after two of its five batches (debug builds only)
    fault.write_text(json.dumps({"key": prefix + crashed, "afterBatches": 2}))
    etags = {name: put_file(stack, prefix + name, text) for name, text in files.items()}
    for name, etag in etags.items():
        if name != crashed:
            wait_imported(stack, prefix + name, etag)
    wait_until("the injected crash", lambda: not fault.exists())
    etag = etags[crashed]
    key = prefix + crashed
    wait_until("the crashed run's batches", lambda: len(ledger_batches(stack, key, etag)) >= 2)
    after_crash = len(ledger_batches(stack, key, etag))
    assert after_crash == 2 and ledger_file(stack, key, etag).get("Status") != "done"
    # When the event is delivered again (what Lambda's retry, or the queue, does)
    deliver_again(stack, key, etag, len(files[crashed]))
    entry = wait_imported(stack, key, etag)
    # Then every salary is in once: the totals are those of a run without a crash
    got = salaries(stack, want)
    assert got == want
    assert len(ledger_batches(stack, key, etag)) == 5
    runs = int(entry["Runs"])
    assert runs >= 2
    # The crashed run applied 2 batches (48 rows); the run that finished found them applied. (A
    # transaction whose answer was lost and that the SDK sent again is also found applied, so under
    # load "before" can be larger; the sum is always the file.)
    before, last = int(entry["AppliedBefore"]), int(entry["AppliedByLastRun"])
    assert before >= 2 * BATCH_ROWS and before + last == 100, entry
    r = report(stack, key)
    assert r["written"] + r["kept"] == 100 and r["kept"] >= 2 * BATCH_ROWS, r
    print(f"crash and retry: June crashed with {after_crash} of 5 batches applied, runs {runs}, the last run added "
          f"{entry['AppliedByLastRun']} and found {entry['AppliedBefore']} already added; payroll {sum(got.values())} "
          f"== expected {sum(want.values())}")


def test_quoted_names_round_trip_to_the_psv_and_bad_rows_are_reported(stack):
    text = ('EmpID,EmpName,Salary\n'
            '140001,"Doe, Jane",100.50\n'
            '140002,"Pat | Lee",200\n'
            '140003,"Nok ""Bird"" Srisuk, Jr. | HR",300.25\n'
            '140004,,abc\n'
            '140005,Ann\n')
    key = "salary/e2e-psv/names.csv"
    etag = put_file(stack, key, text)
    wait_imported(stack, key, etag)
    copy = psv(stack, "processed/e2e-psv/names.psv")
    # Quoted exactly where RFC 4180 needs it with | as the separator
    assert b'140002|"Pat | Lee"|200\r\n' in copy
    assert b'140001|Doe, Jane|100.50\r\n' in copy
    assert list(csv.reader(io.StringIO(copy.decode(), newline=""), delimiter="|")) == \
        list(csv.reader(io.StringIO(text)))
    assert salaries(stack, [(140001, "Doe, Jane"), (140002, "Pat | Lee"),
                            (140003, 'Nok "Bird" Srisuk, Jr. | HR')]) == {
        (140001, "Doe, Jane"): Decimal("100.5"),
        (140002, "Pat | Lee"): Decimal("200"),
        (140003, 'Nok "Bird" Srisuk, Jr. | HR'): Decimal("300.25"),
    }
    r = report(stack, key)
    assert (r["rows"], r["written"], r["rejected"]) == (5, 3, 2), r
    lines = {n["line"]: n["reason"] for n in r["rejected_rows"]}
    assert set(lines) == {5, 6}
    assert "EmpName is empty" in lines[5] and 'Salary "abc"' in lines[5]
    assert "expected 3 fields" in lines[6]


def test_the_copy_and_the_report_do_not_trigger_an_import(stack):
    key = "salary/e2e-loop/one.csv"
    etag = put_file(stack, key, "150001,Solo,10\n")
    wait_imported(stack, key, etag)
    stack.wait_idle()
    # The PSV and the report were written into the same bucket; neither was imported.
    assert psv(stack, "processed/e2e-loop/one.psv") == b"150001|Solo|10\r\n"
    assert salaries(stack, [(150001, "Solo")]) == {(150001, "Solo"): Decimal(10)}
    ran = [i for i in stack.invocations() if i["function"] == FUNCTION and "e2e-loop" in json.dumps(i)]
    assert all("processed/" not in json.dumps(i) and ".report.json" not in json.dumps(i) for i in ran), ran
