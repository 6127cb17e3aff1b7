#!/usr/bin/env python3
"""The local stack: the whole system on one machine, no AWS account, no Docker.

One program for `make dev`, `make demo` and the end-to-end tests (tests/conftest.py imports
`Stack`). It starts, each in its own process group so that stopping it leaves nothing behind:

  moto server       the local AWS (DynamoDB, SES, Secrets Manager), one request at a time as
                    DynamoDB's conditional writes need (scripts/moto_serial.py), with moto's
                    recorder on so a restarted moto replays its state (`stop_aws()` / `start_aws()`)
  fake KBank        scripts/fake_kbank.py: the charge inquiry process-paid calls
  cargo lambda watch  every function binary (on an internal port)
  local gateway     scripts/local_gateway.py in front of watch: template.yaml's HTTP routes as
                    API Gateway REST serves them, and the Lambda Invoke API (async `Event` invokes
                    answered 202 and run in the background), which is the functions'
                    AWS_ENDPOINT_URL_LAMBDA. Why watch alone does not do: see that file.

Tables come from template.yaml (every AWS::DynamoDB::Table, whatever its Condition, with
${Branch} substituted), and so do the routes (every Api event of every function, mapped onto
the function's `BuildProperties.Binary`): no second list of either.

CLI:
  python scripts/stack.py dev  [--state .stack] [--reload]   start, print, stream logs; Ctrl-C stops
  python scripts/stack.py demo [--state .stack]              replay events/ against the running stack
  python scripts/stack.py records [--state .stack]           print every item in every table
  python scripts/stack.py sign ROUTE 'JSON'                  print a curl of a callback signed now
  python scripts/stack.py with-aws -- CMD...                 run CMD with PAYMENT3_DYNAMODB_ENDPOINT set
                                                             to a local DynamoDB (serial moto), then stop it
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# What SES and SNS sent, served by scripts/moto_serial.py (which imports it from here).
SENT_PATH = "/payment3/sent"
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
MANIFEST = ROOT / "tests" / "expected_events.json"
BIN = Path(sys.executable).parent  # the virtualenv this runs in (.venv/bin under make)
REGION = "ap-southeast-1"

# The KBank secret and demo data the stack seeds; the card fixtures are signed with this key.
KBANK_SECRET_NAME = "kbank-dev"
KBANK_SECRET_KEY = "skey_test_payment3_local"
DEMO_ORDER = "482500007436"
DEMO_CARD_ORDER = "482500007437"
DEMO_CARD = {
    "token": "tokn_demo_482500007437",
    "chargeId": "chrg_demo_482500007437",
    "orderId": DEMO_CARD_ORDER,
    "callback": "https://shop.villamarket.com",
}
# The callback signing keys the stack seeds (SPEC 4.5), one per gateway, in the secret
# payment3-callback-keys-<branch>; fixtures and demo curls are signed with them when sent.
CALLBACK_KEYS = {
    "wallet": ["whsec_cGF5bWVudDMtbG9jYWwtd2FsbGV0LWtleSE="],
    "bankapp": ["whsec_cGF5bWVudDMtbG9jYWwtYmFua2FwcC1rZXkh"],
    "amex": ["whsec_cGF5bWVudDMtbG9jYWwtYW1leC1rZXkh"],
}
# The function binaries that take signed callbacks, and the gateway each one is.
SIGNED_FUNCTIONS = {"wallet": "wallet", "bankapp": "bankapp", "amex": "amex"}
ALERT_FROM = "payment3-alerts@payment3.local"
ALERT_TO = "payments-team@payment3.local"
NOTICE_FROM = "payment3-paid@payment3.local"
NOTICE_TO = "shop-orders@payment3.local"

# Recharge dunning webhook (SPEC 9): the secret the stack seeds (recharge-<branch>); the
# events/recharge-webhook fixtures are signed with this client secret.
RECHARGE_CLIENT_SECRET = "rcs_local_payment3_demo"
RECHARGE_API_TOKEN = "rtok_local_payment3_demo"
DEMO_RECHARGE_CHARGE = "389000001"

# Function binaries as cargo lambda watch names them, by the role the functions' config gives them.
LOCAL_FUNCTION_NAMES = {
    "PROCESS_PAID_CARD_FUNCTION": "process-paid",
    "PROCESS_PAID_WALLET_FUNCTION": "process-paid-wallet",
    "PROCESS_PAID_AMEX_FUNCTION": "process-paid-amex",
    "DELAYED_NOTIFY_FUNCTION": "delayed-notify",
    "RECHARGE_DUNNING_FUNCTION": "recharge-dunning",
}


# ------------------------------------------------------------------------- template.yaml


class CfnLoader(yaml.SafeLoader):
    """YAML loader that reads CloudFormation short tags (!Sub, !Ref, !If, ...) as their long form."""


def _cfn_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict:
    with open(path) as f:
        return yaml.load(f, Loader=CfnLoader)


def _sub(value: Any, params: dict[str, str]) -> Any:
    """Resolves a table property: literals, !Sub with ${Param}, !Ref Param."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"]
        if not isinstance(text, str):
            raise ValueError(f"only the one-argument !Sub is supported in table definitions: {value}")
        for name, val in params.items():
            text = text.replace("${" + name + "}", val)
        if "${" in text:
            raise ValueError(f"unresolved parameter in {value['Fn::Sub']!r}")
        return text
    if isinstance(value, dict) and "Ref" in value:
        return params[value["Ref"]]
    if isinstance(value, dict) and any(k.startswith("Fn::") for k in value):
        raise ValueError(f"table definitions must be literal (SPEC 4-6, template.yaml header): {value}")
    if isinstance(value, dict):
        return {k: _sub(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [_sub(v, params) for v in value]
    return value


@dataclass
class TableSpec:
    logical_id: str
    create: dict  # boto3 DynamoDB create_table arguments
    ttl_attribute: str | None


def table_specs(template: dict, branch: str) -> list[TableSpec]:
    """Every AWS::DynamoDB::Table in the template, regardless of its Condition, as boto3 calls."""
    specs = []
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        params = {"Branch": branch}
        create = {
            "TableName": _sub(props["TableName"], params),
            "KeySchema": _sub(props["KeySchema"], params),
            "AttributeDefinitions": _sub(props["AttributeDefinitions"], params),
            "BillingMode": _sub(props.get("BillingMode", "PAY_PER_REQUEST"), params),
        }
        if create["BillingMode"] == "PROVISIONED":
            create["ProvisionedThroughput"] = _sub(props["ProvisionedThroughput"], params)
        gsis = props.get("GlobalSecondaryIndexes")
        if gsis:
            create["GlobalSecondaryIndexes"] = [
                {k: _sub(v, params) for k, v in gsi.items() if k in ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")}
                for gsi in gsis
            ]
        lsis = props.get("LocalSecondaryIndexes")
        if lsis:
            create["LocalSecondaryIndexes"] = [
                {k: _sub(v, params) for k, v in lsi.items() if k in ("IndexName", "KeySchema", "Projection")}
                for lsi in lsis
            ]
        ttl = props.get("TimeToLiveSpecification") or {}
        enabled = _sub(ttl.get("Enabled", False), params)
        specs.append(TableSpec(logical_id, create, _sub(ttl["AttributeName"], params) if ttl and enabled else None))
    return specs


@dataclass
class Route:
    path: str
    method: str
    function: str  # the logical id in template.yaml
    binary: str  # the cargo binary that cargo lambda watch runs for it


def api_routes(template: dict) -> list[Route]:
    """Every API Gateway event of every function, with the binary it is built from."""
    routes = []
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        binary = (resource.get("Metadata") or {}).get("BuildProperties", {}).get("Binary")
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            if event.get("Type") not in ("Api", "HttpApi"):
                continue
            props = event.get("Properties") or {}
            if not binary:
                raise ValueError(f"{logical_id} has an API route but no Metadata.BuildProperties.Binary")
            routes.append(Route(props["Path"], str(props.get("Method", "ANY")).upper(), logical_id, binary))
    return sorted(routes, key=lambda r: (r.path, r.method))


def queue_names(template: dict, branch: str) -> dict[str, str]:
    """Every AWS::SQS::Queue of the template: logical id -> QueueName (FunctionNameSuffix "")."""
    params = {"Branch": branch, "FunctionNameSuffix": ""}
    return {
        logical_id: _sub(resource["Properties"]["QueueName"], params)
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == "AWS::SQS::Queue"
    }


@dataclass
class FunctionSpec:
    name: str  # the deployed name, payment3-<name>-<branch>
    binary: str  # what cargo lambda watch runs
    on_failure_queue: str | None  # the QueueName of its async on-failure destination


def function_specs(template: dict, branch: str) -> list[FunctionSpec]:
    """Every function with a binary: its deployed name and its on-failure queue, if any."""
    params = {"Branch": branch, "FunctionNameSuffix": ""}
    queues = queue_names(template, branch)
    specs = []
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        binary = (resource.get("Metadata") or {}).get("BuildProperties", {}).get("Binary")
        props = resource.get("Properties") or {}
        if not binary or "FunctionName" not in props:
            continue
        destination = (((props.get("EventInvokeConfig") or {}).get("DestinationConfig") or {})
                       .get("OnFailure") or {})
        queue = None
        target = destination.get("Destination")
        if destination.get("Type") == "SQS" and isinstance(target, dict) and "Fn::GetAtt" in target:
            queue = queues.get(target["Fn::GetAtt"][0])
        specs.append(FunctionSpec(_sub(props["FunctionName"], params), binary, queue))
    return specs


# ------------------------------------------------------------------------- S3 imports, Step Functions (bills, salary files)
#
# moto cannot invoke a Lambda function from a bucket notification without Docker. So every
# function with an `S3` event in template.yaml gets an SQS queue, the bucket's notification
# configuration sends that event's objects (same events, same prefix/suffix filter) to it, and
# scripts/s3_events.py turns each message into an invoke of the function. A new import needs
# nothing here: its S3 event in the template is the registration. State machines are created
# from their ASL files with DefinitionSubstitutions resolved, and moto executes them.

LOCAL_ACCOUNT = "123456789012"  # moto's default account
BILL_FROM = "payment3-bills@payment3.local"
# Template parameters as the local stack sets them (others take their Default).
LOCAL_PARAMETERS = {"AlertEmailFrom": ALERT_FROM, "AlertEmailTo": ALERT_TO, "BillEmailFrom": BILL_FROM}


def _params(template: dict, branch: str) -> dict[str, str]:
    params = {name: str(p.get("Default", "")) for name, p in (template.get("Parameters") or {}).items()}
    params.update(LOCAL_PARAMETERS)
    params.update({"Branch": branch, "FunctionNameSuffix": "", "AWS::AccountId": LOCAL_ACCOUNT,
                   "AWS::Region": REGION, "AWS::Partition": "aws"})
    return params


def bucket_names(template: dict, branch: str) -> dict[str, str]:
    """Every AWS::S3::Bucket: logical id -> BucketName."""
    params = _params(template, branch)
    return {lid: _sub(r["Properties"]["BucketName"], params)
            for lid, r in template.get("Resources", {}).items() if r.get("Type") == "AWS::S3::Bucket"}


@dataclass
class S3Import:
    function: str  # logical id
    binary: str
    bucket: str
    events: list[str]
    rules: list[dict]  # S3 FilterRules: [{"Name": "prefix"|"suffix", "Value": ...}]
    timeout: int

    @property
    def queue(self) -> str:
        return f"payment3-s3-events-{self.binary}"


def s3_imports(template: dict, branch: str) -> list[S3Import]:
    """Every S3 event of every function."""
    buckets = bucket_names(template, branch)
    timeout = ((template.get("Globals") or {}).get("Function") or {}).get("Timeout", 30)
    found = []
    for lid, r in template.get("Resources", {}).items():
        if r.get("Type") != "AWS::Serverless::Function":
            continue
        props = r.get("Properties") or {}
        binary = (r.get("Metadata") or {}).get("BuildProperties", {}).get("Binary")
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "S3":
                continue
            p = event["Properties"]
            events = p["Events"] if isinstance(p["Events"], list) else [p["Events"]]
            rules = (((p.get("Filter") or {}).get("S3Key") or {}).get("Rules")) or []
            found.append(S3Import(lid, binary, buckets[p["Bucket"]["Ref"]], events, rules,
                                  int(props.get("Timeout", timeout))))
    return found


def _resolve(value: Any, template: dict, branch: str) -> str:
    """A DefinitionSubstitutions value: a literal, !Ref of a parameter, table or bucket, !Sub, !GetAtt X.Arn."""
    params = _params(template, branch)
    resources = template.get("Resources", {})
    if isinstance(value, dict) and "Ref" in value:
        ref = value["Ref"]
        if ref in params:
            return params[ref]
        r = resources[ref]
        if r["Type"] == "AWS::DynamoDB::Table":
            return _sub(r["Properties"]["TableName"], params)
        if r["Type"] == "AWS::S3::Bucket":
            return _sub(r["Properties"]["BucketName"], params)
        raise ValueError(f"cannot resolve !Ref {ref} locally")
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        ref, attr = value["Fn::GetAtt"]
        r = resources[ref]
        if r["Type"] == "AWS::DynamoDB::Table" and attr == "Arn":
            return f"arn:aws:dynamodb:{REGION}:{LOCAL_ACCOUNT}:table/{_sub(r['Properties']['TableName'], params)}"
        raise ValueError(f"cannot resolve !GetAtt {ref}.{attr} locally")
    return str(_sub(value, params))


def state_machine_specs(template: dict, branch: str) -> dict[str, tuple[str, str]]:
    """Every AWS::Serverless::StateMachine: logical id -> (name, definition with substitutions)."""
    params = _params(template, branch)
    specs = {}
    for lid, r in template.get("Resources", {}).items():
        if r.get("Type") != "AWS::Serverless::StateMachine":
            continue
        props = r["Properties"]
        definition = (ROOT / props["DefinitionUri"]).read_text()
        for key, value in (props.get("DefinitionSubstitutions") or {}).items():
            definition = definition.replace("${" + key + "}", _resolve(value, template, branch))
        specs[lid] = (_sub(props["Name"], params), definition)
    return specs


def state_machine_arn(template: dict, branch: str, logical_id: str) -> str:
    specs = state_machine_specs(template, branch)
    name = specs[logical_id][0] if logical_id in specs else f"{logical_id}-{branch}"
    return f"arn:aws:states:{REGION}:{LOCAL_ACCOUNT}:stateMachine:{name}"


# ------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f}s")


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when this process dies, even by SIGKILL, so
    a killed test run or `make dev` leaves no service behind. Elsewhere, stop() is the only way."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...), from `ps`."""
    try:
        table = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    children: dict[int, list[int]] = {}
    for line in table.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


# Requests that change nothing: replaying them only costs time (a Scan of a big table most of all).
READ_ONLY_TARGETS = {
    "DynamoDB_20120810." + op
    for op in ("Scan", "GetItem", "Query", "BatchGetItem", "DescribeTable", "ListTables", "DescribeTimeToLive")
} | {"secretsmanager.GetSecretValue", "AmazonSQS.GetQueueUrl", "AmazonSQS.GetQueueAttributes"}
# Not read-only, but nothing to replay: a receive only hides messages for their visibility
# timeout (the recorded deletes name receipt handles a replay would not reproduce anyway), and
# scripts/s3_events.py long-polls its queues all session long: each replayed empty poll would
# wait its WaitTimeSeconds again (1745 of them timed out a restart). Step Functions reads too.
REPLAY_SKIPPED_TARGETS = {
    "AmazonSQS.ReceiveMessage", "AWSStepFunctions.DescribeExecution", "AWSStepFunctions.ListExecutions",
    "AWSStepFunctions.GetExecutionHistory",
}


def keep_state_changes(recording: Path) -> None:
    """Drops the read-only requests from moto's recording before it is replayed, so a restart
    after a long test session replays only what changed state (writes, creates, sends)."""
    kept = []
    for line in recording.read_text().splitlines():
        try:
            request = json.loads(line)
        except ValueError:
            continue
        headers = {k.lower(): v for k, v in (request.get("headers") or {}).items()}
        if headers.get("x-amz-target") in READ_ONLY_TARGETS | REPLAY_SKIPPED_TARGETS:
            continue
        if request.get("method") == "GET" and "/moto-api/" in request.get("url", ""):
            continue
        kept.append(line)
    recording.write_text("".join(line + "\n" for line in kept))


@dataclass
class Ports:
    moto: int
    kbank: int
    watch: int  # cargo lambda watch's own Invoke API (internal)
    gateway: int  # routes and the Invoke API, as the functions and users see them
    recharge: int = 0  # the stand-in Recharge API (and the admin API of both Recharge stand-ins)
    dunning: int = 0  # the stand-in dunning service
    web: int = field(default_factory=free_port)  # the static pages of web/ (the bill-pay page)

    @classmethod
    def free(cls) -> "Ports":
        return cls(free_port(), free_port(), free_port(), free_port(), free_port(), free_port())


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class Stack:
    """The local stack. `start()` / `stop()`; the rest are what tests and the CLI use."""

    state_dir: Path
    ports: Ports = field(default_factory=Ports.free)
    branch: str = "local"
    delayed_notify_seconds: int = 1
    reload: bool = False  # let cargo lambda watch rebuild on source changes (make dev --reload)
    concurrency: int = 5  # instances per function; watch starts them all on the first invokes
    extra_env: dict[str, str] = field(default_factory=dict)  # on top of function_env (a test's policy)
    services: dict[str, Service] = field(default_factory=dict)

    # -- names

    @property
    def template(self) -> dict:
        return load_template()

    @property
    def tables(self) -> dict[str, str]:
        """Table names by their kebab name without prefix/branch: "wallet-callback-record", "order-table", ..."""
        names = {}
        for spec in table_specs(self.template, self.branch):
            name = spec.create["TableName"]
            short = name.removeprefix("payment3-").removesuffix(f"-{self.branch}")
            names[short] = name
        return names

    def table(self, short: str) -> str:
        return self.tables[short]

    @property
    def routes(self) -> list[Route]:
        return api_routes(self.template)

    @property
    def urls(self) -> dict[str, str]:
        return {
            "moto": f"http://127.0.0.1:{self.ports.moto}",
            "kbank": f"http://127.0.0.1:{self.ports.kbank}",
            "watch": f"http://127.0.0.1:{self.ports.watch}",
            "gateway": f"http://127.0.0.1:{self.ports.gateway}",
            "recharge": f"http://127.0.0.1:{self.ports.recharge}",
            "dunning": f"http://127.0.0.1:{self.ports.dunning}",
            "web": f"http://127.0.0.1:{self.ports.web}",
        }

    def function_env(self) -> dict[str, str]:
        """The environment every function runs with (written to an --env-file for watch)."""
        return {
            "BRANCH": self.branch,
            "AWS_ENDPOINT_URL": self.urls["moto"],
            "AWS_ENDPOINT_URL_LAMBDA": self.urls["gateway"],
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            **LOCAL_FUNCTION_NAMES,
            "ALERT_EMAIL_FROM": ALERT_FROM,
            "ALERT_EMAIL_TO": ALERT_TO,
            "ALERT_COOLDOWN_SECONDS": "300",
            "CHECKSUM_POLICY": "enforce",
            "CALLBACK_AUTH_POLICY": "enforce",
            "CALLBACK_SECRET_NAME": self.callback_secret_name,
            "KBANK_SECRET_NAME": KBANK_SECRET_NAME,
            "SECRET_REFRESH_SECONDS": "300",
            "DELAYED_NOTIFY_SECONDS": str(self.delayed_notify_seconds),
            "KBANK_API_BASE": self.urls["kbank"],
            "KBANK_TIMEOUT_SECONDS": "5",
            "PAID_NOTICE_EMAIL_FROM": NOTICE_FROM,
            "PAID_NOTICE_EMAIL_TO": NOTICE_TO,
            # Recharge dunning webhook: the stand-ins, short timeouts so failure tests stay quick.
            "RECHARGE_SECRET_NAME": f"recharge-{self.branch}",
            "RECHARGE_DUNNING_TABLE": self.tables["recharge-dunning"],
            "RECHARGE_API_BASE": self.urls["recharge"],
            "RECHARGE_TIMEOUT_SECONDS": "3",
            "DUNNING_API_BASE": self.urls["dunning"],
            "DUNNING_TIMEOUT_MS": "1000",
            "DUNNING_CLAIM_LEASE_SECONDS": "60",
            "RUST_LOG": "info",
            # Salary files: where a test asks a debug build for a crash part-way (one-shot; a
            # release build never reads it). See crates/salary/src/runtime/entry.rs.
            "SALARY_TEST_FAULT_FILE": str(self.state_dir / "salary-test-fault.json"),
            # Bill payments (SPEC 10): the payment workflow moto runs.
            "BILL_PAYMENT_STATE_MACHINE_ARN": state_machine_arn(self.template, self.branch, "BillPaymentStateMachine"),
            **self.extra_env,
        }

    @property
    def callback_secret_name(self) -> str:
        return f"payment3-callback-keys-{self.branch}"

    # -- AWS clients (boto3, against moto)

    def boto(self, service: str):
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        ).client(service, endpoint_url=self.urls["moto"])

    def dynamodb_resource(self):
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        ).resource("dynamodb", endpoint_url=self.urls["moto"])

    # -- lifecycle

    def _spawn(self, name: str, args: list[str], env: dict | None = None) -> Service:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        out = open(log, "ab")
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,  # its own process group: stop() kills the group, children included
            preexec_fn=_die_with_parent,
        )
        out.close()
        service = Service(name, proc, log)
        self.services[name] = service
        self._save()
        return service

    def _save(self) -> None:
        state = {
            "ports": asdict(self.ports),
            "branch": self.branch,
            "pids": {n: s.proc.pid for n, s in self.services.items()},
        }
        (self.state_dir / "stack.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, state_dir: Path) -> "Stack":
        """The stack a `make dev` in this state dir is running (for `demo` and `records`)."""
        state = json.loads((state_dir / "stack.json").read_text())
        return cls(state_dir=state_dir, ports=Ports(**state["ports"]), branch=state["branch"])

    def build(self) -> None:
        """Builds every function binary first, so watch's first `cargo run` of each is quick."""
        subprocess.run(["cargo", "build", "--workspace", "--bins"], cwd=ROOT, check=True)

    def start(self, build: bool = True) -> "Stack":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if build:
                self.build()
            self.start_aws(replay=False)
            self.create_tables()
            self.create_queues()
            self.create_buckets()
            self.seed_s3_fixtures()
            self.create_state_machines()
            self.seed()
            self._start_kbank()
            self._start_recharge()
            self._start_watch()
            self._start_gateway()
            self._start_s3_events()
            self._start_web()
        except BaseException:
            self.stop()
            raise
        return self

    def start_aws(self, replay: bool = True) -> None:
        """Starts moto on its port. With `replay`, moto first replays everything recorded before
        it was stopped (its recorder is its persistence: moto server itself is in-memory)."""
        recording = self.state_dir / "moto-recording.jsonl"
        service = self._spawn(
            "moto",
            [sys.executable, str(ROOT / "scripts" / "moto_serial.py"), "-H", "127.0.0.1", "-p", str(self.ports.moto)],
            env={"MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(recording)},
        )
        wait_for_port(self.ports.moto, service.proc, 60, "moto server", service.log)
        if replay and recording.exists():
            keep_state_changes(recording)
            req = urllib.request.Request(f"{self.urls['moto']}/moto-api/recorder/replay-recording", method="POST", data=b"")
            urllib.request.urlopen(req, timeout=120).read()

    def stop_aws(self) -> None:
        """Stops moto (the local AWS), as an outage would."""
        self._stop_service("moto")

    def create_tables(self, ttl: bool = True) -> None:
        """The template's tables with their indexes, and their TTL unless `ttl` is false (make
        bench: dynalite has no UpdateTimeToLive, and nothing expires during a bench)."""
        ddb = self.boto("dynamodb")
        for spec in table_specs(self.template, self.branch):
            ddb.create_table(**spec.create)
            if ttl and spec.ttl_attribute:
                ddb.update_time_to_live(
                    TableName=spec.create["TableName"],
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
                )

    def create_queues(self) -> None:
        """The template's SQS queues (the failed-events queue: async invokes that failed every retry)."""
        sqs = self.boto("sqs")
        for name in queue_names(self.template, self.branch).values():
            sqs.create_queue(QueueName=name)

    # -- S3 imports, state machines, web pages (see the section above Ports)

    def create_buckets(self) -> None:
        s3 = self.boto("s3")
        for name in bucket_names(self.template, self.branch).values():
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})

    def bucket(self, logical_id: str = "BillsBucket") -> str:
        return bucket_names(self.template, self.branch)[logical_id]

    def _route_s3_imports(self) -> list[tuple[str, str]]:
        """One queue per importing function; each bucket notifies them. Returns (queue URL, binary)."""
        sqs, s3 = self.boto("sqs"), self.boto("s3")
        routes, by_bucket = [], {}
        for imp in s3_imports(self.template, self.branch):
            url = sqs.create_queue(QueueName=imp.queue,
                                   Attributes={"VisibilityTimeout": str(imp.timeout)})["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            config = {"Id": imp.function, "QueueArn": arn, "Events": imp.events}
            if imp.rules:
                config["Filter"] = {"Key": {"FilterRules": imp.rules}}
            by_bucket.setdefault(imp.bucket, []).append(config)
            routes.append((url, imp.binary))
        for bucket, configs in by_bucket.items():
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configs})
        return routes

    def _start_s3_events(self) -> None:
        routes = self._route_s3_imports()
        if not routes:
            return
        args = [sys.executable, str(ROOT / "scripts" / "s3_events.py"), "--moto", self.urls["moto"],
                "--invoke", self.urls["gateway"], "--region", REGION]
        for url, binary in routes:
            args += ["--route", f"{url}={binary}"]
        self._spawn("s3events", args)

    def create_state_machines(self) -> None:
        """Every state machine of the template, from its ASL file; moto executes them (it calls
        the services back on MOTO_PORT, which scripts/moto_serial.py sets to its own port)."""
        specs = state_machine_specs(self.template, self.branch)
        if not specs:
            return
        req = urllib.request.Request(f"{self.urls['moto']}/moto-api/config", method="POST",
                                     data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
        sfn = self.boto("stepfunctions")
        for name, definition in specs.values():
            sfn.create_state_machine(name=name, definition=definition,
                                     roleArn=f"arn:aws:iam::{LOCAL_ACCOUNT}:role/{name}-role")

    def _start_web(self) -> None:
        """The static pages of web/ (no build step), on their own port, as S3 website hosting would serve them."""
        if not (ROOT / "web").is_dir():
            return
        service = self._spawn("web", [sys.executable, "-m", "http.server", str(self.ports.web),
                                      "--bind", "127.0.0.1", "--directory", str(ROOT / "web")])
        wait_for_port(self.ports.web, service.proc, 30, "web page server", service.log)

    def bill_pay_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.web}/bill-pay/?api={self.urls['gateway']}"

    def sent(self) -> dict:
        """What moto's SES and SNS sent: {"emails": [...], "sms": [...]} (scripts/moto_serial.py's
        /payment3/sent, read from moto's backends; /moto-api/data.json serialises every object moto
        holds and grew too slow once the tests had filled the tables)."""
        with urllib.request.urlopen(f"{self.urls['moto']}{SENT_PATH}", timeout=30) as resp:
            return json.loads(resp.read())

    def sent_sms(self) -> list[dict]:
        """Every SMS moto's SNS accepted: {phone_number, message, message_id}."""
        return self.sent()["sms"]

    def queue_url(self, logical_id: str = "FailedEventsQueue") -> str:
        name = queue_names(self.template, self.branch)[logical_id]
        return self.boto("sqs").get_queue_url(QueueName=name)["QueueUrl"]

    def cli_env(self) -> dict[str, str]:
        """The environment `payment3` (crates/cli) needs against this stack."""
        return {
            "AWS_ENDPOINT_URL": self.urls["moto"],
            "AWS_ENDPOINT_URL_LAMBDA": self.urls["gateway"],
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PAYMENT3_BRANCH": self.branch,
        }

    def seed_s3_fixtures(self) -> None:
        """The object each S3 event fixture in events/ names, from the file of that name beside it
        (salary/fixtures/salarydata-1.csv <- events/salary-import/salarydata-1.csv). Put before the
        bucket notifications are routed, so only the replayed fixture imports it."""
        import urllib.parse

        buckets = set(bucket_names(self.template, self.branch).values())
        for path in sorted(EVENTS.glob("*/*.json")):
            event = json.loads(path.read_text())
            records = event.get("Records") if isinstance(event, dict) else None
            for record in records if isinstance(records, list) else []:
                s3 = record.get("s3") if isinstance(record, dict) else None
                if not isinstance(s3, dict):
                    continue
                bucket, key = s3["bucket"]["name"], urllib.parse.unquote_plus(s3["object"]["key"])
                body = path.with_name(key.rsplit("/", 1)[-1])
                if bucket in buckets and body.is_file():
                    self.boto("s3").put_object(Bucket=bucket, Key=key, Body=body.read_bytes())

    def seed(self) -> None:
        ses = self.boto("ses")
        for address in (ALERT_FROM, NOTICE_FROM, BILL_FROM):
            ses.verify_email_identity(EmailAddress=address)
        self.boto("secretsmanager").create_secret(
            Name=KBANK_SECRET_NAME, SecretString=json.dumps({"secretKey": KBANK_SECRET_KEY})
        )
        self.boto("secretsmanager").create_secret(
            Name=f"recharge-{self.branch}",
            SecretString=json.dumps({"clientSecret": RECHARGE_CLIENT_SECRET, "apiToken": RECHARGE_API_TOKEN}),
        )
        self.boto("secretsmanager").create_secret(
            Name=self.callback_secret_name, SecretString=json.dumps(CALLBACK_KEYS)
        )
        self.put_order(DEMO_ORDER, "2339.0")
        self.put_order(DEMO_CARD_ORDER, "1250.50")
        self.put_card_payment(DEMO_CARD)

    def put_order(self, order_id: str, grand_total: str, **data: Any) -> None:
        """An order of the shop system: its document in `data` (a map), the total in data.grandTotal."""
        self.dynamodb_resource().Table(self.table("order-table")).put_item(
            Item={"orderId": order_id, "data": {"orderId": order_id, "grandTotal": Decimal(grand_total),
                                                "status": "pending_payment", **data}}
        )

    def put_card_payment(self, record: dict) -> None:
        self.dynamodb_resource().Table(self.table("card-payment-record")).put_item(Item=dict(record))

    def seed_given(self, given: dict | None) -> None:
        """Seeds what a manifest entry's `given` describes: orders, card payment records, KBank charges."""
        given = given or {}
        for order in given.get("orders", []):
            self.put_order(order["orderId"], order["grandTotal"])
        for card in given.get("card_payments", []):
            self.put_card_payment(card)
        for charge in given.get("charges", []):
            self.set_charge(charge["id"], **{k: v for k, v in charge.items() if k != "id"})

    def _start_kbank(self) -> None:
        charges = self.state_dir / "kbank-charges.json"
        charges.write_text(json.dumps({DEMO_CARD["chargeId"]: {
            "amount": "1250.50", "status": "success", "transaction_state": "Authorized"}}))
        service = self._spawn("kbank", [
            sys.executable, str(ROOT / "scripts" / "fake_kbank.py"), "--port", str(self.ports.kbank),
            "--secret-key", KBANK_SECRET_KEY, "--charges", str(charges)])
        wait_for_port(self.ports.kbank, service.proc, 30, "fake KBank", service.log)

    def _start_recharge(self) -> None:
        """The stand-in Recharge API and dunning service (scripts/fake_recharge.py)."""
        service = self._spawn("recharge", [
            sys.executable, str(ROOT / "scripts" / "fake_recharge.py"), "--recharge-port", str(self.ports.recharge),
            "--dunning-port", str(self.ports.dunning), "--api-token", RECHARGE_API_TOKEN,
            "--log", str(self.recharge_log), "--slow-seconds", "3"])
        wait_for_port(self.ports.recharge, service.proc, 30, "fake Recharge", service.log)
        wait_for_port(self.ports.dunning, service.proc, 30, "fake dunning service", service.log)

    def _start_watch(self) -> None:
        env_file = self.state_dir / "functions.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.function_env().items()))
        args = [str(BIN / "cargo-lambda"), "lambda", "watch",
                "--invoke-address", "127.0.0.1", "--invoke-port", str(self.ports.watch),
                "--env-file", str(env_file),
                "--concurrency", str(self.concurrency)]
        if not self.reload:
            args.append("--ignore-changes")
        service = self._spawn("watch", args)
        wait_for_port(self.ports.watch, service.proc, 300, "cargo lambda watch", service.log)

    def _start_gateway(self) -> None:
        args = [sys.executable, str(ROOT / "scripts" / "local_gateway.py"), "--port", str(self.ports.gateway),
                "--upstream", self.urls["watch"], "--log", str(self.invoke_log), "--retry-delay", "1"]
        for route in self.routes:
            args += ["--route", route.method, route.path, route.binary]
        # Deployed names resolve to the binaries (the operator tool invokes by deployed name), and a
        # finally-failed Event invoke goes to its on-failure queue, as Lambda's destination does.
        args += ["--aws-endpoint", self.urls["moto"], "--region", REGION]
        for spec in function_specs(self.template, self.branch):
            args += ["--alias", spec.name, spec.binary]
            if spec.on_failure_queue:
                args += ["--on-failure", spec.binary, spec.on_failure_queue]
        service = self._spawn("gateway", args)
        wait_for_port(self.ports.gateway, service.proc, 30, "local gateway", service.log)

    def start_variant(self, name: str, env: dict[str, str]) -> str:
        """A second set of the functions on the same local AWS and fake KBank, with `env` over the
        stack's function environment (e.g. CHECKSUM_POLICY=mark): its own cargo lambda watch and
        gateway, whose functions invoke each other through that gateway. Returns its URL; its
        invoke log is `invocations-<name>.jsonl`. Stopped with the stack."""
        watch_port, gateway_port = free_port(), free_port()
        gateway = f"http://127.0.0.1:{gateway_port}"
        env_file = self.state_dir / f"functions-{name}.env"
        variables = {**self.function_env(), "AWS_ENDPOINT_URL_LAMBDA": gateway, **env}
        env_file.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
        watch = self._spawn(f"watch-{name}", [
            str(BIN / "cargo-lambda"), "lambda", "watch", "--invoke-address", "127.0.0.1",
            "--invoke-port", str(watch_port), "--env-file", str(env_file),
            "--concurrency", "2", "--ignore-changes"])
        wait_for_port(watch_port, watch.proc, 300, f"cargo lambda watch ({name})", watch.log)
        args = [sys.executable, str(ROOT / "scripts" / "local_gateway.py"), "--port", str(gateway_port),
                "--upstream", f"http://127.0.0.1:{watch_port}",
                "--log", str(self.state_dir / f"invocations-{name}.jsonl"), "--retry-delay", "1"]
        for route in self.routes:
            args += ["--route", route.method, route.path, route.binary]
        front = self._spawn(f"gateway-{name}", args)
        wait_for_port(gateway_port, front.proc, 30, f"local gateway ({name})", front.log)
        return gateway

    def _stop_service(self, name: str, grace: float = 5.0) -> None:
        service = self.services.pop(name, None)
        if service is None:
            return
        pgid = service.proc.pid  # start_new_session: the group id is the leader's pid
        # watch starts each function instance (cargo run -> the binary) in a process group of its
        # own; it stops them on SIGTERM, and these pids are the fallback if it cannot.
        descendants = _descendants(service.proc.pid)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                service.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; children of the group (cargo run, function binaries) may not be.
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        for pid in descendants:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._save()

    def stop(self) -> None:
        for name in ("gateway", "watch", "kbank", "moto"):
            self._stop_service(name)
        for name in list(self.services):
            self._stop_service(name)

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- driving it

    @property
    def invoke_log(self) -> Path:
        return self.state_dir / "invocations.jsonl"

    def invoke(self, function: str, payload: Any, timeout: float = 120) -> tuple[int, dict, Any]:
        """Synchronous invoke through the Invoke API, as the AWS SDK would: (status, headers,
        decoded payload). Marked as coming from the harness, so it is not counted as a dispatch."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        req = urllib.request.Request(
            f"{self.urls['gateway']}/2015-03-31/functions/{function}/invocations", data=data, method="POST",
            headers={"Content-Type": "application/json", "X-Local-Caller": "harness"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, dict(resp.headers), json.loads(body) if body else None

    def post(self, route: str, body: bytes | str | dict, headers: dict | None = None,
             timeout: float = 120) -> tuple[int, dict, bytes]:
        """An HTTP request to a route, as a gateway sends it: (status, headers, raw body)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
        req = urllib.request.Request(f"{self.urls['gateway']}{route}", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def post_signed(self, route: str, body: bytes | str | dict, headers: dict | None = None,
                    **signing: Any) -> tuple[int, dict, bytes]:
        """`post`, signed now as the route's gateway signs (SPEC 4.5); `signing` as `sign_headers`."""
        if isinstance(body, dict):
            body = json.dumps(body)
        raw = body.encode() if isinstance(body, str) else body
        gateway = route.strip("/").split("/")[0]
        return self.post(route, raw, {**(headers or {}), **sign_headers(gateway, raw, **signing)})

    def invocations(self, since: int = 0) -> list[dict]:
        """Invokes received by the Invoke API (not the harness's own), from line `since`."""
        if not self.invoke_log.exists():
            return []
        lines = self.invoke_log.read_text().splitlines()[since:]
        return [e for e in map(json.loads, lines) if e.get("type") != "run" and e.get("caller") != "harness"]

    def invoke_log_position(self) -> int:
        return len(self.invoke_log.read_text().splitlines()) if self.invoke_log.exists() else 0

    def runs(self, since: int = 0) -> list[dict]:
        """Background runs of `Event` invokes (one per attempt), from line `since`."""
        if not self.invoke_log.exists():
            return []
        return [e for e in map(json.loads, self.invoke_log.read_text().splitlines()[since:]) if e.get("type") == "run"]

    def wait_idle(self, timeout: float = 60) -> None:
        """Waits until every `Event` invoke has finished its last run (retries included).
        An invoke is counted before it is answered 202, and one made by a background run is
        counted before that run ends, so zero means nothing is left, chains included."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with urllib.request.urlopen(f"{self.urls['gateway']}/_local/pending", timeout=5) as resp:
                if json.loads(resp.read())["pending"] == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError("asynchronous invokes still running")

    def kbank(self, method: str, path: str, body: Any = None) -> Any:
        """The fake KBank's admin API: kbank("PUT", "/_admin/charges/chrg_1", {...})."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.urls['kbank']}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    # -- Recharge (SPEC 9)

    @property
    def recharge_log(self) -> Path:
        """Every request the stand-in Recharge API and dunning service received (JSON lines)."""
        return self.state_dir / "recharge-requests.jsonl"

    def recharge_admin(self, method: str, path: str, body: Any = None) -> Any:
        """The stand-ins' admin API: recharge_admin("PUT", "/_admin/dunning/mode", {...})."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.urls['recharge']}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def recharge_requests(self, charge_id: str | None = None) -> list[dict]:
        """change_next_charge_date calls the stand-in Recharge received (for one charge)."""
        return [r for r in self.recharge_admin("GET", "/_admin/recharge/requests")
                if charge_id is None or r["chargeId"] == charge_id]

    def dunning_requests(self, charge_id: str | None = None) -> list[dict]:
        return [r for r in self.recharge_admin("GET", "/_admin/dunning/requests")
                if charge_id is None or r["chargeId"] == charge_id]

    def set_charge(self, charge_id: str, **fields: Any) -> dict:
        return self.kbank("PUT", f"/_admin/charges/{charge_id}", fields)

    def scan(self, short: str) -> list[dict]:
        table = self.dynamodb_resource().Table(self.table(short))
        items, kwargs = [], {}
        while True:
            page = table.scan(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, short: str, **key: str) -> dict | None:
        return self.dynamodb_resource().Table(self.table(short)).get_item(Key=key, ConsistentRead=True).get("Item")

    def sent_emails(self) -> list[dict]:
        """Every e-mail moto's SES accepted: {source, destinations, subject, body, id}, or
        {source, destinations, raw_data, id} for a raw one (see `sent`)."""
        return self.sent()["emails"]


# ------------------------------------------------------------------------- fixtures as requests


def fixture(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


def http_request_of(event: Any) -> tuple[bytes, dict]:
    """The body bytes and headers a gateway sent, from a fixture event (REST v1, HTTP API v2,
    function URL, or a direct invoke {"body": ...}); a plain object is sent as its JSON."""
    if not isinstance(event, dict) or "body" not in event:
        return json.dumps(event).encode(), {"Content-Type": "application/json"}
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else (
        body.encode() if isinstance(body, str) else json.dumps(body).encode())
    headers = {k: v for k, v in (event.get("headers") or {}).items()
               if k.lower() not in ("host", "content-length", "connection", "transfer-encoding")}
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    return raw, headers


def sign_headers(gateway: str, raw: bytes, *, key: str | None = None, webhook_id: str | None = None,
                 timestamp: int | None = None) -> dict[str, str]:
    """The Standard Webhooks headers a gateway sends with `raw` (SPEC 4.5): HMAC-SHA256 under
    `key` (default: the gateway's seeded key) of "<id>.<timestamp>.<body>", timestamp now.
    Signatures are refused after 300 s, so fixtures are signed when sent, never stored signed."""
    import hashlib
    import hmac
    import uuid

    key = key or CALLBACK_KEYS[gateway][0]
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    secret = base64.b64decode(key.removeprefix("whsec_"))
    mac = hmac.new(secret, f"{webhook_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def signed_fixture(function: str, event: Any) -> Any:
    """A fixture event as its gateway would send it now: the signature headers added to a
    callback fixture (REST v1, HTTP API v2, function URL, or a direct {"body": "<text>"}); other
    functions' fixtures, and bodies that are parsed objects, unchanged."""
    gateway = SIGNED_FUNCTIONS.get(function)
    if gateway is None or not isinstance(event, dict) or not isinstance(event.get("body"), str):
        return event
    raw = base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"].encode()
    # One webhook id per fixture body: the same fixture sent twice is the same message.
    import hashlib

    webhook_id = "msg_fixture_" + hashlib.sha256(raw).hexdigest()[:16]
    signed = dict(event)
    signed["headers"] = {**(event.get("headers") or {}), **sign_headers(gateway, raw, webhook_id=webhook_id)}
    if isinstance(event.get("multiValueHeaders"), dict):
        signed["multiValueHeaders"] = {**event["multiValueHeaders"],
                                       **{k: [v] for k, v in signed["headers"].items() if k.startswith("webhook-")}}
    return signed


def signed_curl(base_url: str, route: str, body: dict) -> str:
    """A curl of `route` with `body`, signed now (valid for 300 s)."""
    raw = json.dumps(body)
    gateway = route.strip("/").split("/")[0]
    headers = "".join(f" -H '{k}: {v}'" for k, v in sign_headers(gateway, raw.encode()).items())
    return f"curl -s -X POST {base_url}{route} -H 'Content-Type: application/json'{headers} -d '{raw}'"


# ------------------------------------------------------------------------- CLI


def print_banner(stack: Stack) -> None:
    u = stack.urls
    print(f"""
payment3 local stack (branch {stack.branch}, state in {stack.state_dir})
  local AWS (moto: DynamoDB, SES, Secrets Manager)  {u['moto']}   (dashboard: {u['moto']}/moto-api/)
  HTTP routes + Lambda Invoke API (local gateway)   {u['gateway']}
  cargo lambda watch (runs the functions; internal) {u['watch']}
  fake KBank charge API                             {u['kbank']}   (charges: {u['kbank']}/_admin/charges)
  stand-in Recharge API / dunning service           {u['recharge']} / {u['dunning']}
                                                    (calls: {u['recharge']}/_admin/recharge/requests, {stack.recharge_log})
  tables: {', '.join(sorted(stack.tables.values()))}
  seeded: order {DEMO_ORDER} (grandTotal 2339.0), order {DEMO_CARD_ORDER} with card payment
          {DEMO_CARD['token']} / charge {DEMO_CARD['chargeId']} (Authorized), secret {KBANK_SECRET_NAME},
          secret recharge-{stack.branch} (clientSecret, apiToken)

Try it:""")
    examples = {
        "/wallet/callback": {"orderId": DEMO_ORDER, "paymentId": "pay_wallet_demo", "success": True,
                             "amount": 2339.0, "userId": "demo-user", "message": "Payment successful"},
        "/bankapp/callback": {"orderId": DEMO_ORDER, "paymentId": "pay_bankapp_demo", "success": True,
                              "amount": 2339.0, "userId": "demo-user"},
        "/amex/callback": {"orderId": DEMO_ORDER, "paymentId": "pay_amex_demo", "success": True,
                           "amount": 2339.0, "userId": "demo-user"},
    }
    for route in stack.routes:
        if route.path == "/recharge/webhook":
            # Signed with the seeded client secret: one change_next_charge_date at the stand-in
            # Recharge (its log: make records, or GET /_admin/recharge/requests).
            raw = recharge_failed_charge(DEMO_RECHARGE_CHARGE)
            headers = recharge_headers(raw)
            print(f"  curl -s -X POST {u['gateway']}{route.path} -H 'Content-Type: application/json' "
                  f"-H 'X-Recharge-Topic: charge/failed' -H 'X-Recharge-Hmac-Sha256: {headers['X-Recharge-Hmac-Sha256']}' "
                  f"--data-binary '{raw.decode()}'")
            continue
        body = examples.get(route.path)
        if body is not None and route.binary in SIGNED_FUNCTIONS:
            print("  " + signed_curl(u["gateway"], route.path, body))
            continue
        if body is None and route.path == "/notify":
            body = notify_body(DEMO_CARD["chargeId"], "1250.50")
        body = body or {}
        print(f"  curl -s -X {route.method if route.method != 'ANY' else 'POST'} {u['gateway']}{route.path} "
              f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'")
    print(f"""
  The callback curls are signed (Standard Webhooks, keys in secret {stack.callback_secret_name}) and
  expire after 300 s; a fresh one: .venv/bin/python scripts/stack.py sign /wallet/callback '<json body>'
  (unsigned callbacks are refused with 401: CALLBACK_AUTH_POLICY=enforce)
  then: make demo   (replays events/ and prints the records)   or: make records
""", flush=True)
    print_operator_examples(stack)
    print_bills_banner(stack)
    print("Ctrl-C stops everything this started.\n", flush=True)


def print_operator_examples(stack: Stack) -> None:
    """One example of each `payment3` command (the operator tool, crates/cli) against this stack."""
    env = " ".join(f"{k}={v}" for k, v in stack.cli_env().items() if k != "AWS_EC2_METADATA_DISABLED")
    binary = "target/debug/payment3"
    print(f"""The operator tool against this stack (payment3 --help says more):
  export {env}
  {binary} trace {DEMO_ORDER}     # timeline and verdict of an order (after the wallet curl above)
  {binary} replay {DEMO_ORDER}    # the deliveries it would re-drive; --yes to do it
  {binary} redrive                # the failed-events queue; --yes to invoke again
  {binary} tables                 # each table of the branch and its item count
""", flush=True)


def recharge_failed_charge(charge_id: str, attempt: int = 1) -> bytes:
    """A Recharge `charge/failed` webhook body (2021-01 charge object), as raw bytes."""
    return json.dumps({"charge": {
        "id": int(charge_id) if charge_id.isdigit() else charge_id, "customer_id": 77000001,
        "email": "subscriber@example.com", "total_price": "49.90", "currency": "USD", "status": "error",
        "error_type": "CARD_DECLINED", "error": "Your card was declined.", "charge_attempts": attempt,
    }}, separators=(",", ":")).encode()


def recharge_headers(body: bytes, topic: str = "charge/failed", secret: str = RECHARGE_CLIENT_SECRET) -> dict:
    """Recharge's headers for a body: X-Recharge-Hmac-Sha256 = sha256(client secret + raw body)."""
    import hashlib

    digest = hashlib.sha256(secret.encode() + body).hexdigest()
    return {"Content-Type": "application/json", "X-Recharge-Topic": topic, "X-Recharge-Hmac-Sha256": digest}


def print_bills_banner(stack: Stack) -> None:
    """Bill payments (SPEC 10): how to load the sample bills file and where the page is."""
    if "BillsBucket" not in bucket_names(stack.template, stack.branch):
        return
    print(f"""Bill payments (SPEC 10):
  1. upload the sample bills file (the bucket notifies the import through SQS, see docs/local-stack.md):
       .venv/bin/python scripts/stack.py upload-bills events/bills-import/paymentbalance.csv
     (the same as: aws s3 cp events/bills-import/paymentbalance.csv s3://{stack.bucket()}/bills/paymentbalance.csv --endpoint-url {stack.urls['moto']})
     then the import report: s3://{stack.bucket()}/bills/paymentbalance.csv.report.json (make records shows the bills)
  2. open the bill-pay page: {stack.bill_pay_url()}
     look up InvoiceID 1, pay with card 4242 4242 4242 4242, expiry 12/30, e-mail and/or phone (+66812345678)
  3. e-mails and texts moto recorded: {stack.urls['moto']}{SENT_PATH} (emails, sms)
     or: .venv/bin/python scripts/stack.py sent
""", flush=True)


def notify_body(charge_id: str, amount: str) -> dict:
    """A KBank notify for a charge, with the checksum of SPEC 4.2 under the seeded secret."""
    import hashlib

    amount4 = f"{Decimal(amount):.4f}"
    fields = {"id": charge_id, "amount": amount, "currency": "THB", "status": "success",
              "transaction_state": "Authorized"}
    text = charge_id + amount4 + "THB" + "success" + "Authorized" + KBANK_SECRET_KEY
    return {**fields, "amount": float(amount), "checksum": hashlib.sha256(text.encode()).hexdigest()}


def stream_logs(stack: Stack, stop: threading.Event) -> None:
    positions: dict[Path, int] = {}
    while not stop.is_set():
        for service in list(stack.services.values()):
            log = service.log
            try:
                with open(log, "rb") as f:
                    f.seek(positions.get(log, 0))
                    chunk = f.read()
                    positions[log] = f.tell()
            except FileNotFoundError:
                continue
            for line in chunk.decode(errors="replace").splitlines():
                if service.name == "moto" and '" 200 -' in line:
                    continue  # moto's access log: one line per AWS call, the functions log what matters
                print(f"[{service.name:>10}] {line}", flush=True)
        stop.wait(0.3)


def print_records(stack: Stack) -> None:
    for short, name in sorted(stack.tables.items()):
        items = stack.scan(short)
        print(f"\n== {name}: {len(items)} item(s)")
        for item in items:
            print("  " + json.dumps(item, default=str, sort_keys=True))
    if stack.ports.recharge:
        calls = stack.recharge_requests()
        print(f"\n== stand-in Recharge: {len(calls)} change_next_charge_date call(s)")
        for call in calls:
            print("  " + json.dumps({k: call.get(k) for k in ("chargeId", "body", "tokenOk", "version", "status")}))


def demo(stack: Stack) -> None:
    """Replays every fixture in the manifest against the running stack and prints the records."""
    manifest = json.loads(MANIFEST.read_text())
    for name, expected in manifest.items():
        stack.seed_given(expected.get("given"))
        event = signed_fixture(expected["function"], fixture(name))
        if expected.get("route"):
            raw, headers = http_request_of(event)
            status, _, body = stack.post(expected["route"], raw, headers)
            how = f"POST {expected['route']}"
            text = body.decode(errors="replace")
        else:
            status, _, payload = stack.invoke(expected["function"], event)
            how = f"invoke {expected['function']}"
            text = json.dumps(payload)
            status = (payload or {}).get("statusCode", status) if isinstance(payload, dict) else status
        mark = "ok " if status == expected["status"] else "!! "
        print(f"{mark}{name:45} {how:28} -> {status} {' '.join(text.split())[:110]}")
    stack.wait_idle(timeout=120)
    print_records(stack)


def upload_bills(stack: Stack, rest: list[str]) -> None:
    """Puts a bills file into the bills bucket (as `aws s3 cp` would); the import runs on its event."""
    if not rest:
        sys.exit("usage: stack.py upload-bills FILE [KEY]")
    path = Path(rest[0])
    key = rest[1] if len(rest) > 1 else f"bills/{path.name}"
    stack.boto("s3").put_object(Bucket=stack.bucket(), Key=key, Body=path.read_bytes())
    print(f"uploaded {path} to s3://{stack.bucket()}/{key}; the report will be s3://{stack.bucket()}/{key}.report.json")
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            body = stack.boto("s3").get_object(Bucket=stack.bucket(), Key=f"{key}.report.json")["Body"].read()
        except Exception:  # not there yet
            time.sleep(0.5)
            continue
        report = json.loads(body)
        if report.get("etag") and report.get("status"):
            print(json.dumps({k: report[k] for k in ("status", "rows", "written", "kept", "rejected", "calls")}))
            for row in report.get("rejected_rows", [])[:10]:
                print(f"  line {row['line']}: {row['reason']}")
            return
    print("no report after 60 s: see the s3events and watch logs")


def print_sent(stack: Stack) -> None:
    """The e-mails and texts moto recorded."""
    for mail in stack.sent_emails():
        print(f"e-mail to {mail.get('destinations')}: {mail.get('subject')}")
    for sms in stack.sent_sms():
        print(f"SMS to {sms.get('phone_number')}: {sms.get('message')}")


def with_aws(command: list[str]) -> None:
    """Runs `command` with a local DynamoDB (the stack's serial moto, on a free port) in
    PAYMENT3_DYNAMODB_ENDPOINT, then stops it: for the Rust tests that need a real DynamoDB API."""
    import tempfile

    command = command[1:] if command[:1] == ["--"] else command
    with tempfile.TemporaryDirectory(prefix="payment3-aws-") as tmp:
        stack = Stack(state_dir=Path(tmp))
        try:
            stack.start_aws(replay=False)
            env = {**os.environ, "PAYMENT3_DYNAMODB_ENDPOINT": stack.urls["moto"]}
            code = subprocess.run(command, cwd=ROOT, env=env).returncode
        finally:
            stack.stop()
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["dev", "demo", "records", "with-aws", "sign", "upload-bills", "sent"])
    parser.add_argument("rest", nargs=argparse.REMAINDER,
                        help="with-aws: the command to run; sign: ROUTE 'JSON BODY' (prints a signed curl); "
                             "upload-bills: FILE [KEY]")
    parser.add_argument("--state", default=str(ROOT / ".stack"), help="state directory (logs, recordings)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 9000)),
                        help="HTTP routes and the Lambda Invoke API")
    parser.add_argument("--watch-port", type=int, default=int(os.environ.get("WATCH_PORT", 9001)))
    parser.add_argument("--moto-port", type=int, default=int(os.environ.get("MOTO_PORT", 5050)))
    parser.add_argument("--kbank-port", type=int, default=int(os.environ.get("KBANK_PORT", 9400)))
    parser.add_argument("--recharge-port", type=int, default=int(os.environ.get("RECHARGE_PORT", 9410)))
    parser.add_argument("--dunning-port", type=int, default=int(os.environ.get("DUNNING_PORT", 9411)))
    parser.add_argument("--delayed-notify-seconds", type=int, default=5)
    parser.add_argument("--reload", action="store_true", help="rebuild functions when sources change")
    args = parser.parse_args()
    state = Path(args.state)

    if args.command == "with-aws":
        return with_aws(args.rest)
    if args.command == "sign":
        route, body = args.rest[0], json.loads(args.rest[1])
        base = Stack.attach(state).urls["gateway"] if (state / "stack.json").exists() else f"http://127.0.0.1:{args.port}"
        return print(signed_curl(base, route, body))
    if args.command == "demo":
        return demo(Stack.attach(state))
    if args.command == "records":
        return print_records(Stack.attach(state))
    if args.command == "upload-bills":
        return upload_bills(Stack.attach(state), args.rest)
    if args.command == "sent":
        return print_sent(Stack.attach(state))

    if state.exists():
        shutil.rmtree(state)  # moto is in-memory: a new stack starts from nothing
    stack = Stack(state_dir=state, ports=Ports(args.moto_port, args.kbank_port, args.watch_port, args.port,
                                                    args.recharge_port, args.dunning_port,
                                                    int(os.environ.get("WEB_PORT", 9080))),
                  delayed_notify_seconds=args.delayed_notify_seconds, reload=args.reload)
    stop = threading.Event()
    # Ctrl-C (also when started from a script, where SIGINT may arrive ignored), kill, hang-up.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    streamer = threading.Thread(target=stream_logs, args=(stack, stop), daemon=True)
    try:
        streamer.start()
        stack.start()
        if not stop.is_set():
            print_banner(stack)
        while not stop.is_set():
            for service in list(stack.services.values()):
                if service.proc.poll() is not None:
                    print(f"{service.name} exited with {service.proc.returncode}; stopping", flush=True)
                    stop.set()
            stop.wait(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        print("\nstopping the local stack ...", flush=True)
        stack.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()
