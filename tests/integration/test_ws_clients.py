"""test_ws_clients.py - runs the Node tests of tests/ws/ (node --test) against MIDGE_BIN.

tests/ws/ holds the WebSocket client tests that need npm packages: MQTT.js (`mqtt`) over
ws://, the page's own client (web/mqtt.js), and the page in headless Chromium through
`playwright-core` (tests/ws/README.md). This wrapper lets ctest run them like every other
tests/integration/test_*.py: one pytest test per tests/ws/*.test.mjs file, each starting
its own brokers. Needs node, the packages of tests/ws/package-lock.json (`npm ci` in
tests/ws, done by scripts/deps) and Debian's chromium for the browser test.

Screenshots go to MIDGE_ARTIFACTS, by default <directory of MIDGE_BIN>/test-artifacts.
"""
import glob
import os
import shutil
import subprocess

import pytest

import midge_harness as h

WS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ws")
TESTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(WS_DIR, "*.test.mjs")))


@pytest.mark.skipif(bool(h.REFERENCE), reason="the Node tests start their own broker "
                    "(MIDGE_WS_REFERENCE=mosquitto for a Mosquitto run)")
@pytest.mark.parametrize("name", TESTS)
def test_node(name):
    node = shutil.which("node")
    assert node, "node not found: install Debian's nodejs and npm (scripts/deps)"
    assert os.path.isdir(os.path.join(WS_DIR, "node_modules", "mqtt")), (
        "tests/ws/node_modules is missing: run `npm ci` in tests/ws (scripts/deps does)")
    env = dict(os.environ)
    env["MIDGE_BIN"] = os.path.abspath(h.MIDGE_BIN)
    env.setdefault("MIDGE_ARTIFACTS",
                   os.path.join(os.path.dirname(env["MIDGE_BIN"]), "test-artifacts"))
    env.pop("NODE_OPTIONS", None)
    # --test-force-exit: once every test has finished, a client socket some library left
    # open cannot keep node (and this test) waiting until the timeout; the brokers' own
    # clean exit is checked by the harness's stop().
    proc = subprocess.run(
        [node, "--test", "--test-force-exit", "--test-reporter=spec", name], cwd=WS_DIR, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=h.scaled(240))
    out = proc.stdout.decode("utf-8", "replace")
    print(out)
    assert proc.returncode == 0, f"node --test {name} failed (exit {proc.returncode}):\n{out}"
