#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

Each source file is a module. Module A depends on module B when A names an item of B by path:
`use crate::b::…`, `crate::b::…` in code, `super::…` / `self::b::…`. `mod b;` declarations are
not dependencies (they only say where a file is); `#[cfg(test)]` blocks are left out (a test
module may use anything). A path is resolved to the longest module prefix that exists, so
`crate::http::relay::serve` names `http/relay` and `crate::http::Body` names `http`.

Usage: check-module-cycles.py [CRATE_SRC_DIR …]   (default: every workspace crate's src/)
       check-module-cycles.py --self-test          (the checker finds a planted cycle)
Prints each cycle with the lines that make its edges; exits 1 when there is one.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def strip_comments_and_strings(text):
    """Blanks out comments and string/char literals, keeping line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + len(hashes) + 2)
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:]):
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


ITEM = re.compile(r"\s*(#\[[^\]]*\]\s*)*(pub(\([^)]*\))?\s+)?(fn|mod|impl|use|struct|enum|const|static|type|trait|async|unsafe|macro_rules)\b")


def item_end(text, start):
    """Where the item (or field / struct-literal entry) starting at `start` ends."""
    if not ITEM.match(text, start):
        depth = 0
        for j in range(start, len(text)):
            ch = text[j]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                if depth == 0:
                    return j
                depth -= 1
            elif ch == "," and depth == 0:
                return j + 1
        return len(text)
    brace = text.find("{", start)
    semi = text.find(";", start)
    if semi >= 0 and (brace < 0 or semi < brace):
        return semi + 1
    depth, j = 0, brace
    while j < len(text):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                break
        j += 1
    return j + 1


def drop_test_blocks(text):
    """Blanks out what `#[cfg(test)]` guards: an item (`mod tests { … }`), a field, an entry."""
    for m in list(re.finditer(r"#\[cfg\(test\)\]", text)):
        start, end = m.start(), item_end(text, m.end())
        text = text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]
    return text


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` → ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s+", "", tree)
    depth, brace = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                brace = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if brace is None:
        return [re.sub(r"\bas\w+$", "", tree)]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in filter(None, parts):
        for e in expand_use_tree(p):
            out.append(prefix + e if e != "self" else prefix.rstrip(":"))
    return out


class Crate:
    def __init__(self, src):
        self.src = src
        self.modules = {}  # module path tuple -> file
        for f in sorted(src.rglob("*.rs")):
            rel = f.relative_to(src).with_suffix("")
            parts = tuple(rel.parts)
            if parts in (("lib",), ("main",)):
                parts = ()
            elif parts[0] == "bin":
                continue  # each binary is its own crate root
            elif parts[-1] == "mod":
                parts = parts[:-1]
            self.modules.setdefault(parts, f)

    def resolve(self, here, path):
        """The module a `::`-path written in module `here` names, or None (another crate)."""
        segs = [s for s in path.split("::") if s]
        if not segs:
            return None
        if segs[0] == "crate":
            base, segs = (), segs[1:]
        elif segs[0] in ("super", "self"):
            base = here
            while segs and segs[0] in ("super", "self"):
                if segs[0] == "super":
                    base = base[:-1]
                segs = segs[1:]
        elif tuple(here) + (segs[0],) in self.modules:
            base = here  # a child module named without `self::`
        elif (segs[0],) in self.modules and here == ():
            base = ()
        else:
            return None
        best = base
        for i in range(1, len(segs) + 1):
            cand = base + tuple(segs[:i])
            if cand in self.modules:
                best = cand
        return best

    def edges(self):
        found = {}
        for here, f in self.modules.items():
            text = drop_test_blocks(strip_comments_and_strings(f.read_text()))
            refs = []
            for m in re.finditer(r"\buse\s+([^;]+);", text):
                line = text.count("\n", 0, m.start()) + 1
                for p in expand_use_tree(m.group(1)):
                    refs.append((p, line))
            no_use = re.sub(r"\buse\s+[^;]+;", lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
            for m in re.finditer(r"(?<![\w:])([a-z_]\w*(?:::\w+)+)", no_use):
                first = m.group(1).split("::")[0]
                if first in ("crate", "super", "self") or here + (first,) in self.modules:
                    line = no_use.count("\n", 0, m.start()) + 1
                    refs.append((m.group(1), line))
            for p, line in refs:
                target = self.resolve(here, p)
                if target is None or target == here:
                    continue
                found.setdefault((here, target), (f, line))
        return found


def name(mod):
    return "/".join(mod) or "(root)"


def cycles(edges):
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            strong(v)
    return comps


def self_test():
    """The checker must find a cycle that exists and none where there is none."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "src"
        (src / "a").mkdir(parents=True)
        (src / "lib.rs").write_text("mod a;\nmod b;\npub use a::X;\n")
        (src / "a.rs").write_text("mod inner;\npub struct X;\nfn f() { inner::g(); }\n")
        (src / "a" / "inner.rs").write_text(
            "use crate::{b::{self, Y}};\n// crate::c is a comment\npub fn g() {}\n"
            "#[cfg(test)]\nmod tests { use crate::a::X; }\n"
        )
        (src / "lib.rs").write_text(
            "mod a;\nmod b;\npub use a::X;\nstruct S {\n    #[cfg(test)]\n    t: u8,\n    u: u8,\n}\n"
        )
        (src / "b.rs").write_text('pub struct Y;\nconst S: &str = "crate::a";\n')
        found = cycles(Crate(src).edges())
        assert found == [], f"false cycle: {found}"
        (src / "b.rs").write_text(
            "pub struct Y;\nstruct T {\n    #[cfg(test)]\n    t: u8,\n}\nfn h() { let _ = crate::a::X; }\n"
        )
        found = cycles(Crate(src).edges())
        assert found == [[("a",), ("a", "inner"), ("b",)]], f"missed the cycle: {found}"
    print("self-test passed")


def main(args):
    if args == ["--self-test"]:
        self_test()
        return 0
    srcs = [Path(a).resolve() for a in args] or sorted(
        p.parent / "src"
        for p in ROOT.glob("**/Cargo.toml")
        if (p.parent / "src").is_dir() and not {"target", "fuzz"} & set(p.relative_to(ROOT).parts)
    )
    bad = 0
    for src in srcs:
        crate = Crate(src)
        edges = crate.edges()
        for comp in cycles(edges):
            bad += 1
            members = set(comp)
            print(f"import cycle in {src.relative_to(ROOT)}: " + ", ".join(map(name, comp)))
            for (a, b), (f, line) in sorted(edges.items()):
                if a in members and b in members:
                    print(f"  {name(a)} -> {name(b)}  ({f.relative_to(ROOT)}:{line})")
    if bad:
        print(f"{bad} import cycle(s): move shared vocabulary into a leaf module")
        return 1
    print(f"no import cycles in {len(srcs)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
