"""template.yaml against the code: what the Rust sources need, the template must provide.

Everything expected is read from the sources, not from a copy of the template:
- functions: every crate in functions/ (its [[bin]] targets, Cargo.toml) is built by a function
  resource; every function the code invokes (the `*_FUNCTION` names in config) is deployed;
  every REST fixture in events/<crate>/ is routed to that crate's function.
- environment: every variable read (`var("X")`, `seconds("X", ..)`, ...) by the `from_env`
  constructors a function's main reaches is set on that function.
- tables: every default table name in config (`named("X_TABLE", "kebab")`) is a table of the
  template with that TableName; the key attributes and index names the code addresses are keys
  and indexes of the template's tables, and the template's keys are names the code uses.
- IAM: every statement names only resources of this template (or the parameter-named order table
  and secret, under the same name the function is given); the grants match ACCESS below, the
  one hand-written contract here; every AWS operation the code calls is granted somewhere; and
  the DynamoDB operations each function's code performs on each table (traced from its main
  through the types it reaches, to the adapter method and its SDK calls) are granted to it.
Run: pytest tests/test_template.py (part of `make test`); it also runs cfn-lint.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
CORE = ROOT / "crates" / "callback-core" / "src"
FUNCTIONS = ROOT / "functions"
EVENTS = ROOT / "events"

# ---------------------------------------------------------------------------------------------
# The access contract (SPEC 4-6): per function, per resource, the actions it may use. Keys are
# resource kinds: table:<kebab> (payment3-<kebab>-<branch>, or table:order), index:<kebab>/<name>,
# function:<kebab>, secret:<kind> (secret:kbank from KBANK_SECRET_NAME, secret:recharge from
# RECHARGE_SECRET_NAME, secret:callback from CALLBACK_SECRET_NAME), ses. Both a missing and an extra grant fail the test.

_ERRORS = {
    "table:callback-error-log": {"dynamodb:PutItem"},
    "table:alert-cooldown": {"dynamodb:UpdateItem"},
    "ses": {"ses:SendEmail"},
}
_CALLBACK = {
    **_ERRORS,
    "table:callback-inbox": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
    # SPEC 4.5: the gateways' signing keys.
    "secret:callback": {"secretsmanager:GetSecretValue"},
}
_CARD = {
    **_ERRORS,
    "table:credit-card-notify": {"dynamodb:PutItem"},
    "table:card-payment-record": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    "index:card-payment-record/chargeId-index": {"dynamodb:Query"},
    "secret:kbank": {"secretsmanager:GetSecretValue"},
}
_PROCESS_PAID = {
    **_ERRORS,
    "table:order": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
    "table:paid-order": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
}
ACCESS: dict[str, dict[str, set[str]]] = {
    "wallet-callback": {
        **_CALLBACK,
        "table:wallet-callback-record": {"dynamodb:UpdateItem"},
        "function:process-paid-wallet-order-internal": {"lambda:InvokeFunction"},
    },
    "bankapp-callback": {
        **_CALLBACK,
        "table:wallet-callback-record": {"dynamodb:UpdateItem"},
        "function:process-paid-wallet-order-internal": {"lambda:InvokeFunction"},
    },
    "amex-callback": {
        **_CALLBACK,
        "table:amex-callback-record": {"dynamodb:UpdateItem"},
        "function:process-paid-amex-order-internal": {"lambda:InvokeFunction"},
    },
    "notify": {
        **_CARD,
        "table:callback-inbox": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
        "function:process-paid-order-internal": {"lambda:InvokeFunction"},
        "function:delayed-notify": {"lambda:InvokeFunction"},
    },
    "delayed-notify": {
        **_CARD,
        "function:process-paid-order-internal": {"lambda:InvokeFunction"},
    },
    # Only the card/QR kind asks KBank, so only it reads the secret.
    "process-paid-order-internal": {
        **_PROCESS_PAID,
        "secret:kbank": {"secretsmanager:GetSecretValue"},
    },
    "process-paid-wallet-order-internal": _PROCESS_PAID,
    "process-paid-amex-order-internal": _PROCESS_PAID,
    # Recharge dunning webhook (SPEC 9): the webhook keeps, verifies and hands off; only the
    # dunning function touches its ledger and needs the API token (same secret).
    "recharge-webhook": {
        **_ERRORS,
        "table:callback-inbox": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
        "secret:recharge": {"secretsmanager:GetSecretValue"},
        "function:recharge-dunning": {"lambda:InvokeFunction"},
    },
    "recharge-dunning": {
        **_ERRORS,
        "table:recharge-dunning": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
        "secret:recharge": {"secretsmanager:GetSecretValue"},
    },
    # Bill payments (SPEC 10). Their own table by !GetAtt (resource:<LogicalId>), the bucket's
    # objects by name (objects:<bucket>/<prefix>: a !GetAtt would make the bucket's notification
    # and the function depend on each other), the state machine by !Ref.
    "bills-import": {
        **_ERRORS,
        "resource:PaymentBalanceTable": {"dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:UpdateItem"},
        "objects:BillsBucket/bills/*": {"s3:GetObject", "s3:PutObject"},
        "bucket:BillsBucket": {"s3:ListBucket"},
    },
    "bills-balance": {**_ERRORS, "resource:PaymentBalanceTable": {"dynamodb:GetItem"}},
    "bills-pay": {
        **_ERRORS,
        "resource:PaymentBalanceTable": {"dynamodb:GetItem"},
        "resource:BillPaymentStateMachine": {"states:StartExecution"},
    },
    # Salary files (SPEC 11): their own tables by !GetAtt, the bucket's objects by name.
    "salary-import": {
        **_ERRORS,
        "resource:EmployeeSalaryTable": {"dynamodb:UpdateItem"},
        "resource:SalaryImportLedgerTable": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
        "objects:BillsBucket/salary/*": {"s3:GetObject"},
        "objects:BillsBucket/salary/*.report.json": {"s3:PutObject"},
        "objects:BillsBucket/processed/*": {"s3:PutObject"},
        "bucket:BillsBucket": {"s3:ListBucket"},
    },
}

# SDK operations (method names on the aws-sdk clients) and the IAM action each needs.
SDK_ACTIONS = {
    "get_item": "dynamodb:GetItem",
    "put_item": "dynamodb:PutItem",
    "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem",
    "query": "dynamodb:Query",
    "scan": "dynamodb:Scan",
    "batch_get_item": "dynamodb:BatchGetItem",
    "batch_write_item": "dynamodb:BatchWriteItem",
    "transact_write_items": "dynamodb:UpdateItem",
    "send_email": "ses:SendEmail",
    "send_raw_email": "ses:SendRawEmail",
    "get_secret_value": "secretsmanager:GetSecretValue",
    "invoke": "lambda:InvokeFunction",
}

# Set by the Lambda service itself, never by the template.
RUNTIME_VARIABLES = re.compile(r"^(AWS_|_|LAMBDA_TASK_ROOT$|RUST_LOG$)")


# ---------------------------------------------------------------------------------------------
# template.yaml, with the CloudFormation short forms read as their long forms.


class _CfnLoader(yaml.SafeLoader):
    pass


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@cache
def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def resources(kind: str) -> dict[str, dict]:
    return {k: v for k, v in template()["Resources"].items() if v["Type"] == kind}


def alternatives(expr, subst: dict | None = None) -> set[str]:
    """Every string an expression can evaluate to, with references kept as ${Name}."""
    subst = subst or {}
    if isinstance(expr, (str, int, float, bool)):
        text = str(expr).lower() if isinstance(expr, bool) else str(expr)
        return _substitute({text}, subst)
    if isinstance(expr, dict) and len(expr) == 1:
        (fn, arg), = expr.items()
        if fn == "Ref":
            return {"${%s}" % arg}
        if fn == "Fn::GetAtt":
            return {"${%s}" % ".".join(arg)}
        if fn == "Fn::If":
            return alternatives(arg[1], subst) | alternatives(arg[2], subst)
        if fn == "Fn::Sub":
            if isinstance(arg, str):
                return {arg}
            text, variables = arg
            return _substitute({text}, {k: alternatives(v) for k, v in variables.items()})
    raise AssertionError(f"expression the template test cannot read: {expr!r}")


def _substitute(texts: set[str], subst: dict[str, set[str]]) -> set[str]:
    for name, values in subst.items():
        texts = {t.replace("${%s}" % name, v) for t in texts for v in values}
    return texts


def one(expr) -> str:
    values = alternatives(expr)
    assert len(values) == 1, f"expected one value, got {sorted(values)}"
    return values.pop()


SUFFIX = "${FunctionNameSuffix}"
NAME = re.compile(r"^payment3-(?P<kebab>[a-z0-9-]+)-\$\{Branch\}$")


def function_resources() -> dict[str, dict]:
    return resources("AWS::Serverless::Function")


def function_name(logical_id: str) -> str:
    """The function's name with the migration suffix taken off: payment3-<kebab>-${Branch}."""
    name = one(function_resources()[logical_id]["Properties"]["FunctionName"])
    return name.removesuffix(SUFFIX)


