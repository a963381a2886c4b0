"""test_paho_c.py - midge against Eclipse Paho's C client library (libpaho-mqtt3c).

The client is tests/integration/paho_c_client.c, built by tests/integration/CMakeLists.txt
into <build dir>/tests/integration/paho_c_client, i.e. next to MIDGE_BIN (PAHO_C_CLIENT
overrides the path). Its stdout: status lines start with "# ", each received message is
one line "TOPIC PAYLOAD QOS RETAINED". Exit status: 0 ok, 2 connect failed/refused,
3 subscribe/publish failed, 4 expected messages missing, 5 unexpected extra message.
"""
import os
import re
import signal
import subprocess
import threading

import pytest

import midge_harness as h

PAHO_C_CLIENT = os.environ.get("PAHO_C_CLIENT") or os.path.join(
    os.path.dirname(os.path.abspath(h.MIDGE_BIN)), "tests", "integration", "paho_c_client")


@pytest.fixture(autouse=True)
def _need_client():
    if not os.access(PAHO_C_CLIENT, os.X_OK):
        pytest.fail(f"{PAHO_C_CLIENT} not found: build the paho_c_client target "
                    "(tests/integration/CMakeLists.txt, needs libpaho-mqtt-dev)")


class PahoC:
    """One paho_c_client process; its stdout lines are collected as they arrive."""

    def __init__(self, port, client_id, *args):
        self.cmd = [PAHO_C_CLIENT, "-p", str(port), "-i", client_id] + [str(a) for a in args]
        env = dict(os.environ)
        # The client may be built with the sanitizers (build-asan); libpaho's own
        # process-lifetime allocations are not ours to report.
        env["ASAN_OPTIONS"] = "detect_leaks=0"
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.lines = []
        self.cond = threading.Condition()
        self.t = h.read_lines(self.proc.stdout, self.lines, self.cond)

    @property
    def messages(self):
        with self.cond:
            return [ln for ln in self.lines if not ln.startswith("# ")]

    def wait_line(self, regex, timeout=h.TIMEOUT):
        pat = re.compile(regex)
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pat.search(ln) for ln in self.lines)
                                    or not self.t.is_alive(), timeout)
            found = [ln for ln in self.lines if pat.search(ln)]
        assert ok and found, (f"paho_c_client: no line matching {regex!r}; "
                              f"output: {self.lines}; stderr: {self._stderr()}")
        return found[0]

    def _stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read().decode("utf-8", "replace")

    def finish(self, timeout=None):
        """Wait for exit; returns the exit status."""
        try:
            rc = self.proc.wait(timeout=timeout or h.scaled(15))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"paho_c_client did not exit; output: {self.lines}")
        self.t.join(5)
        return rc

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait()
        self.t.join(5)


def run_c(port, client_id, *args, expect_rc=0):
    """Run paho_c_client to completion; it must exit with expect_rc. Returns it."""
    c = PahoC(port, client_id, *args)
    rc = c.finish()
    assert rc == expect_rc, (f"{c.cmd} exited {rc} (expected {expect_rc}); "
                             f"output: {c.lines}; stderr: {c._stderr()}")
    return c


def test_publish_and_receive_all_qos_levels(start_broker):
    """The C client subscribes at QoS 2 and publishes one message per QoS: each comes back
    at the QoS it was published with (min(published, granted)) and retain 0; a Python paho
    subscriber at QoS 2 sees the same three. Every QoS flow completes (exit 0)."""
    br = start_broker()
    py = h.PahoClient(br.port, "py-watch")
    py.subscribe("pc/qos/#", 2)
    c = run_c(br.port, "pc-qos", "--sub", "pc/qos/#", 2,
              "--pub", "pc/qos/0", "zero", 0, 0,
              "--pub", "pc/qos/1", "one", 1, 0,
              "--pub", "pc/qos/2", "two", 2, 0,
              "--expect", 3, "--quiet", int(h.QUIET * 1000))
    assert "# subscribed pc/qos/# granted=2" in c.lines
    assert sorted(c.messages) == ["pc/qos/0 zero 0 0", "pc/qos/1 one 1 0", "pc/qos/2 two 2 0"]
    got = sorted((m.topic, m.payload, m.qos, m.retain) for m in (py.get() for _ in range(3)))
    assert got == [("pc/qos/0", b"zero", 0, 0), ("pc/qos/1", b"one", 1, 0),
                   ("pc/qos/2", b"two", 2, 0)]
    py.expect_nothing()
    py.close()
    br.wait_log(r"client pc-qos connected from 127\.0\.0\.1:\d+ \(MQTT 3\.1\.1, clean session 1, "
                r"keepalive 60 s\)")
    br.wait_log(r"client pc-qos subscribed to pc/qos/# \(QoS 2\)")
    br.wait_log(r"client pc-qos disconnected: DISCONNECT received")


