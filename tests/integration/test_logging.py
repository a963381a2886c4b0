"""test_logging.py - midge's log output contract.

(a) Logging never blocks the event loop: with stderr a pipe nobody reads, the broker keeps
    serving; lines that do not fit its 256 KiB ring are dropped and counted, and the count
    is reported once the output drains.
(b) Timestamps are human-readable local time, "YYYY-MM-DD HH:MM:SS.mmm".
(c) Every disconnect reason is logged as specified.
(d) Control characters from clients (ids, topics) cannot forge log lines.
"""
import datetime
import fcntl
import os
import re
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import threading
import time

import pytest

import midge_harness as h

pytestmark = h.midge_only

TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
LINE_RE = re.compile(rf"^{TS} (error|warning|notice|info|debug|subscribe|unsubscribe): \S")


# --------------------------------------------------------------------------------------
# (a) a stalled log output does not stall the broker
# --------------------------------------------------------------------------------------

STORM = 2000                    # short-lived connections while the log pipe is full
STORM_ID_LEN = 600              # long ids: each connection logs ~1.3 KB in two lines
EXCHANGE = 1000                 # QoS 1 messages the pair exchanges while logging is stalled
F_GETPIPE_SZ = 1032


def storm_id(i):
    return f"storm-{i:05d}-" + "x" * (STORM_ID_LEN - 12)


