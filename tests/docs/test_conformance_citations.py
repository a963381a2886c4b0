"""test_conformance_citations.py - every test docs/conformance.md cites exists and runs.

docs/conformance.md maps each MQTT 3.1.1 statement to the tests that check it. A test
that is renamed or removed leaves its row citing nothing, and the row then claims a check
that no longer happens. This reads the table rows and checks each citation:

- `tests/integration/test_x.py::test_name`: the file defines `def test_name(` at the top
  level (pytest collects it);
- `tests/unit/test_y.c: test_name`: the file defines `static void test_name(` and lists
  it in its `struct CMUnitTest` array (an unlisted cmocka test never runs);
- `tests/ws/x.test.mjs` test(s) `NAME` [and `NAME`]: the file exists and each NAME is a
  test name in it, literally or from a template literal whose `${...}` parts are strings
  of the file (a NAME starting with "..." abbreviates the one before it and is skipped).

Run by ctest (docs_conformance_citations) or by hand:
    python3 -m pytest tests/docs/test_conformance_citations.py
"""
import os
import re

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DOC = os.path.join(ROOT, "docs", "conformance.md")

IT_RE = re.compile(r"`(tests/integration/test_\w+\.py)::(\w+)`")
UNIT_RE = re.compile(r"`(tests/unit/test_\w+\.c): (\w+)`")
WS_RE = re.compile(r"`(tests/ws/[\w.-]+\.mjs)`(?: tests? ((?:`[^`]+`(?:,? and |, )?)+))?")


def rows():
    """The table rows of the document: (line number, text)."""
    with open(DOC, encoding="utf-8") as f:
        return [(i, ln) for i, ln in enumerate(f, 1) if ln.startswith("| MQTT-")]


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def citations():
    """(kind, file, name or None, line) for every citation in the table rows."""
    out = []
    for no, ln in rows():
        out += [("it", f, n, no) for f, n in IT_RE.findall(ln)]
        out += [("unit", f, n, no) for f, n in UNIT_RE.findall(ln)]
        for m in WS_RE.finditer(ln):
            names = re.findall(r"`([^`]+)`", m.group(2) or "")
            out.append(("ws", m.group(1), None, no))
            out += [("ws", m.group(1), n, no) for n in names if not n.startswith("...")]
    return out


def ws_has_test(text, name):
    """True when name is a test name of the Node test file text."""
    if f"'{name}'" in text or f"`{name}`" in text or f'"{name}"' in text:
        return True
    for tpl in re.findall(r"\b(?:test|describe)\(`([^`]*\$\{[^`]*)`", text):
        parts = re.split(r"\$\{[^}]*\}", tpl)
        pat = "(.+?)".join(re.escape(p) for p in parts)
        m = re.fullmatch(pat, name)
        if m and all(g in text for g in m.groups()):
            return True
    return False


def missing():
    """Human-readable problems, one per citation that names nothing."""
    bad = []
    for kind, rel, name, no in citations():
        where = f"docs/conformance.md:{no}"
        if not os.path.isfile(os.path.join(ROOT, rel)):
            bad.append(f"{where}: {rel} does not exist")
            continue
        if name is None:
            continue
        text = read(rel)
        if kind == "it":
            if not re.search(rf"^def {re.escape(name)}\(", text, re.M):
                bad.append(f"{where}: {rel} has no test {name}")
        elif kind == "unit":
            if not re.search(rf"^static void {re.escape(name)}\(void \*\*state\)", text, re.M):
                bad.append(f"{where}: {rel} has no test {name}")
            elif not re.search(rf"\(\s*{re.escape(name)}\s*[,)]",
                               text[text.find("struct CMUnitTest"):]):
                bad.append(f"{where}: {rel} defines {name} but never runs it "
                           "(not in its CMUnitTest array)")
        elif not ws_has_test(text, name):
            bad.append(f"{where}: {rel} has no test named {name!r}")
    return bad


def test_the_document_cites_tests():
    """The parser still understands the document: it finds the hundreds of citations it
    has (a change of format must not turn this test into one that checks nothing)."""
    kinds = [c[0] for c in citations()]
    assert kinds.count("it") > 300 and kinds.count("unit") > 100 and "ws" in kinds, \
        {k: kinds.count(k) for k in ("it", "unit", "ws")}


def test_every_cited_test_exists():
    bad = missing()
    assert not bad, "docs/conformance.md cites tests that do not exist:\n" + "\n".join(bad)


if __name__ == "__main__":
    problems = missing()
    print("\n".join(problems) or f"all {len(citations())} citations found")
    raise SystemExit(1 if problems else 0)