def test_receive_from_other_client_with_qos_downgrade(start_broker):
    """Messages from a raw publisher reach the C client at min(published QoS, granted QoS):
    granted 1, published 0/1/2 -> 0/1/1, in publication order."""
    br = start_broker()
    c = PahoC(br.port, "pc-down", "--sub", "pc/down", 1, "--expect", 3,
              "--quiet", int(h.QUIET * 1000))
    c.wait_line(r"^# subscribed pc/down granted=1$")
    pub = h.client(br, "raw-pub")
    pub.publish("pc/down", b"a", qos=0)
    pub.publish("pc/down", b"b", qos=1)
    pub.publish("pc/down", b"c", qos=2)
    pub.disconnect()
    assert c.finish() == 0, c.lines
    assert c.messages == ["pc/down a 0 0", "pc/down b 1 0", "pc/down c 1 0"]


def test_retained_message_seen_by_later_subscriber(start_broker):
    """A retained QoS 1 message published by the C client reaches a C subscriber that
    subscribes afterwards, with the retained flag set [MQTT-3.3.1-8]; a live message on the
    same topic afterwards arrives with retain 0 [MQTT-3.3.1-9]."""
    br = start_broker()
    run_c(br.port, "pc-retpub", "--pub", "pc/ret", "kept", 1, 1)
    br.wait_log(r"client pc-retpub disconnected: DISCONNECT received")
    late = PahoC(br.port, "pc-retsub", "--sub", "pc/ret", 2, "--expect", 2)
    late.wait_line(r"^pc/ret kept 1 1$")
    run_c(br.port, "pc-livepub", "--pub", "pc/ret", "live", 1, 0)
    assert late.finish() == 0, late.lines
    assert late.messages == ["pc/ret kept 1 1", "pc/ret live 1 0"]
    # And a third subscriber still gets the retained one (the live one was not retained).
    again = run_c(br.port, "pc-retsub2", "--sub", "pc/ret", 0, "--expect", 1,
                  "--quiet", int(h.QUIET * 1000))
    assert again.messages == ["pc/ret kept 0 1"]


def test_clean_session_0_queues_while_offline(start_broker):
    """Clean session 0: the C client subscribes at QoS 1 and disconnects; a QoS 1 message
    published meanwhile arrives when it reconnects with clean session 0 (session present 1),
    without subscribing again [MQTT-3.1.2-4]."""
    br = start_broker()
    first = run_c(br.port, "pc-persist", "-c", 0, "--sub", "pc/offline", 1)
    assert "# connected session_present=0" in first.lines
    br.wait_log(r"client pc-persist disconnected: DISCONNECT received")
    pub = h.PahoClient(br.port, "py-pub")
    pub.publish("pc/offline", b"while-away", qos=1)
    pub.publish("pc/offline", b"second", qos=1)
    pub.close()
    back = run_c(br.port, "pc-persist", "-c", 0, "--expect", 2, "--quiet",
                 int(h.QUIET * 1000))
    assert "# connected session_present=1" in back.lines
    assert back.messages == ["pc/offline while-away 1 0", "pc/offline second 1 0"]
    br.wait_log(r"client pc-persist connected from 127\.0\.0\.1:\d+ \(MQTT 3\.1\.1, clean "
                r"session 0, keepalive 60 s, session resumed\)")
    # Queued messages were delivered once: a third connection finds nothing.
    third = run_c(br.port, "pc-persist", "-c", 0, "--quiet", int(h.QUIET * 1000))
    assert "# connected session_present=1" in third.lines
    assert third.messages == []


def test_will_published_when_client_is_killed(start_broker):
    """SIGKILL of the C client: the kernel closes its socket without DISCONNECT, so the
    broker publishes its will (QoS 1, not retained) to a mosquitto_sub subscriber
    [MQTT-3.1.2-8]; the log gives the reason."""
    br = start_broker()
    sub = h.SubProc(br.port, "-t", "pc/will", "-q", "1", "-v", "-C", "1", "-i", "sub-will")
    c = PahoC(br.port, "pc-will", "-u", "maker", "-P", "secret", "-k", 30,
              "--will", "pc/will", "pc-will died", 1, 0, "--hold")
    c.wait_line(r"^# holding$")
    br.wait_log(r"client pc-will connected from 127\.0\.0\.1:\d+ \(MQTT 3\.1\.1, clean session 1, "
                r"keepalive 30 s, with user name\)")
    assert sub.messages == []
    mark = br.mark()
    c.kill(signal.SIGKILL)
    assert sub.finish() == 0
    assert sub.messages == ["pc/will pc-will died"]
    br.wait_log(r"client pc-will disconnected: connection closed by peer$", since=mark)


def test_will_not_published_after_clean_disconnect(start_broker):
    """Contrast: the same client ending with DISCONNECT has its will discarded
    [MQTT-3.1.2-10]."""
    br = start_broker()
    watch = h.PahoClient(br.port, "py-will-watch")
    watch.subscribe("pc/will2", 1)
    run_c(br.port, "pc-will2", "--will", "pc/will2", "gone", 1, 0)
    br.wait_log(r"client pc-will2 disconnected: DISCONNECT received")
    watch.expect_nothing()
    watch.close()


def test_refused_connect_reports_connack_code(start_broker):
    """A refusal reaches libpaho as the CONNACK code: with clientid_prefixes, another id
    gets 2 (identifier rejected)."""
    br = start_broker(conf=["clientid_prefixes esp32-"])
    c = run_c(br.port, "laptop", expect_rc=2)
    assert "# connect failed rc=2" in c.lines
    run_c(br.port, "esp32-c0ffee", "--quiet", 100)