def function_kebab(logical_id: str) -> str:
    match = NAME.match(function_name(logical_id))
    assert match, f"{logical_id}: FunctionName is not payment3-<name>-${{Branch}}"
    return match["kebab"]


def function_by_kebab() -> dict[str, str]:
    return {function_kebab(fid): fid for fid in function_resources()}


def globals_function() -> dict:
    return template().get("Globals", {}).get("Function", {})


def setting(logical_id: str, key: str):
    props = function_resources()[logical_id]["Properties"]
    return props.get(key, globals_function().get(key))


def environment(logical_id: str) -> dict:
    merged = dict(globals_function().get("Environment", {}).get("Variables", {}))
    props = function_resources()[logical_id]["Properties"]
    merged.update(props.get("Environment", {}).get("Variables", {}))
    return merged


def binary(logical_id: str) -> str | None:
    return function_resources()[logical_id].get("Metadata", {}).get("BuildProperties", {}).get("Binary")


def tables() -> dict[str, dict]:
    return resources("AWS::DynamoDB::Table")


def table_names() -> dict[str, str]:
    """TableName -> logical id."""
    return {one(t["Properties"]["TableName"]): tid for tid, t in tables().items()}


# ---------------------------------------------------------------------------------------------
# The Rust sources: comments and #[cfg(test)] modules removed, functions and their calls found.


