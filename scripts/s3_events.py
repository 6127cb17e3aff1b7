#!/usr/bin/env python3
"""S3 event notifications for the local stack: moto's S3 cannot invoke a Lambda function from a
bucket notification without Docker, so stack.py routes each bucket's notifications to an SQS
queue per importing function (the function's S3 event in template.yaml: bucket, events, prefix and
suffix filter) and this program turns the queue's messages into invokes of that function.

Per message: the body (the S3 event, exactly as moto's S3 wrote it) is sent as a synchronous
invoke (`RequestResponse`) to the function through the local gateway's Invoke API, which is how
S3 itself hands a Lambda its event. The message is deleted when the function succeeds; when it
fails (a function error or no answer) the message is left, comes back after the queue's
visibility timeout, and is tried again, like Lambda's retries of an S3 event; after MAX_RECEIVES
receives it is dropped with a log line (Lambda would send it to its on-failure destination).

Run by stack.py: python scripts/s3_events.py --moto URL --invoke URL --route QUEUE_URL=FUNCTION ...
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request

import boto3

MAX_RECEIVES = 3


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def invoke(invoke_url: str, function: str, payload: bytes, timeout: float) -> tuple[bool, str]:
    req = urllib.request.Request(
        f"{invoke_url}/2015-03-31/functions/{function}/invocations", data=payload, method="POST",
        headers={"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse",
                 "X-Local-Caller": "s3-notification"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read().decode(errors="replace")
            return resp.headers.get("X-Amz-Function-Error") is None, body
    except (urllib.error.URLError, OSError) as e:
        return False, str(e)


def poll(sqs, queue_url: str, function: str, invoke_url: str, timeout: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                         AttributeNames=["ApproximateReceiveCount"])
        except Exception as e:  # moto restarting (the tests stop it on purpose): try again
            log(f"receive from {queue_url} failed: {e}")
            stop.wait(1)
            continue
        for message in answer.get("Messages", []):
            body = message["Body"]
            try:
                record = json.loads(body).get("Records", [{}])[0]
                what = f"s3://{record['s3']['bucket']['name']}/{record['s3']['object']['key']} ({record.get('eventName')})"
            except (ValueError, KeyError, IndexError, AttributeError, TypeError):
                what = body[:120]
            started = time.time()
            ok, answer_text = invoke(invoke_url, function, body.encode(), timeout)
            receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            took = time.time() - started
            if ok:
                log(f"{what} -> {function}: ok in {took:.2f}s {answer_text[:300]}")
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            elif receives >= MAX_RECEIVES:
                log(f"{what} -> {function}: failed {receives} times, dropped: {answer_text[:300]}")
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            else:
                log(f"{what} -> {function}: failed (receive {receives}), retried after the visibility timeout: {answer_text[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moto", required=True, help="the local AWS endpoint (SQS)")
    parser.add_argument("--invoke", required=True, help="the Lambda Invoke API (the local gateway)")
    parser.add_argument("--route", action="append", default=[], help="QUEUE_URL=FUNCTION")
    parser.add_argument("--region", default="ap-southeast-1")
    parser.add_argument("--timeout", type=float, default=300, help="the function's timeout, seconds")
    args = parser.parse_args()
    sqs = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                region_name=args.region).client("sqs", endpoint_url=args.moto)
    stop = threading.Event()
    threads = []
    for route in args.route:
        queue_url, _, function = route.rpartition("=")
        log(f"routing {queue_url} -> {function}")
        t = threading.Thread(target=poll, args=(sqs, queue_url, function, args.invoke, args.timeout, stop), daemon=True)
        t.start()
        threads.append(t)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop.set()
    sys.exit(0)


if __name__ == "__main__":
    main()
