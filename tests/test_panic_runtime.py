"""scripts/panic_runtime.py tells an unwinding binary from an aborting one (issue 16).

The deployed bootstraps are checked with it (docs/deploy.md, `make bench`'s `panic` column), so it
must not answer `unwind` for an abort build. Two small programs are compiled here with rustc, once
with each strategy, optimised and stripped like the release profile, and read back both as a
binary and inside a deployment zip. A few seconds; no cargo, no AWS.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import panic_runtime  # noqa: E402

PROGRAM = """
fn main() {
    let lens: Vec<usize> = std::env::args().map(|a| a.len()).collect();
    if lens.len() > 3 { panic!("too many arguments: {}", lens[0]); }
    println!("{}", lens.len());
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("panic")
    src = d / "probe.rs"
    src.write_text(PROGRAM)
    out = {}
    for strategy in ("unwind", "abort"):
        exe = d / f"probe-{strategy}"
        subprocess.run(["rustc", "-O", "-C", f"panic={strategy}", "-C", "strip=symbols", str(src), "-o", str(exe)],
                       check=True, capture_output=True)
        out[strategy] = exe
    return out


@pytest.mark.parametrize("strategy", ["unwind", "abort"])
def test_the_strategy_a_binary_was_built_with_is_read_back(built, strategy):
    assert panic_runtime.panic_runtime(built[strategy].read_bytes()) == strategy


def test_a_deployment_zip_is_read_like_the_bootstrap_it_holds(built, tmp_path):
    z = tmp_path / "bootstrap.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        f.write(built["abort"], "bootstrap")
    assert panic_runtime.panic_runtime(panic_runtime.read_bootstrap(z)) == "abort"


def test_the_command_fails_unless_every_file_unwinds(built):
    def run(*paths: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "scripts" / "panic_runtime.py"), *map(str, paths)],
                              capture_output=True, text=True)

    ok = run(built["unwind"])
    assert ok.returncode == 0 and ok.stdout.startswith("unwind"), ok.stdout
    mixed = run(built["unwind"], built["abort"])
    assert mixed.returncode == 1 and "abort" in mixed.stdout, mixed.stdout
    assert run().returncode == 1  # nothing checked is not a pass


def test_a_file_that_is_neither_is_unknown(tmp_path):
    f = tmp_path / "bootstrap"
    f.write_bytes(b"#!/bin/sh\nexec ./real-binary\n")
    assert panic_runtime.panic_runtime(f.read_bytes()) == "unknown"
