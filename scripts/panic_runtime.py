#!/usr/bin/env python3
"""Which panic runtime a built Lambda bootstrap links: `unwind` or `abort` (issue 16).

A deployed binary must unwind: the runtime loop catches a handler's panic, runs the error path
(error-log item, alert) and reports one failed invocation. Built with `panic = "abort"` (what
cargo-lambda passes when `[profile.release]` names no `panic`), the same panic kills the container
and nothing is recorded. The profile says what we asked for; this reads what was built.

How: the two runtimes leave different text in a stripped binary. `panic_unwind` carries its
messages for foreign exceptions ("Rust cannot catch foreign exceptions", "Rust panics must be
rethrown"); `panic_abort` carries neither, and its source path `library/panic_abort/src/lib.rs`
instead. Checked on a probe built both ways (docs/deploy.md, "Panics").

    python scripts/panic_runtime.py .aws-sam/build/*/bootstrap target/lambda/*/bootstrap.zip

Exit status 1 if any file is not `unwind`.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

UNWIND_MARKS = (b"Rust cannot catch foreign exceptions", b"Rust panics must be rethrown")
ABORT_MARK = b"library/panic_abort/src/lib.rs"


def read_bootstrap(path: Path) -> bytes:
    """The bootstrap's bytes, from the binary itself or from a deployment zip holding it."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return z.read("bootstrap")
    return path.read_bytes()


def panic_runtime(data: bytes) -> str:
    unwind = all(m in data for m in UNWIND_MARKS)
    abort = ABORT_MARK in data
    if unwind and not abort:
        return "unwind"
    if abort and not unwind:
        return "abort"
    return "unknown"


def elf_machine(data: bytes) -> str:
    if data[:4] != b"\x7fELF":
        return "not ELF"
    machine = int.from_bytes(data[18:20], "little")
    return {0x3E: "x86_64", 0xB7: "aarch64"}.get(machine, hex(machine))


def main(paths: list[str]) -> int:
    bad = 0
    for p in map(Path, paths):
        data = read_bootstrap(p)
        kind = panic_runtime(data)
        bad += kind != "unwind"
        print(f"{kind:8} {elf_machine(data):8} {len(data):>10} B  {p}")
    return 1 if bad or not paths else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