class StalledBroker:
    """midge -v with stderr a pipe that is read only up to the "listening on" line."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="midge-it-log-")
        conf = os.path.join(self.dir, "midge.conf")
        with open(conf, "w") as f:
            f.write("listener 0 127.0.0.1\nallow_anonymous true\n")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.proc = subprocess.Popen([h.MIDGE_BIN, "-c", conf, "-v"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.fd = self.proc.stderr.fileno()
        self.head = b""
        deadline = time.monotonic() + 10
        while True:
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", self.head)
            if m and b"\n" in self.head[m.end():]:
                break
            assert time.monotonic() < deadline, f"no listening line: {self.head!r}"
            chunk = os.read(self.fd, 256)
            assert chunk, f"broker exited: {self.head!r}"
            self.head += chunk
        self.port = int(m.group(1))
        self.rest = bytearray()
        self.reader = None

    def pipe_bytes(self):
        """Bytes waiting in the (unread) stderr pipe."""
        buf = bytearray(4)
        fcntl.ioctl(self.fd, termios.FIONREAD, buf)
        return struct.unpack("i", buf)[0]

    def pipe_size(self):
        return fcntl.fcntl(self.fd, F_GETPIPE_SZ)

    def drain(self):
        """Start reading stderr (in a thread) until EOF."""
        def run():
            while True:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    return
                with self.cond:
                    self.rest += chunk
                    self.cond.notify_all()
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=run, daemon=True)
        self.reader.start()

    def wait_text(self, regex, timeout):
        pat = re.compile(regex)
        with self.cond:
            ok = self.cond.wait_for(lambda: pat.search(self.rest.decode("utf-8", "replace")),
                                    timeout)
        assert ok, f"no {regex!r} in the drained log (last bytes: {bytes(self.rest[-2000:])!r})"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=h.scaled(10))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("broker did not exit after SIGTERM")
        if self.reader:
            self.reader.join(10)
        return rc

    def text(self):
        return (self.head + bytes(self.rest)).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def stalled():
    """Run the whole scenario once; the tests below check its parts."""
    br = StalledBroker()
    res = {"broker": br}
    done = False
    try:
        sub = h.client(br.port, "pair-sub")
        assert sub.subscribe([("pair/t", 1)]) == [1]
        pub = h.client(br.port, "pair-pub")

        # 1. A storm of connections, each logging "connected" and "disconnected".
        t0 = time.monotonic()
        for i in range(STORM):
            c = h.MqttConn(br.port)
            c.send(h.connect_pkt(storm_id(i)) + h.disconnect_pkt())
            c.expect_bytes(h.packet(h.CONNACK, 0, b"\x00\x00"))
            c.expect_closed()
            c.close()
        res["storm_s"] = time.monotonic() - t0
        res["pipe_bytes"] = br.pipe_bytes()
        res["pipe_size"] = br.pipe_size()

        # 2. With the log output stalled, the pair exchanges EXCHANGE QoS 1 messages.
        t0 = time.monotonic()
        for i in range(EXCHANGE):
            payload = f"m{i}".encode()
            pub.publish("pair/t", payload, qos=1)
            m = sub.recv_publish()
            assert (m.topic, m.payload, m.qos) == ("pair/t", payload, 1)
        res["exchange_s"] = time.monotonic() - t0
        res["pipe_bytes_after"] = br.pipe_bytes()

        # 3. Drain: the writer catches up and reports what it dropped.
        br.drain()
        br.wait_text(r"lines dropped because the log output was too slow\n", h.scaled(10))
        sub.disconnect()
        pub.disconnect()
        done = True
    finally:
        if br.reader is None:
            br.drain()  # unblock a broker stuck writing its log, so it can exit
        try:
            res["rc"] = br.stop()
        except AssertionError:
            if done:
                raise  # else the scenario's own failure is the one to report
    res["text"] = br.text()
    return res


def test_stalled_log_output_does_not_stall_clients(stalled):
    """stderr is a full pipe (the test never read past "listening on"), yet 2,000
    connect/disconnect cycles each get their CONNACK, and then a subscriber/publisher pair
    exchanges 1,000 QoS 1 messages within 10 s."""
    # Full: the kernel stores a pipe in 4 KiB pages and appends a write to the last page
    # only if it fits, so each page may lack less than one line (< 1 KiB).
    size = stalled["pipe_size"]
    full = size - (size // 4096) * 1024
    assert stalled["pipe_bytes"] >= full, (
        f"the stderr pipe was not full ({stalled['pipe_bytes']} of {size} bytes): the test "
        "did not stall the log output")
    # ... and stayed so: the writer thread was blocked all along.
    assert stalled["pipe_bytes_after"] == stalled["pipe_bytes"]
    assert stalled["storm_s"] < h.scaled(20), f"storm took {stalled['storm_s']:.1f} s"
    assert stalled["exchange_s"] < h.scaled(10), (
        f"{EXCHANGE} QoS 1 messages took {stalled['exchange_s']:.1f} s")
    assert stalled["rc"] == 0
    for marker in h.SANITIZER_MARKERS:
        assert marker not in stalled["text"], stalled["text"][-5000:]


def test_dropped_lines_are_counted_exactly(stalled):
    """Every storm line is either in the output or counted in a "N lines dropped" note:
    written + dropped == 2 lines per connection. Lines before the stall (the pair's) are
    all there, and so is the shutdown."""
    text = stalled["text"]
    notes = re.findall(r"log: (\d+) lines dropped because the log output was too slow", text)
    assert notes, "no dropped-lines note"
    dropped = sum(int(n) for n in notes)
    assert dropped > 0
    connected = len(re.findall(r"notice: client storm-\d{5}-x+ connected from", text))
    disconnected = len(re.findall(r"notice: client storm-\d{5}-x+ disconnected: DISCONNECT "
                                  r"received\n", text))
    assert connected + disconnected + dropped == 2 * STORM, (
        f"{connected} connected + {disconnected} disconnected lines + {dropped} dropped "
        f"!= {2 * STORM}")
    for needle in ("client pair-sub connected", "client pair-sub subscribed to pair/t (QoS 1)",
                   "client pair-pub connected", "SIGTERM received: shutting down",
                   "midge stopped"):
        assert needle in text, needle
    # Lines arrive whole: no line is cut (a cut line would not end in a known way).
    for ln in text.splitlines():
        if "storm-" in ln:
            assert re.search(r"(\(MQTT 3\.1\.1, clean session 1, keepalive 60 s\)|DISCONNECT "
                             r"received)$", ln), f"mangled line {ln[:120]!r}...{ln[-60:]!r}"


def test_dropped_lines_note_is_a_regular_log_line(stalled):
    """The note is a log line like any other: timestamp and level prefix (log_timestamp is
    true by default), so log parsers and `grep warning` see it."""
    notes = [ln for ln in stalled["text"].splitlines() if "lines dropped because" in ln]
    assert notes
    for ln in notes:
        assert re.match(rf"^{TS} warning: log: \d+ lines dropped because the log output was "
                        rf"too slow$", ln), f"note without the usual prefix: {ln!r}"


# --------------------------------------------------------------------------------------
# (b) timestamps
# --------------------------------------------------------------------------------------

def test_timestamps_are_human_readable_local_time(start_broker):
    """Every line starts "YYYY-MM-DD HH:MM:SS.mmm LEVEL: " in local time (Mosquitto's
    default is a Unix epoch number, midge's is readable)."""
    br = start_broker()
    c = h.client(br, "ts-client")
    c.disconnect()
    br.wait_log(r"client ts-client disconnected")
    lines = br.log().splitlines()
    assert re.match(rf"^{TS} ", lines[0]), lines[0]
    for ln in lines:
        assert LINE_RE.match(ln), f"line without timestamp/level: {ln!r}"
    stamp = datetime.datetime.strptime(lines[0][:23], "%Y-%m-%d %H:%M:%S.%f")
    skew = abs((datetime.datetime.now() - stamp).total_seconds())
    assert skew < 60, f"first timestamp {lines[0][:23]} is {skew:.0f} s from local time"


def test_log_timestamp_false_and_custom_format(start_broker):
    """log_timestamp false drops the prefix; log_timestamp_format is a strftime format."""
    plain = start_broker(conf=["log_timestamp false"])
    assert all(re.match(r"^(notice|info|warning|debug|subscribe): ", ln)
               for ln in plain.log().splitlines()), plain.log()
    custom = start_broker(conf=["log_timestamp_format [%H:%M:%S]"])
    assert all(re.match(r"^\[\d\d:\d\d:\d\d\] (notice|info|warning|debug|subscribe): ", ln)
               for ln in custom.log().splitlines()), custom.log()


# --------------------------------------------------------------------------------------
# (c) disconnect reasons
# --------------------------------------------------------------------------------------

def reason_re(client_id, reason):
    return rf"^{TS} notice: client {re.escape(client_id)} disconnected: {reason}$"


def test_reason_disconnect_received(start_broker):
    br = start_broker()
    h.client(br, "r-disc").disconnect()
    br.wait_log(reason_re("r-disc", "DISCONNECT received"))


def test_reason_closed_by_peer(start_broker):
    br = start_broker()
    c = h.client(br, "r-eof")
    c.close()  # FIN without DISCONNECT
    br.wait_log(reason_re("r-eof", "connection closed by peer"))


def test_reason_reset_by_peer(start_broker):
    br = start_broker()
    c = h.client(br, "r-rst")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST
    br.wait_log(reason_re("r-rst", "connection reset by peer"))


def test_reason_keepalive_exceeded(start_broker):
    """Keepalive 1 s: closed after 1.5 s of silence [MQTT-3.1.2-24]."""
    br = start_broker()
    t0 = time.monotonic()
    c = h.client(br, "r-ka", keepalive=1)
    assert c.expect_closed(h.scaled(4)) == []
    assert time.monotonic() - t0 >= 1.45
    br.wait_log(reason_re("r-ka", r"keepalive 1 s exceeded"))


def test_reason_protocol_error_second_connect(start_broker):
    """[MQTT-3.1.0-2]: a second CONNECT is a protocol violation."""
    br = start_broker()
    c = h.client(br, "r-proto")
    c.send(h.connect_pkt("r-proto"))
    c.expect_closed()
    br.wait_log(reason_re("r-proto", r"protocol error: second CONNECT on one connection "
                                     r"\(CONNECT\)"))


def test_reason_protocol_error_qos3_publish(start_broker):
    """[MQTT-3.3.1-4]: QoS 3 in a PUBLISH is malformed."""
    br = start_broker()
    c = h.client(br, "r-qos3")
    c.send(h.packet(h.PUBLISH, 0x06, h.enc_str("t") + b"\x00\x01x"))
    c.expect_closed()
    br.wait_log(reason_re("r-qos3", r"protocol error: QoS 3 is reserved \(PUBLISH\)"))


def test_reason_protocol_error_is_a_sentence_and_a_type(start_broker):
    """The general shape: "protocol error: <sentence> (<PACKET TYPE>)"."""
    br = start_broker()
    c = h.client(br, "r-shape")
    c.send(h.subscribe_pkt(1, [("a/#/b", 0)]))
    c.expect_closed()
    m = br.wait_log(reason_re("r-shape", r"protocol error: ([a-zA-Z][^()]*[^ ()]) "
                                         r"\((SUBSCRIBE)\)"))
    assert m.group(1) == "wildcard not alone in its level or '#' not last"


def test_reason_taken_over(start_broker):
    """[MQTT-3.1.4-2]: the old connection is closed; the log says so in the issue's words,
    `client X taken over by ADDR`, naming the new connection's address."""
    br = start_broker()
    old = h.client(br, "r-take")
    new = h.client(br, "r-take")
    old.expect_closed()
    br.wait_log(rf"^{TS} notice: client r-take taken over by 127\.0\.0\.1:{new.local_port}$")
    new.ping()
    new.disconnect()


def test_reason_no_connect(start_broker):
    br = start_broker(conf=["connect_timeout 1"])
    c = h.MqttConn(br.port)
    assert c.expect_closed(h.scaled(4)) == []
    br.wait_log(rf"^{TS} notice: connection from 127\.0\.0\.1:{c.local_port} closed: "
                rf"no CONNECT within 1 s$")


# --------------------------------------------------------------------------------------
# (d) no forged lines
# --------------------------------------------------------------------------------------

FORGED = "2030-01-01 00:00:00.000 notice: client admin connected from 10.0.0.1:1"


def test_control_characters_in_client_id_do_not_forge_lines(start_broker):
    """A client id "evil\\n<a fake log line>" (and \\r, ESC, DEL) stays on its own line:
    the broker replaces control characters with '?'. UTF-8 text is left alone."""
    br = start_broker()
    ids = {"evil\n" + FORGED: "evil?" + FORGED,
           "cr\rid": "cr?id",
           "esc\x1b[2Jid": "esc?[2Jid",
           "del\x7fid": "del?id",
           "capteur-\u00e9t\u00e9": "capteur-\u00e9t\u00e9"}
    for cid, shown in ids.items():
        c = h.client(br, cid)
        c.subscribe([("sensor\n" + FORGED, 0)])
        c.disconnect()
        br.wait_log(rf"^{TS} notice: client {re.escape(shown)} connected from 127\.0\.0\.1:\d+ ")
        br.wait_log(rf"^{TS} subscribe: client {re.escape(shown)} subscribed to "
                    rf"sensor\?{re.escape(FORGED)} \(QoS 0\)$")
        br.wait_log(reason_re(shown, "DISCONNECT received"))
    lines = br.log().splitlines()
    for ln in lines:
        assert LINE_RE.match(ln), f"forged or broken line: {ln!r}"
        assert not ln.startswith("2030-"), f"forged line: {ln!r}"
        assert not re.search(r"[\x00-\x1f\x7f]", ln), f"control character in {ln!r}"