def _strip(text: str) -> str:
    """Comments out, string literals kept (they are what we look for), raw strings made plain."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        raw = re.match(r"r(#*)\"", text[i : i + 10]) if c == "r" and not re.match(r"\w", text[i - 1 : i]) else None
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            i = text.find("*/", i) + 2
        elif raw:
            start = i + raw.end()
            end = text.index('"' + raw[1], start)
            out.append('"' + text[start:end].replace("\\", "\\\\").replace('"', '\\"') + '"')
            i = end + 1 + len(raw[1])
        elif c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i : i + 4]):
            out.append("' '")  # a char literal such as '{' must not count as a brace
            i += 4 if text[i + 1] == "\\" else 3
        elif c == "'" and re.match(r"'\\u\{[0-9a-fA-F]+\}'", text[i : i + 12]):
            out.append("' '")
            i = text.index("}'", i) + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _block_end(text: str, open_brace: int) -> int:
    """The index of the brace closing the one at `open_brace` (in stripped text)."""
    depth, i = 0, open_brace
    while True:
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1


def _without_tests(text: str) -> str:
    while (m := re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)) :
        text = text[: m.start()] + text[_block_end(text, m.end() - 1) + 1 :]
    # Debug-build-only items and statements (test hooks such as salary-import's injected crash)
    # are not in a deployed (release) binary: what they read need not be set on a function.
    while (m := re.search(r"#\[cfg\(debug_assertions\)\]\s*[^{;]*\{", text)) :
        text = text[: m.start()] + text[_block_end(text, m.end() - 1) + 1 :]
    return text


@cache
def source(path: Path) -> str:
    return _without_tests(_strip(path.read_text()))


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.rs"))


CRATES = ROOT / "crates"


@cache
def library_files() -> list[Path]:
    """The library crates under crates/ that Lambda functions are built from (callback-core and
    the systems on it; not the operator's command line, which no function runs)."""
    return sorted({p for crate in crate_bins() for p in libraries_of(crate)})


@cache
def libraries_of(crate: str) -> list[Path]:
    """callback-core and the other crates/<name> a function crate depends on, directly or through
    another of them (bills-import -> bills -> s3-import), by their files."""
    files = core_files()
    for name in sorted(_library_crates(FUNCTIONS / crate / "Cargo.toml", set())):
        files = files + sorted((CRATES / name / "src").rglob("*.rs"))
    return files


def _library_crates(manifest: Path, seen: set[str]) -> set[str]:
    """The workspace library crates under crates/ a manifest depends on, transitively (not callback-core)."""
    deps = tomllib.loads(manifest.read_text()).get("dependencies", {})
    for dep in deps:
        lib = CRATES / dep / "Cargo.toml"
        if dep != "callback-core" and dep not in seen and lib.exists():
            seen.add(dep)
            _library_crates(lib, seen)
    return seen


def crate_files(crate: str) -> list[Path]:
    return sorted((FUNCTIONS / crate / "src").rglob("*.rs"))


def all_rust_files() -> list[Path]:
    return library_files() + sorted(FUNCTIONS.glob("*/src/**/*.rs"))


FN = re.compile(r"\bfn\s+(\w+)[^{;]*\{")
IMPL = re.compile(r"\bimpl\b(?:\s*<[^{]*?>)?\s+(?:[\w:]+(?:<[^{]*?>)?\s+for\s+)?(\w+)(?:<[^{]*?>)?\s*(?:where[^{]*)?\{")
CALL = re.compile(r"(?<![.\w])(?:(\w+)(?:::<[^()]*?>)?::)?(\w+)\s*(?:::<[^()]*?>)?\s*\(")
ENV_READ = re.compile(r"(?<![.\w])(?:\w+::)*(\w+)\s*\(\s*\"([A-Z][A-Z0-9_]{2,})\"")
ENV_PRIMITIVES = {"var", "seconds", "days", "var_os"}


def functions_in(paths: list[Path]) -> dict[tuple[str | None, str], list[str]]:
    """(impl type or None, fn name) -> bodies."""
    found: dict[tuple[str | None, str], list[str]] = {}
    for path in paths:
        text = source(path)
        impls = [(m.group(1), m.end() - 1, _block_end(text, m.end() - 1)) for m in IMPL.finditer(text)]
        for m in FN.finditer(text):
            open_brace = m.end() - 1
            owner = next((t for t, a, b in impls if a < m.start() < b), None)
            body = text[open_brace : _block_end(text, open_brace) + 1]
            found.setdefault((owner, m.group(1)), []).append(body)
    return found


def reachable_env(roots: list[tuple[str | None, str]], fns: dict) -> set[str]:
    """Environment variables read by the functions reachable from `roots`."""
    types = {owner for owner, _ in fns if owner}
    seen, todo, env = set(), list(roots), set()
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        for body in fns.get(key, []):
            env |= {name for _, name in ENV_READ.findall(body)}
            for qualifier, name in CALL.findall(body):
                if qualifier == "Self":
                    todo.append((key[0], name))
                elif qualifier in types:
                    todo.append((qualifier, name))
                else:
                    todo.append((None, name))
    return {e for e in env if not RUNTIME_VARIABLES.match(e)}


@cache
def crate_bins() -> dict[str, set[str]]:
    bins = {}
    for manifest in sorted(FUNCTIONS.glob("*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        src = manifest.parent / "src"
        # Cargo's targets: [[bin]] entries, src/main.rs (the package name), src/bin/*.rs and src/bin/*/main.rs.
        names = {b["name"] for b in data.get("bin", [])}
        if (src / "main.rs").exists() and not any(b.get("path", "src/main.rs") == "src/main.rs" for b in data.get("bin", [])):
            names.add(data["package"]["name"])
        names |= {p.stem for p in src.glob("bin/*.rs")} | {p.parent.name for p in src.glob("bin/*/main.rs")}
        bins[manifest.parent.name] = names
    return bins


def crate_of_binary(name: str) -> str | None:
    return next((crate for crate, bins in crate_bins().items() if name in bins), None)


@cache
def env_read_by_crate() -> dict[str, set[str]]:
    result = {}
    for crate in crate_bins():
        core = functions_in(libraries_of(crate))
        own = functions_in(crate_files(crate))
        fns = {**core, **{k: core.get(k, []) + v for k, v in own.items()}}
        result[crate] = reachable_env([(None, "main")], fns)
    return result


@cache
def env_read_anywhere() -> set[str]:
    found = set()
    for path in all_rust_files():
        found |= {name for fn, name in ENV_READ.findall(source(path)) if fn in ENV_PRIMITIVES}
    return {e for e in found if not RUNTIME_VARIABLES.match(e)}


@cache
def default_names() -> dict[str, str]:
    """X_TABLE / X_FUNCTION -> its default name as a template pattern (payment3-x-${Branch})."""
    defaults = {}
    for path in library_files():
        text = source(path)
        # let named = |env: &'static str, name: &str| { var(env).unwrap_or_else(|| format!("payment3-{name}-{branch}")) };
        for closure in re.finditer(
            r"let\s+(\w+)\s*=\s*\|\s*(\w+)[^,|]*,\s*(\w+)[^|]*\|[^;]*?format!\(\s*\"([^\"]*)\"", text
        ):
            helper, _, name_param, pattern = closure.groups()
            for env, kebab in re.findall(rf"(?<![.\w]){helper}\(\s*\"(\w+)\"\s*,\s*\"([^\"]+)\"\s*,?\s*\)", text):
                defaults[env] = pattern.replace("{%s}" % name_param, kebab)
        # var("ORDER_TABLE").unwrap_or_else(|| format!("order-table-{branch}"))
        for env, pattern in re.findall(
            r"var\(\s*\"(\w+)\"\s*\)\s*\.unwrap_or_else\(\s*\|\|\s*format!\(\s*\"([^\"]*)\"", text
        ):
            defaults[env] = pattern
    return {env: p.replace("{branch}", "${Branch}") for env, p in defaults.items()}


def rust_consts() -> dict[str, str]:
    consts = {}
    for path in all_rust_files():
        consts.update(re.findall(r"const\s+(\w+)\s*:\s*&(?:'static\s+)?str\s*=\s*\"([^\"]*)\"", source(path)))
    return consts


def rust_strings() -> set[str]:
    strings = set()
    for path in all_rust_files():
        strings |= set(re.findall(r"\"((?:[^\"\\]|\\.)*)\"", source(path)))
    return strings


def _name_or_const(token: str, consts: dict[str, str]) -> str:
    token = token.strip()
    if token.startswith('"'):
        return token.strip('"')
    assert token in consts, f"key {token} is neither a string literal nor a &str const"
    return consts[token]


def code_keys() -> set[str]:
    """Attribute names the code addresses items by (GetItem/UpdateItem keys, key conditions)."""
    consts, keys = rust_consts(), set()
    for path in all_rust_files():
        text = source(path)
        keys |= {_name_or_const(t, consts) for t in re.findall(r"\.key\(\s*(\"[^\"]+\"|[A-Z_]+)\s*,", text)}
        for group in re.findall(r"key_of\([^,]+,\s*&\[([^\]]*)\]", text):
            keys |= {_name_or_const(t, consts) for t in group.split(",") if t.strip()}
        for expression in re.findall(r"\.key_condition_expression\(\s*\"([^\"]+)\"", text):
            keys |= set(re.findall(r"(?<![#:\w])(\w+)\s*=", expression))
    return keys


def code_indexes() -> set[str]:
    consts, found = rust_consts(), set()
    for path in all_rust_files():
        found |= {_name_or_const(t, consts) for t in re.findall(r"\.index_name\(\s*(\"[^\"]+\"|[A-Z_]+)\s*\)", source(path))}
    return found


def sdk_operations() -> set[str]:
    found = set()
    # crates/s3-import is a toolkit (BatchWriteItem for one import, conditional transactions for
    # another): what a function uses of it is granted on that function, not every call it offers.
    toolkit = ROOT / "crates" / "s3-import"
    for path in [p for p in all_rust_files() if toolkit not in p.parents]:
        found |= set(re.findall(r"\.(%s)\(\)" % "|".join(SDK_ACTIONS), source(path)))
    return found


# `(&self.settings.tables.x` (callback-core) or `(&self.<system settings>.tables.x` (a system crate).
TABLE_ARG = r"\(\s*&?\s*self\s*\.\s*\w+\s*\.\s*tables\s*\.\s*(\w+)"


def _adapter_operations() -> dict[str, set[str]]:
    """Store method name -> the IAM actions its AWS adapter performs (via its own helpers too)."""
    direct: dict[str, set[str]] = {}
    helpers: dict[str, set[str]] = {}
    for path in [p for p in library_files() if p.parent.name == "aws" and p.parent.parent.name == "ports"]:
        for (_, name), bodies in functions_in([path]).items():
            for body in bodies:
                ops = set()
                for op in re.findall(r"\.(%s)\(\)" % "|".join(SDK_ACTIONS), body):
                    action = SDK_ACTIONS[op]
                    ops.add(action + "@index" if op == "query" and ".index_name(" in body else action)
                direct.setdefault(name, set()).update(a for a in ops if a.startswith("dynamodb:"))
                helpers.setdefault(name, set()).update(re.findall(r"\bself\s*\.\s*(\w+)\s*\(", body))
    resolved = {}
    for name in direct:
        seen, todo, ops = set(), [name], set()
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            ops |= direct.get(n, set())
            todo += helpers.get(n, set())
        resolved[name] = ops
    return resolved


def _table_fields() -> dict[str, str]:
    """Tables field (settings.tables.<field>) -> table kebab (or "order")."""
    fields = {}
    configs = [p for p in library_files() if p.name == "config.rs" and p.parent.name == "runtime"]
    pairs = [pair for path in configs
             for pair in re.findall(r"(\w+)\s*:\s*(?:named|var)\(\s*\"(\w+_TABLE)\"", source(path))]
    for field, env in pairs:
        m = NAME.match(default_names()[env])
        fields[field] = m["kebab"] if m else "order"
    return fields


def _accesses_in(body: str, table_fns: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(store method, tables field) pairs a function body performs."""
    found = set(re.findall(r"\.\s*(\w+)\s*" + TABLE_ARG, body))
    for var, field in re.findall(r"let\s+(\w+)\s*=\s*&?\s*self\s*\.\s*\w+\s*\.\s*tables\s*\.\s*(\w+)\s*;", body):
        found |= {(m, field) for m in re.findall(r"\.\s*(\w+)\s*\(\s*&?\s*%s\b" % var, body)}
    # `.save_callback(R::table(&self.settings), ..)`: whichever `table` fns are reachable.
    for method, fn in re.findall(r"\.\s*(\w+)\s*\(\s*&?\s*\w+::(\w+)\s*\(", body):
        found |= {(method, field) for field in table_fns.get(fn, set())}
    return found


@cache
def table_operations_by_crate() -> dict[str, dict[str, set[str]]]:
    """Per crate: table kebab -> DynamoDB actions its code performs (Query on an index: "Query@index").

    Reachability: from `main`, through free functions, `Type::fn` calls, and `.method(` calls to
    methods of the types named in what is reached. Without type inference a method name is
    matched on every reached type, so this may find more than a function does, never less.
    """
    operations, fields = _adapter_operations(), _table_fields()
    result = {}
    for crate in crate_bins():
        core = functions_in([p for p in libraries_of(crate) if p.parent.name != "aws"])
        fns = {**core}
        for key, bodies in functions_in(crate_files(crate)).items():
            fns[key] = fns.get(key, []) + bodies
        types = {owner for owner, _ in fns if owner}
        reached_types, method_calls, reached, todo = set(), set(), set(), [(None, "main")]
        while todo:
            key = todo.pop()
            if key in reached or key not in fns:
                continue
            reached.add(key)
            for body in fns[key]:
                calls = set(re.findall(r"\.\s*(\w+)\s*(?:::<[^()]*?>)?\s*\(", body))
                for qualifier, name in CALL.findall(body):
                    if qualifier == "Self":
                        todo.append((key[0], name))
                    elif qualifier in types or not qualifier[:1].isupper():
                        todo.append((qualifier if qualifier in types else None, name))
                    else:
                        calls.add(name)  # `R::table(..)` on a type parameter: like a method call
                new_types = set(re.findall(r"\b([A-Z]\w+)\b", body)) & types - reached_types
                reached_types |= new_types
                todo += [(t, n) for t in reached_types for n in calls - method_calls]
                todo += [(t, n) for t in new_types for n in method_calls | calls]
                method_calls |= calls
        table_fns: dict[str, set[str]] = {}
        for key in reached:
            for body in fns[key]:
                for field in re.findall(r"^\s*\{?\s*&\s*settings\s*\.\s*tables\s*\.\s*(\w+)\s*\}?\s*$", body, re.S):
                    table_fns.setdefault(key[1], set()).add(field)
        per_table: dict[str, set[str]] = {}
        for key in reached:
            for body in fns[key]:
                accesses = set(_accesses_in(body, table_fns))
                # A table handed to a wrapper (`Inbox::new(store, &self.settings.tables.x, ..)`):
                # whatever the wrapper's methods do to `self.table`.
                for owner, field in re.findall(r"\b([A-Z]\w+)::new\(([^;]*)\)", body):
                    for f in re.findall(r"&\s*self\s*\.\s*settings\s*\.\s*tables\s*\.\s*(\w+)", field):
                        for (o, _), wbodies in fns.items():
                            if o == owner:
                                for wb in wbodies:
                                    accesses |= {(m, f) for m in re.findall(r"\.\s*(\w+)\s*\(\s*&?\s*self\s*\.\s*table\b", wb)}
                for method, field in accesses:
                    if method in operations and field in fields:
                        per_table.setdefault(fields[field], set()).update(operations[method])
        result[crate] = per_table
    return result


# ---------------------------------------------------------------------------------------------
# Functions


def test_every_crate_is_built_into_a_function():
    built = {crate_of_binary(binary(fid)) for fid in function_resources()}
    missing = sorted(set(crate_bins()) - built)
    assert not missing, f"crates in functions/ with no function resource: {missing}"


def test_every_function_is_a_cargo_lambda_arm64_build_of_a_workspace_binary():
    for fid, resource in function_resources().items():
        assert resource.get("Metadata", {}).get("BuildMethod") == "rust-cargolambda", fid
        assert crate_of_binary(binary(fid)), f"{fid}: Binary {binary(fid)!r} is no [[bin]] in functions/"
        # The workspace root, so the whole workspace (callback-core included) builds.
        assert setting(fid, "CodeUri") in (".", "./"), fid
        assert setting(fid, "Runtime") == "provided.al2023", fid
        assert setting(fid, "Architectures") == ["arm64"], fid
        assert setting(fid, "Handler") == "bootstrap", fid
        assert 128 <= setting(fid, "MemorySize") <= 256, fid


def test_every_function_the_code_invokes_is_deployed():
    deployed = {function_name(fid) for fid in function_resources()}
    invoked = {env: name for env, name in default_names().items() if env.endswith("_FUNCTION")}
    assert invoked, "no X_FUNCTION defaults found in callback-core: has config.rs changed shape?"
    missing = {env: name for env, name in invoked.items() if name not in deployed}
    assert not missing, f"functions the code invokes that the template does not deploy: {missing}"


def test_functions_invoked_asynchronously_keep_failed_events():
    """Process-paid and delayed notify run async: retries, an age limit, a queue for what fails."""
    by_name = {function_name(fid): fid for fid in function_resources()}
    queues = resources("AWS::SQS::Queue")
    alarmed = {
        one(d["Value"]).removeprefix("${").removesuffix(".QueueName}")
        for a in resources("AWS::CloudWatch::Alarm").values()
        for d in a["Properties"].get("Dimensions", [])
        if d["Name"] == "QueueName"
    }
    for env, name in default_names().items():
        if not env.endswith("_FUNCTION"):
            continue
        fid = by_name[name]
        config = function_resources()[fid]["Properties"].get("EventInvokeConfig")
        assert config, f"{fid} is invoked asynchronously but has no EventInvokeConfig"
        assert 0 <= config["MaximumRetryAttempts"] <= 2 and config["MaximumEventAgeInSeconds"] >= 60, fid
        destination = config["DestinationConfig"]["OnFailure"]
        assert destination["Type"] == "SQS", fid
        queue = one(destination["Destination"]).removeprefix("${").removesuffix(".Arn}")
        assert queue in queues, f"{fid}: on-failure destination {queue} is not a queue of the template"
        assert queue in alarmed, f"no alarm on the depth of {queue}"


def test_timeouts_fit_the_work():
    for fid in function_resources():
        kebab, timeout = function_kebab(fid), setting(fid, "Timeout")
        if kebab == "delayed-notify":
            assert timeout == 240, fid
        elif kebab.startswith("process-paid"):
            assert timeout == 200, fid
        elif kebab in ("bills-import", "salary-import"):
            assert timeout == 300, f"{fid}: S3 invokes it asynchronously; a large file needs minutes"


def test_the_bills_import_runs_one_at_a_time():
    """New bills are unconditional BatchWriteItem Puts: correct only while no second import can
    create the same bill between the import's read and its write (crates/bills/src/import.rs)."""
    fid = function_by_kebab()["bills-import"]
    assert function_resources()[fid]["Properties"].get("ReservedConcurrentExecutions") == 1


def test_process_paid_functions_are_told_their_kind():
    kinds = {}
    for fid in function_resources():
        if crate_of_binary(binary(fid)) == "process-paid":
            kind = environment(fid).get("PROCESS_PAID_KIND")
            assert kind is not None, f"{fid}: PROCESS_PAID_KIND is not set"
            kinds[function_name(fid)] = one(kind)
    assert sorted(kinds.values()) == ["amex", "card", "wallet"], kinds
    # Whoever is told PROCESS_PAID_<KIND>_FUNCTION reaches the function of that kind.
    for env, name in default_names().items():
        m = re.fullmatch(r"PROCESS_PAID_(\w+)_FUNCTION", env)
        if m:
            assert kinds.get(name) == m[1].lower(), f"{env} names {name}, whose kind is {kinds.get(name)}"


def test_every_rest_fixture_is_routed_to_its_function():
    """events/<crate>/*.json REST events: their route exists and, if <crate> serves routes, is <crate>'s."""
    routes = {}
    for fid in function_resources():
        for event in (function_resources()[fid]["Properties"].get("Events") or {}).values():
            if event["Type"] == "Api":
                p = event["Properties"]
                assert p.get("RestApiId") == {"Ref": "PaymentApi"}, fid
                routes[(p["Method"].upper(), p["Path"])] = crate_of_binary(binary(fid))
    fixtures = 0
    for path in sorted(EVENTS.glob("*/*.json")):
        event = json.loads(path.read_text())
        if not (isinstance(event, dict) and event.get("httpMethod") and event.get("resource")):
            continue
        fixtures += 1
        route, crate = (event["httpMethod"], event["resource"]), path.parent.name
        assert route in routes, f"{path.relative_to(ROOT)}: no function serves {route}"
        # Delayed notify replays notify's HTTP event but has no route of its own.
        if crate in routes.values():
            assert routes[route] == crate, f"{path.relative_to(ROOT)}: {route} goes to {routes[route]}, not {crate}"
    assert fixtures, "no REST fixtures found in events/"


def test_every_function_has_an_error_alarm_and_a_log_group_with_retention():
    alarmed = {
        one(d["Value"])
        for a in resources("AWS::CloudWatch::Alarm").values()
        for d in a["Properties"].get("Dimensions", [])
        if d["Name"] == "FunctionName" and a["Properties"]["MetricName"] == "Errors"
    }
    groups = resources("AWS::Logs::LogGroup")
    for fid in function_resources():
        assert "${%s}" % fid in alarmed, f"no Errors alarm on {fid}"
        group = log_group_of(fid)
        # Not /aws/lambda/<function name>: Lambda made those for the Python functions of the same
        # names (docs/deploy.md, "Log groups"); and the same group before and after the cut-over.
        assert one(groups[group]["Properties"]["LogGroupName"]) == f"/aws/lambda/payment3-rs/${{Branch}}/{function_kebab(fid)}"
        assert "RetentionInDays" in groups[group]["Properties"], group


def log_group_of(fid: str) -> str:
    config = setting(fid, "LoggingConfig") or {}
    group = config.get("LogGroup")
    assert isinstance(group, dict) and "Ref" in group, f"{fid}: LoggingConfig.LogGroup must !Ref a LogGroup of the template"
    assert config.get("LogFormat") == "JSON", f"{fid}: the metric filters read JSON log lines"
    return group["Ref"]


# ---------------------------------------------------------------------------------------------
# Environment


def test_the_code_reads_its_environment_in_from_env_constructors():
    core = functions_in(library_files())
    constructors = reachable_env([key for key in core if key[1] == "from_env"], core)
    stray = env_read_anywhere() - constructors
    assert not stray, (
        f"read outside the from_env constructors, so the template test cannot tell who needs them: {sorted(stray)}"
    )
    assert "BRANCH" in set().union(*env_read_by_crate().values()), "the env parser found nothing: has config.rs changed shape?"


def test_every_variable_a_function_reads_is_set_on_it():
    missing = {}
    for fid in function_resources():
        needed = env_read_by_crate()[crate_of_binary(binary(fid))]
        absent = sorted(needed - set(environment(fid)))
        if absent:
            missing[fid] = absent
    assert not missing, f"variables the code reads that the template does not set: {missing}"


def test_name_variables_name_the_template_resources():
    parameters = set(template()["Parameters"])
    deployed = {one(f["Properties"]["FunctionName"]) for f in function_resources().values()}
    for fid in function_resources():
        env = environment(fid)
        for name, default in default_names().items():
            if name not in env:
                continue
            values = alternatives(env[name])
            if name.endswith("_FUNCTION"):
                assert values == {default + SUFFIX} and default + SUFFIX in deployed, (fid, name, values)
            else:
                assert default in values, f"{fid}: {name} is {values}, not the code's default {default}"
                others = values - {default}
                assert all(v[2:-1] in parameters for v in others), f"{fid}: {name} may be {others}"


# ---------------------------------------------------------------------------------------------
# Tables


def test_every_table_the_code_names_exists():
    names = table_names()
    wanted = {env: name for env, name in default_names().items() if env.endswith("_TABLE")}
    assert wanted, "no X_TABLE defaults found in callback-core: has config.rs changed shape?"
    missing = {env: name for env, name in wanted.items() if name not in names}
    assert not missing, f"tables the code uses that the template does not define: {missing}"


def test_tables_are_readable_without_evaluating_conditions():
    """The local stack creates each table in moto straight from these properties."""
    for tid, table in tables().items():
        p = table["Properties"]
        assert set(p["TableName"]) == {"Fn::Sub"} and isinstance(p["TableName"]["Fn::Sub"], str), tid
        assert p["BillingMode"] == "PAY_PER_REQUEST", tid
        literal = {k: p[k] for k in ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes") if k in p}
        assert "Fn::" not in json.dumps(literal) and '"Ref"' not in json.dumps(literal), tid
        defined = {a["AttributeName"]: a["AttributeType"] for a in p["AttributeDefinitions"]}
        keys = [k["AttributeName"] for k in p["KeySchema"]]
        keys += [k["AttributeName"] for g in p.get("GlobalSecondaryIndexes", []) for k in g["KeySchema"]]
        assert set(keys) == set(defined), f"{tid}: attribute definitions {defined} vs keys {keys}"
        if tid in ORIGINAL_TABLES:
            assert set(defined.values()) == {"S"}, f"{tid}: every key is a string in the original"
        else:
            assert set(defined.values()) <= {"S", "N"}, f"{tid}: keys are strings or numbers"


# The Python original's tables: their keys are all S. Tables of the later systems may key by number.
ORIGINAL_TABLES = {
    "WalletCallbackRecordTable", "AmexCallbackRecordTable", "CallbackErrorLogTable", "CreditCardNotifyTable",
    "CardPaymentRecordTable", "CallbackInboxTable", "AlertCooldownTable", "PaidOrderTable", "OrderTable",
}


def _key_types() -> dict[str, set[str]]:
    """Key attribute name -> the DynamoDB types the template's tables give it."""
    types: dict[str, set[str]] = {}
    for table in tables().values():
        for a in table["Properties"]["AttributeDefinitions"]:
            types.setdefault(a["AttributeName"], set()).add(a["AttributeType"])
    return types


def _template_keys() -> tuple[set[str], set[str]]:
    keys, indexes = set(), set()
    for table in tables().values():
        p = table["Properties"]
        keys |= {k["AttributeName"] for k in p["KeySchema"]}
        for g in p.get("GlobalSecondaryIndexes", []):
            indexes.add(g["IndexName"])
            keys |= {k["AttributeName"] for k in g["KeySchema"]}
    return keys, indexes


def test_the_keys_the_code_uses_are_keys_of_the_template_tables():
    keys, indexes = _template_keys()
    used = code_keys()
    assert "orderId" in used, "the key parser found nothing: has the DynamoDB adapter changed shape?"
    assert not used - keys, f"attributes the code addresses items by that no table has as a key: {sorted(used - keys)}"
    assert not code_indexes() - indexes, f"indexes the code queries that no table has: {sorted(code_indexes() - indexes)}"


def test_the_template_keys_are_names_the_code_uses():
    keys, indexes = _template_keys()
    strings = rust_strings() | set(rust_consts().values())
    ttls = {t["Properties"]["TimeToLiveSpecification"]["AttributeName"] for t in tables().values() if "TimeToLiveSpecification" in t["Properties"]}
    unknown = sorted((keys | ttls) - strings)
    assert not unknown, f"key or TTL attributes in the template that the Rust code never names: {unknown}"
    # A key the template types S is never written as a number or a boolean (nor an N key as a boolean).
    key_types = _key_types()
    for path in all_rust_files():
        for kind, name in re.findall(r"\.(integer|number|boolean)\(\s*\"(\w[^\"]*)\"", source(path)):
            allowed = kind != "boolean" and key_types.get(name) == {"N"}
            assert name not in keys or allowed, f"{path.relative_to(ROOT)} writes key {name} as {kind}; the table says {key_types.get(name)}"
        for kind, const in re.findall(r"\.(integer|number|boolean)\(\s*([A-Z_]+)\s*,", source(path)):
            name = rust_consts().get(const)
            allowed = kind != "boolean" and key_types.get(name) == {"N"}
            assert name not in keys or allowed, f"{path.relative_to(ROOT)} writes key {name} as {kind}; the table says {key_types.get(name)}"


def test_data_tables_are_protected_on_master():
    # Not payment data: the shop's order table (a sandbox copy here) and the alert cooldowns.
    for tid, table in tables().items():
        if tid in ("OrderTable", "AlertCooldownTable"):
            continue
        p = table["Properties"]
        assert p.get("DeletionProtectionEnabled") == {"Fn::If": ["IsProduction", True, False]}, tid
        assert p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] == {
            "Fn::If": ["IsProduction", True, False]
        }, tid
    assert template()["Conditions"]["IsProduction"] == {"Fn::Equals": [{"Ref": "Branch"}, "master"]}


# ---------------------------------------------------------------------------------------------
# IAM

ARN = re.compile(
    r"^arn:\$\{AWS::Partition\}:(?P<service>[a-z0-9-]+):\$\{AWS::Region\}:\$\{AWS::AccountId\}:(?P<rest>.+)$"
)


def _statements(fid: str) -> list[dict]:
    found = []
    for policy in function_resources()[fid]["Properties"].get("Policies", []):
        assert isinstance(policy, dict) and "Statement" in policy, (
            f"{fid}: use inline statements, not SAM policy templates or managed policies ({policy!r})"
        )
        found += policy["Statement"]
    return found


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _target(fid: str, statement: dict, resource) -> str:
    """The ACCESS key of one resource of a statement, after checking the template defines it."""
    env = environment(fid)
    env_values = {name: alternatives(value) for name, value in env.items()}
    values = alternatives(resource)
    assert "*" not in values, f"{fid}: Resource '*'"
    kinds = set()
    for value in values:
        s3 = re.fullmatch(r"arn:\$\{AWS::Partition\}:s3:::(?P<bucket>[^/]+)(?P<objects>/.*)?", value)
        if s3:
            buckets = {one(r["Properties"]["BucketName"]): lid for lid, r in resources("AWS::S3::Bucket").items()}
            assert s3["bucket"] in buckets, f"{fid}: {value} is not a bucket of the template"
            kinds.add(f"objects:{buckets[s3['bucket']]}{s3['objects']}" if s3["objects"] else f"bucket:{buckets[s3['bucket']]}")
            continue
        if re.fullmatch(r"\$\{\w+\}", value) and template()["Resources"].get(value[2:-1], {}).get("Type") == "AWS::Serverless::StateMachine":
            kinds.add(f"resource:{value[2:-1]}")
            continue
        if re.fullmatch(r"\$\{\w+\.Arn\}", value):
            assert value[2:-5] in template()["Resources"], f"{fid}: {value} is not a resource of the template"
            kinds.add(f"resource:{value[2:-5]}")
            continue
        m = ARN.match(value)
        assert m, f"{fid}: {value} is not an ARN in this account and region"
        service, rest = m["service"], m["rest"]
        if service == "dynamodb":
            t = re.fullmatch(r"table/(?P<table>[^/]+)(?:/index/(?P<index>[^/]+))?", rest)
            assert t, f"{fid}: {value}"
            table = t["table"]
            named = table_names().get(table)
            if named is None:
                # A parameter-named table (the order table): it must be the name the function is given.
                given = [n for n, v in env_values.items() if n.endswith("_TABLE") and table in v and values_match(values, v, "table/")]
                assert given, f"{fid}: {value} is neither a table of the template nor the name of one it is given"
                kinds.add("table:order")
                continue
            kebab = "order" if named == "OrderTable" else NAME.match(table)["kebab"]
            if t["index"]:
                gsis = {g["IndexName"] for g in tables()[named]["Properties"].get("GlobalSecondaryIndexes", [])}
                assert t["index"] in gsis, f"{fid}: {value}: {named} has no index {t['index']}"
                kinds.add(f"index:{kebab}/{t['index']}")
            else:
                kinds.add(f"table:{kebab}")
        elif service == "lambda":
            name = rest.removeprefix("function:")
            deployed = {one(f["Properties"]["FunctionName"]) for f in function_resources().values()}
            assert name in deployed, f"{fid}: {value} is not a function of the template"
            kinds.add("function:" + NAME.match(name.removesuffix(SUFFIX))["kebab"])
        elif service == "secretsmanager":
            name = rest.removeprefix("secret:").removesuffix("-??????")
            given = [n for n, v in env_values.items() if n.endswith("_SECRET_NAME") and name in v]
            assert given, f"{fid}: {value} is not the secret the function is given"
            kinds.add("secret:" + given[0].removesuffix("_SECRET_NAME").lower())
        elif service == "ses":
            # SES checks SendEmail against the sender's identity (an address or its domain), whose
            # ARN the template cannot know: identity/* is allowed only pinned to the senders.
            assert rest == "identity/*", f"{fid}: {value}"
            assert set(_as_list(statement["Action"])) <= {"ses:SendEmail", "ses:SendRawEmail"}, fid
            senders = _as_list(statement["Condition"]["StringEquals"]["ses:FromAddress"])
            given = set().union(*(v for n, v in env_values.items() if n.endswith("EMAIL_FROM")))
            assert all(alternatives(s) <= given for s in senders), f"{fid}: SES sender not one it is given"
            kinds.add("ses")
        else:
            raise AssertionError(f"{fid}: {value}: a service the template test does not know")
    assert len(kinds) == 1, f"{fid}: one Resource entry names several things: {kinds}"
    return kinds.pop()


def values_match(resource_values: set[str], env_values: set[str], marker: str) -> bool:
    """The table part of every resource alternative is one of the env variable's alternatives."""
    return {v.split(marker, 1)[1] for v in resource_values} == env_values


def granted(fid: str) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    for statement in _statements(fid):
        assert statement.get("Effect") == "Allow", fid
        actions = set(_as_list(statement["Action"]))
        assert not any("*" in a for a in actions), f"{fid}: wildcard action in {actions}"
        for resource in _as_list(statement["Resource"]):
            target = _target(fid, statement, resource)
            grants.setdefault(target, set()).update(actions)
    return grants


def test_policies_name_only_template_resources_and_grant_exactly_the_contract():
    problems = {}
    assert set(ACCESS) == set(function_by_kebab()), "ACCESS and the template's functions differ"
    for kebab, fid in function_by_kebab().items():
        have, want = granted(fid), ACCESS[kebab]
        missing = {t: sorted(a - have.get(t, set())) for t, a in want.items() if a - have.get(t, set())}
        extra = {t: sorted(a - want.get(t, set())) for t, a in have.items() if a - want.get(t, set())}
        if missing or extra:
            problems[fid] = {"missing": missing, "extra": extra}
    assert not problems, f"IAM differs from the access contract: {json.dumps(problems, indent=1)}"


def test_each_function_may_do_what_its_code_does_to_each_table():
    ops = table_operations_by_crate()
    assert ops["wallet"].get("callback-inbox"), "the table-access tracer found nothing: has the code changed shape?"
    assert ops["recharge-dunning"].get("recharge-dunning"), "the tracer does not follow the recharge crate"
    problems = {}
    for fid in function_resources():
        have = granted(fid)
        for table, actions in ops[crate_of_binary(binary(fid))].items():
            for action in actions:
                base = action.removesuffix("@index")
                if action.endswith("@index"):
                    ok = any(base in a for t, a in have.items() if t.startswith(f"index:{table}/"))
                else:
                    ok = base in have.get(f"table:{table}", set())
                if not ok:
                    problems.setdefault(fid, []).append(f"{action} on {table}")
    assert not problems, f"the code does these but the function may not: {problems}"


def test_no_function_may_do_more_to_a_table_than_its_code_does():
    ops = table_operations_by_crate()
    problems = {}
    for fid in function_resources():
        does = ops[crate_of_binary(binary(fid))]
        for target, actions in granted(fid).items():
            kind, _, name = target.partition(":")
            if kind not in ("table", "index"):
                continue
            table = name.split("/")[0]
            allowed = {a.removesuffix("@index") for a in does.get(table, set()) if a.endswith("@index") == (kind == "index")}
            if actions - allowed:
                problems.setdefault(fid, []).append(f"{sorted(actions - allowed)} on {target}")
    assert not problems, f"grants the code never uses: {problems}"


def test_every_aws_operation_the_code_calls_is_granted_somewhere():
    everything = set()
    for fid in function_resources():
        for actions in granted(fid).values():
            everything |= actions
    needed = {SDK_ACTIONS[op] for op in sdk_operations()}
    assert "dynamodb:PutItem" in needed, "the SDK call parser found nothing: has the adapter changed shape?"
    assert not needed - everything, f"operations the code calls that no function may perform: {sorted(needed - everything)}"


# ---------------------------------------------------------------------------------------------
# Lint


def test_cfn_lint_is_clean():
    try:
        import cfnlint  # noqa: F401
    except ImportError:
        pytest.fail("cfn-lint is not installed in this environment (it is in requirements.txt)")
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())", str(TEMPLATE)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------------------------------------
# Deploying can never lose data, silence a failure, or outgrow a timeout (docs/deploy.md)

RETAINED = ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable", "AWS::S3::Bucket", "AWS::Logs::LogGroup")


def test_every_table_bucket_and_log_group_survives_a_stack_delete_and_a_replacement():
    """A stack delete, a rollback of a create or a replacing update never takes data with it."""
    found = {kind: 0 for kind in RETAINED}
    problems = []
    for rid, resource in template()["Resources"].items():
        if resource["Type"] not in RETAINED:
            continue
        found[resource["Type"]] += 1
        for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
            if resource.get(policy) != "Retain":
                problems.append(f"{rid} ({resource['Type']}): {policy} is {resource.get(policy)!r}, not Retain")
    assert found["AWS::DynamoDB::Table"] >= 8 and found["AWS::Logs::LogGroup"], found
    assert not problems, "\n".join(problems)


# The log lines the metric filters count, as the code writes them. runtime::start::answered and
# the error path (flows::incident) are the one place each is written.
ANSWERED_LINE = re.compile(r'tracing::info!\(\s*function\s*,\s*status\s*,\s*"answered"\s*\)')
INCIDENT_LINE = re.compile(r'tracing::error!\([^;]*error_type\s*=\s*kind[^;]*"callback failed"\s*\)', re.S)


def metric_filters() -> dict[str, dict]:
    return resources("AWS::Logs::MetricFilter")


def filters_on(group: str) -> dict[str, str]:
    """Metric name -> filter pattern, for the filters on one log group."""
    found = {}
    for f in metric_filters().values():
        p = f["Properties"]
        if p["LogGroupName"] == {"Ref": group}:
            for m in p["MetricTransformations"]:
                assert alternatives(m["MetricNamespace"]) == {"payment3/${Branch}"}, m
                found[m["MetricName"]] = p["FilterPattern"]
    return found


def alarms_on(namespace: str, metric: str) -> list[dict]:
    return [
        a["Properties"] for a in resources("AWS::CloudWatch::Alarm").values()
        if alternatives(a["Properties"].get("Namespace", "")) == {namespace} and a["Properties"].get("MetricName") == metric
    ]


def api_routes_of(fid: str) -> list[tuple[str, str, str]]:
    """(api logical id, METHOD, path) of every API event of a function."""
    routes = []
    for name, event in (function_resources()[fid]["Properties"].get("Events") or {}).items():
        assert event["Type"] != "HttpApi", f"{fid}.{name}: HTTP APIs have no per-route alarm here yet"
        if event["Type"] == "Api":
            p = event["Properties"]
            routes.append((p["RestApiId"]["Ref"], p["Method"].upper(), p["Path"]))
    return routes


# Which metrics each function's log group must feed, and what a breach means.
ALL_FUNCTIONS_METRICS = {"MoneyIncidents"}
HTTP_FUNCTIONS_METRICS = {"Answered5xx", "RejectedSignatures"}


def test_every_function_feeds_the_answered_failure_alarms():
    missing = {}
    for fid in function_resources():
        wanted = ALL_FUNCTIONS_METRICS | (HTTP_FUNCTIONS_METRICS if api_routes_of(fid) else set())
        absent = sorted(wanted - set(filters_on(log_group_of(fid))))
        if absent:
            missing[fid] = absent
    assert not missing, f"functions whose log group feeds no metric for: {missing}"
    for metric in ALL_FUNCTIONS_METRICS | HTTP_FUNCTIONS_METRICS:
        alarms = alarms_on("payment3/${Branch}", metric)
        assert alarms, f"no alarm on the {metric} metric"
        for alarm in alarms:
            _assert_alarm_pages(alarm, metric)


def _assert_alarm_pages(alarm: dict, what: str) -> None:
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], f"{what}: the alarm must notify the alarm topic"
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and 1 <= alarm["Threshold"] <= 5, what
    assert alarm["Statistic"] == "Sum" and alarm["Period"] <= 300 and alarm["EvaluationPeriods"] == 1, what
    # No data means nothing went wrong (a metric filter publishes only on a match).
    assert alarm["TreatMissingData"] == "notBreaching", what


def test_every_route_has_an_api_gateway_5xx_alarm():
    apis = resources("AWS::Serverless::Api")
    alarms = alarms_on("AWS/ApiGateway", "5XXError")
    for api in apis.values():
        settings = api["Properties"].get("MethodSettings", [])
        assert any(s.get("MetricsEnabled") and s["ResourcePath"] == "/*" and s["HttpMethod"] == "*" for s in settings), (
            "per-route metrics (MetricsEnabled) must be on for every method"
        )
    routes = [(fid, *r) for fid in function_resources() for r in api_routes_of(fid)]
    assert len(routes) >= 4, routes
    for fid, api, method, path in routes:
        props = apis[api]["Properties"]
        want = {"ApiName": alternatives(props["Name"]), "Stage": {props["StageName"]}, "Resource": {path}, "Method": {method}}
        matching = [a for a in alarms if {d["Name"]: alternatives(d["Value"]) for d in a["Dimensions"]} == want]
        assert matching, f"{fid}: no 5XXError alarm for {method} {path} on {api}"
        _assert_alarm_pages(matching[0], f"{method} {path}")


# --- CloudWatch Logs filter patterns, the JSON subset used here: { $.a.b OP value && (.. || ..) }

_TOKEN = re.compile(r'\s*(\$(?:\.\w+)+|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|&&|\|\||>=|<=|!=|=|>|<|\(|\)|\{|\})')


def filter_matches(pattern: str, event: dict) -> bool:
    tokens, pos = [], 0
    while pos < len(pattern.rstrip()):
        m = _TOKEN.match(pattern, pos)
        assert m, f"filter pattern the test cannot read at {pattern[pos:]!r}"
        tokens.append(m.group(1))
        pos = m.end()
    assert tokens[0] == "{" and tokens[-1] == "}", pattern
    tokens = tokens[1:-1]

    def value(path: str):
        node = event
        for part in path.split(".")[1:]:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def comparison(i: int) -> tuple[bool, int]:
        if tokens[i] == "(":
            result, i = disjunction(i + 1)
            assert tokens[i] == ")", pattern
            return result, i + 1
        path, op, literal = tokens[i], tokens[i + 1], tokens[i + 2]
        actual = value(path)
        if literal.startswith('"'):
            expected = json.loads(literal)
            equal = isinstance(actual, str) and actual == expected
            assert op in ("=", "!="), pattern
            return (equal if op == "=" else not equal), i + 3
        if not isinstance(actual, (int, float)) or isinstance(actual, bool):
            return False, i + 3
        number = float(literal)
        ops = {"=": actual == number, "!=": actual != number, ">=": actual >= number,
               "<=": actual <= number, ">": actual > number, "<": actual < number}
        return ops[op], i + 3

    def conjunction(i: int) -> tuple[bool, int]:
        result, i = comparison(i)
        while i < len(tokens) and tokens[i] == "&&":
            right, i = comparison(i + 1)
            result = result and right
        return result, i

    def disjunction(i: int) -> tuple[bool, int]:
        result, i = conjunction(i)
        while i < len(tokens) and tokens[i] == "||":
            right, i = conjunction(i + 1)
            result = result or right
        return result, i

    result, end = disjunction(0)
    assert end == len(tokens), f"unread rest of {pattern!r}: {tokens[end:]}"
    return result


def log_event(message: str, **fields) -> dict:
    """A log line as lambda_runtime's JSON subscriber writes it (tracing-subscriber's json(); the
    shape is checked in runtime::start's tests): the message and the fields under `fields`."""
    return {"level": "INFO", "fields": {"message": message, **fields}, "span": {"requestId": "r", "name": "Lambda runtime invoke"}}


def money_kinds_in_code() -> set[str]:
    """Every `CallbackError::Rejected { kind: .. }` callback-core raises: a payment not applied."""
    consts, kinds = rust_consts(), set()
    for path in core_files():
        for token in re.findall(r"Rejected\s*\{\s*kind\s*:\s*(\"[^\"]+\"|[A-Z_]+)", source(path)):
            kinds.add(_name_or_const(token, consts))
    return kinds


def test_the_filters_count_the_lines_the_code_writes():
    start, incident = source(CORE / "runtime" / "start.rs"), source(CORE / "flows" / "incident.rs")
    assert ANSWERED_LINE.search(start), "runtime::start no longer logs `answered` with function and status"
    assert INCIDENT_LINE.search(incident), "the error path no longer logs `callback failed` with error_type"
    patterns = {}
    for f in metric_filters().values():
        for m in f["Properties"]["MetricTransformations"]:
            patterns.setdefault(m["MetricName"], set()).add(f["Properties"]["FilterPattern"])
    assert all(len(p) == 1 for p in patterns.values()), f"one pattern per metric: {patterns}"
    answered_5xx, rejected, money = (patterns[m].copy().pop() for m in ("Answered5xx", "RejectedSignatures", "MoneyIncidents"))

    def answered(status):
        return log_event("answered", function="walletcallback", status=status)

    assert filter_matches(answered_5xx, answered(500)) and filter_matches(answered_5xx, answered(502))
    assert not any(filter_matches(answered_5xx, answered(s)) for s in (200, 400, 401, 413, 422))
    assert filter_matches(rejected, answered(401))
    assert not any(filter_matches(rejected, answered(s)) for s in (200, 400, 403, 500))
    assert not filter_matches(answered_5xx, log_event("callback handled", status=500))

    kinds = money_kinds_in_code()
    assert {"SecondPayment", "AmountMismatch"} <= kinds, f"the Rejected-kind parser found {kinds}: has the code changed shape?"
    for kind in kinds:
        assert filter_matches(money, log_event("callback failed", function="processpaidorder", error_type=kind)), (
            f"money incident {kind} (a Rejected kind in callback-core) is not counted by the MoneyIncidents filter"
        )
    named = set(re.findall(r'error_type\s*=\s*"(\w+)"', money))
    assert named <= kinds, f"the MoneyIncidents filter names kinds the code never raises: {sorted(named - kinds)}"
    for kind in ("ValidationError", "StoreError", "ChecksumError", "InternalError"):
        assert not filter_matches(money, log_event("callback failed", error_type=kind)), kind


API_GATEWAY_TIMEOUT_MS = 29_000


def rust_duration(name: str) -> int:
    found = re.findall(rf"const\s+{name}\s*:\s*Duration\s*=\s*Duration::from_secs\((\d+)\)", source(CORE / "runtime" / "start.rs"))
    assert len(found) == 1, f"{name} (a Duration::from_secs const in runtime/start.rs) not found"
    return int(found[0])


def test_timeouts_fit_inside_each_other():
    """Synchronous invoke < the caller's Lambda timeout < API Gateway's integration timeout."""
    for fid in function_resources():
        timeout = setting(fid, "Timeout")
        for name, event in (function_resources()[fid]["Properties"].get("Events") or {}).items():
            if event["Type"] == "Api":
                gateway = event["Properties"].get("TimeoutInMillis", API_GATEWAY_TIMEOUT_MS)
                assert timeout * 1000 < gateway, f"{fid}: Lambda timeout {timeout} s does not end inside API Gateway's {gateway} ms"
    by_kebab = function_by_kebab()
    notify_timeout = setting(by_kebab["notify"], "Timeout")
    assert rust_duration("NOTIFY_SYNC_INVOKE") + 3 <= notify_timeout, "notify's wait on process-paid must end before notify does"
    delayed_timeout = setting(by_kebab["delayed-notify"], "Timeout")
    wait = template()["Parameters"]["DelayedNotifySeconds"]
    # Two synchronous runs, the wait at its largest, and time for the other calls.
    worst = 2 * rust_duration("DELAYED_SYNC_INVOKE") + wait["MaxValue"]
    assert worst + 15 <= delayed_timeout, f"delayed notify may need {worst} s of its {delayed_timeout} s"
    assert int(wait["Default"]) <= wait["MaxValue"]


def test_the_cidr_list_parameter_refuses_what_the_resource_policy_cannot_use():
    pattern = re.compile(template()["Parameters"]["CallbackAllowedCidrs"]["AllowedPattern"])
    for good in ("", "203.0.113.0/24", "203.0.113.0/24,198.51.100.7/32", "10.0.0.0/8,0.0.0.0/0"):
        assert pattern.fullmatch(good), good
    for bad in ("203.0.113.0/24, 198.51.100.7/32", " 203.0.113.0/24", "203.0.113.0", "203.0.113.0/33",
                "256.1.1.1/32", "203.0.113.0/24,", ",203.0.113.0/24", "203.0.113.0/24;10.0.0.0/8", "any"):
        assert not pattern.fullmatch(bad), bad
