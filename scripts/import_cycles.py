#!/usr/bin/env python3
"""Lists the import edges between the files of a Rust crate and fails on a cycle.

An edge A -> B means a `crate::...` path in A (a `use`, or a path written inline, tests included)
names an item of B's module. `mod` declarations are not edges. Also checks the layer rule of
callback-core: domain <- ports <- flows <- runtime, imports only pointing down.

    python3 scripts/import_cycles.py [crate_src ...]      (default: every crates/*/src)
    python3 scripts/import_cycles.py --edges crates/callback-core/src
"""
import pathlib
import re
import sys

LAYERS = ["domain", "ports", "flows", "runtime"]


def module_files(src: pathlib.Path):
    """Module path (tuple) -> file."""
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        if "bin" in parts:
            continue
        mods[tuple(parts)] = f
    return mods


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def paths_in(text: str):
    """Every crate-relative path named in the text, with `use` groups expanded."""
    out = []
    for m in re.finditer(r"\buse\s+crate::([^;]+);", text):
        out += expand(m.group(1))
    for m in re.finditer(r"(?<![\w:])crate::((?:\w+::)*\w+)", text):
        out.append(m.group(1).split("::"))
    for m in re.finditer(r"\b(?:use\s+)?(self|super)::((?:\w+::)*\w+)", text):
        out.append([m.group(1)] + m.group(2).split("::"))
    return out


def expand(tree: str):
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree.split(" as ")[0].split("::")]
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rindex("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    base = [p for p in head.split("::") if p]
    out = []
    for it in items:
        for sub in expand(it):
            out.append(base + ([] if sub == ["self"] else sub))
    return out


def resolve(path, here, mods):
    """The module file a path lands in: the longest prefix that is a module."""
    parts = list(path)
    if parts and parts[0] == "self":
        parts = list(here) + parts[1:]
    while parts and parts[0] == "super":
        here = here[:-1]
        parts = list(here) + parts[1:] if parts[1:2] != ["super"] else parts[1:]
    for n in range(len(parts), 0, -1):
        if tuple(parts[:n]) in mods:
            return tuple(parts[:n])
    return None


def edges_of(src: pathlib.Path):
    mods = module_files(src)
    edges = set()
    for mod, f in mods.items():
        text = strip_comments(f.read_text())
        for path in paths_in(text):
            target = resolve(path, mod, mods)
            if target is not None and target != mod and target != ():
                edges.add((mod, target))
    return mods, edges


def find_cycle(nodes, edges):
    graph = {n: [] for n in nodes}
    for a, b in edges:
        graph[a].append(b)
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in graph[n]:
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def name(mod):
    return "::".join(mod) or "lib"


def main(argv):
    show = "--edges" in argv
    roots = [pathlib.Path(a) for a in argv if not a.startswith("--")]
    if not roots:
        roots = sorted(pathlib.Path("crates").glob("*/src"))
    failed = False
    for src in roots:
        mods, edges = edges_of(src)
        if show:
            for a, b in sorted(edges):
                print(f"{name(a)} -> {name(b)}")
        cycle = find_cycle(set(mods), edges)
        layer_faults = [
            (a, b)
            for a, b in sorted(edges)
            if a and b and a[0] in LAYERS and b[0] in LAYERS
            and LAYERS.index(b[0]) > LAYERS.index(a[0])
        ]
        if cycle:
            failed = True
            print(f"{src}: import cycle: " + " -> ".join(name(m) for m in cycle))
        for a, b in layer_faults:
            failed = True
            print(f"{src}: {name(a)} imports {name(b)}: a lower layer must not import a higher one")
        if not cycle and not layer_faults:
            print(f"{src}: {len(mods)} files, {len(edges)} import edges, no cycle")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
