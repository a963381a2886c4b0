"""midge_harness.py - shared helpers for midge's integration tests.

Owns: starting/stopping the real broker binary (Broker), a byte-exact raw MQTT 3.1.1
client (encoders for every packet, a packet reader with timeouts), its MQTT 5 dialect
(MqttConn5: properties, every packet with reason codes, decoders for what the broker
sends), paho-mqtt helpers (3.1.1 and MQTTv5) and helpers around mosquitto_pub /
mosquitto_sub. Tests synchronise on conditions
(packets, log lines, process output) with timeouts, never on fixed sleeps.

Environment: MIDGE_BIN (binary under test), MIDGE_SANITIZE (ON = slower timeouts),
MIDGE_REFERENCE (non-empty = MIDGE_BIN is a stand-in such as Mosquitto: midge's own
log lines are not checked and midge-only CLI tests are skipped), MIDGE_REQUIRE_DEPS
(set by ctest: a test whose needs() are missing fails instead of being skipped).
"""
import atexit
import collections
import os
import queue
import re
import select
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time

import pytest

MIDGE_BIN = os.environ.get("MIDGE_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "midge")
SANITIZE = os.environ.get("MIDGE_SANITIZE", "OFF").upper() in ("ON", "1", "TRUE", "YES")
REFERENCE = os.environ.get("MIDGE_REFERENCE", "")
SLOW = 3.0 if SANITIZE else 1.0

# Default waits (seconds): generous for things that must happen, short for "must not".
TIMEOUT = 5.0 * SLOW
QUIET = 0.5

# Any of these in a process's output is a sanitizer report. An ASan or UBSan abort exits
# with status 1 by default, like an ordinary refusal: a refusal test must check both.
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                     "runtime error:")
LISTEN_RE = r"listening on 127\.0\.0\.1:(\d+)"

# Packet types.
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14
AUTH = 15  # MQTT 5 only
TYPE_NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
              7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
              12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}

midge_only = pytest.mark.skipif(bool(REFERENCE), reason="checks midge's own CLI/log contract")

# Skips come in two kinds. By design or by the machine: a reference run (midge_only), the
# sanitizer build, not being root, no tmpfs mount; those stay skips, and ctest's output
# lists them (pytest -rs). By something missing that scripts/deps installs or the build
# makes: under ctest (CMakeLists.txt sets MIDGE_REQUIRE_DEPS=1) that is a failure, since
# a skipped file still passes as one ctest test; by hand (plain pytest) it is a skip.
REQUIRE_DEPS = os.environ.get("MIDGE_REQUIRE_DEPS", "").upper() not in ("", "0", "OFF", "NO")


def needs(*paths, reason):
    """Mark a test (or a module, as pytestmark) that needs these files: a program from a
    Debian package of scripts/deps, or one the build makes. conftest.py checks them before
    the test: when one is missing it fails the test under ctest (MIDGE_REQUIRE_DEPS) and
    skips it otherwise. Not for what a machine may lack by design (use pytest.skip)."""
    return pytest.mark.midge_needs(paths=tuple(paths), reason=reason)


def check_needs(item):
    """conftest.py's hook for the needs() marks of a test item: skip or fail."""
    for mark in item.iter_markers("midge_needs"):
        missing = [p for p in mark.kwargs["paths"] if not os.path.exists(p)]
        if not missing:
            continue
        msg = f"{mark.kwargs['reason']}: {', '.join(missing)} missing"
        if REQUIRE_DEPS:
            pytest.fail(f"{msg} (MIDGE_REQUIRE_DEPS: under ctest a missing dependency fails "
                        "the test; scripts/deps installs the packages, the build makes the "
                        "programs)", pytrace=False)
        pytest.skip(msg)


def scaled(t):
    """A timeout for something that must happen, stretched under sanitizers."""
    return t * SLOW


def assert_no_sanitizer_report(text, what="midge's output"):
    """Fail if text holds a sanitizer report (any of SANITIZER_MARKERS)."""
    for marker in SANITIZER_MARKERS:
        assert marker not in text, f"sanitizer report ({marker}) in {what}:\n{text}"


def run_midge(*args, rc=1, timeout=10, env=None):
    """Run MIDGE_BIN with args to completion (it must exit within scaled(timeout) s).
    Its exit status must be exactly rc and neither stream may hold a sanitizer report.
    Returns the CompletedProcess with .stdout and .stderr as text."""
    r = subprocess.run([MIDGE_BIN] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, errors="replace", env=env,
                       timeout=scaled(timeout))
    assert_no_sanitizer_report(r.stdout + r.stderr, f"the output of midge {args}")
    assert r.returncode == rc, (f"midge {args} exited with status {r.returncode}, not {rc}:\n"
                                f"{r.stdout}{r.stderr}")
    return r


# --------------------------------------------------------------------------------------
# Broker process
# --------------------------------------------------------------------------------------

def db_rows(dbdir, sql):
    """The rows of sql on the broker's store in dbdir (midge.db), opened read-only."""
    con = sqlite3.connect(f"file:{dbdir}/midge.db?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def terminate(proc, timeout):
    """SIGTERM proc (a subprocess.Popen) unless it has exited, and wait for it; SIGKILL it if
    it is still there after timeout seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_lines(stream, lines, cond):
    """Start a daemon thread that appends each line of stream (a process's pipe; decoded,
    newline stripped) to the list lines, notifying the Condition cond after each line and
    at EOF. Returns the thread."""
    def run():
        for raw in iter(stream.readline, b""):
            with cond:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                cond.notify_all()
        with cond:
            cond.notify_all()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class Broker:
    """The real broker binary on an ephemeral loopback port.

    conf: extra mosquitto.conf lines. With use_config (default) the broker runs as
    `MIDGE_BIN -c CONF -v` where CONF starts with `listener 0 127.0.0.1` and (if
    anonymous) `allow_anonymous true`. args replaces the whole argument list.
    """

    def __init__(self, conf=(), anonymous=True, args=None, listener=True, expect_listen=True):
        self.dir = tempfile.mkdtemp(prefix="midge-it-")
        self.conf_path = None
        if args is None:
            lines = []
            if listener:
                lines.append("listener 0 127.0.0.1")
            if anonymous:
                lines.append("allow_anonymous true")
            lines.extend(conf)
            self.conf_path = os.path.join(self.dir, "midge.conf")
            with open(self.conf_path, "w") as f:
                f.write("\n".join(lines) + "\n")
            args = ["-c", self.conf_path, "-v"]
        self.args = [MIDGE_BIN] + list(args)
        self.lines = []
        self.cond = threading.Condition()
        self.stopped = False
        self.port = None
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:quarantine_size_mb=16")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self._readers = [read_lines(s, self.lines, self.cond)
                         for s in (self.proc.stderr, self.proc.stdout)]
        if expect_listen:
            try:
                m = self.wait_log_always(LISTEN_RE, timeout=10.0)
            except AssertionError:
                self.kill()
                raise
            self.port = int(m.group(1))

    # -- logs ---------------------------------------------------------------------------
    def log(self):
        with self.cond:
            return "\n".join(self.lines)

    def mark(self):
        """Index of the next log line; pass as since= to only look at later lines."""
        with self.cond:
            return len(self.lines)

    def wait_log_always(self, regex, timeout=TIMEOUT, since=0):
        """Wait for a log line matching regex (re.search); return the match or fail."""
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.lines):
                    m = pat.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self.proc.poll() is not None and all(not t.is_alive() for t in self._readers):
                    break
                self.cond.wait(min(left, 0.1))
        raise AssertionError(f"no log line matching {regex!r} within {timeout:.1f} s; "
                             f"broker log:\n{self.log()}")

    def wait_log(self, regex, timeout=TIMEOUT, since=0):
        """Like wait_log_always, but a no-op (returns None) against a reference broker,
        whose log lines differ from midge's contract."""
        if REFERENCE:
            return None
        return self.wait_log_always(regex, timeout, since)

    def assert_no_log(self, regex, since=0):
        if REFERENCE:
            return
        pat = re.compile(regex)
        with self.cond:
            bad = [ln for ln in self.lines[since:] if pat.search(ln)]
        assert not bad, f"unexpected log lines matching {regex!r}: {bad}"

    # -- lifecycle ----------------------------------------------------------------------
    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, check=True):
        """Signal the broker, wait for exit, return the exit status. With check, the
        status must be 0 within 10 s and stderr must hold no sanitizer report."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=10 * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            for t in self._readers:
                t.join(5)
            raise AssertionError(f"broker did not exit within {10 * SLOW:.0f} s of signal "
                                 f"{sig}; log:\n{self.log()}")
        for t in self._readers:
            t.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)
        if check:
            text = self.log()
            assert_no_sanitizer_report(text, "the broker's output")
            assert rc == 0, f"broker exited with status {rc}; log:\n{text}"
        return rc

    def wait_exit(self, rc=1, timeout=10):
        """For a broker that must end by itself (a refused start): wait up to
        scaled(timeout) s for its exit; its status must be exactly rc and its output must
        hold no sanitizer report. Its log stays readable (wait_log_always)."""
        try:
            got = self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"broker still running after {scaled(timeout):.0f} s; "
                                 f"log:\n{self.log()}")
        for t in self._readers:
            t.join(5)
        self.stopped = True
        shutil.rmtree(self.dir, ignore_errors=True)
        text = self.log()
        assert_no_sanitizer_report(text, "the broker's output")
        assert got == rc, f"broker exited with status {got}, not {rc}; log:\n{text}"
        return got

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stopped = True
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Byte-exact encoders
# --------------------------------------------------------------------------------------

def enc_len(n):
    """Remaining-length varint."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def split_varint(data, off):
    """A variable byte integer at data[off:]: (value, offset after it), or None while data
    ends inside it. At most 4 bytes."""
    n, mult, i = 0, 1, off
    while True:
        if i >= len(data):
            return None
        byte = data[i]
        n += (byte & 0x7F) * mult
        mult *= 128
        i += 1
        if not byte & 0x80:
            return n, i
        assert i - off < 4, "variable byte integer longer than 4 bytes"


def enc_str(s):
    """Length-prefixed string; str is UTF-8 encoded, bytes are sent verbatim."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    return struct.pack("!H", len(s)) + s


def b(x):
    if x is None:
        return b""
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | (flags & 0x0F)]) + enc_len(len(body)) + body


def connect_pkt(client_id="", clean=True, keepalive=60, will=None, username=None,
                password=None, proto_name="MQTT", proto_level=4, reserved=False,
                flags=None, will_flags=None, header_flags=0, props=None, will_props=()):
    """CONNECT. will = (topic, payload, qos, retain). flags overrides the whole
    connect-flags byte; will_flags=(qos, retain) sets will bits without a will. props: the
    MQTT 5 property block (props_section), and will_props the will's; None: MQTT 3.x."""
    f = 0
    if clean:
        f |= 0x02
    payload = enc_str(client_id)
    if will is not None:
        wtopic, wpayload, wqos, wretain = will
        f |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
        if props is not None:
            payload += props_section(will_props)
        payload += enc_str(wtopic) + enc_str(b(wpayload))
    if will_flags is not None:
        f |= (will_flags[0] << 3) | (0x20 if will_flags[1] else 0)
    if username is not None:
        f |= 0x80
        payload += enc_str(username)
    if password is not None:
        f |= 0x40
        payload += enc_str(b(password))
    if reserved:
        f |= 0x01
    if flags is not None:
        f = flags
    body = enc_str(proto_name) + bytes([proto_level, f]) + struct.pack("!H", keepalive)
    if props is not None:
        body += props_section(props)
    return packet(CONNECT, header_flags, body + payload)


def publish_pkt(topic, payload=b"", qos=0, retain=False, dup=False, pid=None, props=None):
    """PUBLISH; a pid with QoS 0 is sent anyway (a malformed packet). props: the MQTT 5
    property block (props_section); None: MQTT 3.x."""
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = enc_str(topic)
    if qos > 0:
        body += struct.pack("!H", 1 if pid is None else pid)
    elif pid is not None:
        body += struct.pack("!H", pid)
    if props is not None:
        body += props_section(props)
    return packet(PUBLISH, flags, body + b(payload))


def puback_pkt(pid):
    return packet(PUBACK, 0, struct.pack("!H", pid))


def pubrec_pkt(pid):
    return packet(PUBREC, 0, struct.pack("!H", pid))


def pubrel_pkt(pid, flags=2):
    return packet(PUBREL, flags, struct.pack("!H", pid))


def pubcomp_pkt(pid):
    return packet(PUBCOMP, 0, struct.pack("!H", pid))


def subscribe_pkt(pid, topics, flags=2, props=None):
    """topics: list of (filter, requested-qos-byte, or MQTT 5 subscription options). props:
    the MQTT 5 property block (props_section); None: MQTT 3.x."""
    body = struct.pack("!H", pid) + (b"" if props is None else props_section(props))
    for flt, q in topics:
        body += enc_str(flt) + bytes([q])
    return packet(SUBSCRIBE, flags, body)


def unsubscribe_pkt(pid, filters, flags=2, props=None):
    body = struct.pack("!H", pid) + (b"" if props is None else props_section(props))
    for flt in filters:
        body += enc_str(flt)
    return packet(UNSUBSCRIBE, flags, body)


def pingreq_pkt(flags=0):
    return packet(PINGREQ, flags, b"")


def disconnect_pkt(flags=0):
    return packet(DISCONNECT, flags, b"")


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------

class Packet(collections.namedtuple("Packet", "type flags body")):
    def raw(self):
        return packet(self.type, self.flags, self.body)

    def __repr__(self):
        name = TYPE_NAMES.get(self.type, self.type)
        return f"<{name} flags={self.flags:#x} body={self.body[:60]!r}>"


Publish = collections.namedtuple("Publish", "topic payload qos retain dup pid")


def parse_publish(p):
    assert p.type == PUBLISH, f"expected PUBLISH, got {p!r}"
    qos = (p.flags >> 1) & 3
    assert qos != 3, "server sent QoS 3"
    (tlen,) = struct.unpack("!H", p.body[:2])
    topic = p.body[2:2 + tlen]
    rest = p.body[2 + tlen:]
    pid = None
    if qos:
        (pid,) = struct.unpack("!H", rest[:2])
        rest = rest[2:]
    return Publish(topic.decode("utf-8"), rest, qos, bool(p.flags & 1), bool(p.flags & 8), pid)


class Closed(Exception):
    """The server closed the connection."""


class MqttConn:
    """A raw-socket MQTT 3.1.1 client for byte-exact conversations."""

    def __init__(self, port, host="127.0.0.1", family=socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pending = collections.deque()
        self.closed = False
        self.next_pid = 1
        self.local_port = self.sock.getsockname()[1]

    # -- raw I/O ------------------------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _parse_one(self):
        """The next whole packet in buf (taken out of it), or None."""
        length = split_varint(self.buf, 1)
        if length is None:
            return None
        n, i = length
        self._check_length(n, i - 1)
        if len(self.buf) < i + n:
            return None
        first = self.buf[0]
        p = Packet(first >> 4, first & 0x0F, self.buf[i:i + n])
        self.buf = self.buf[i + n:]
        return p

    def _check_length(self, n, size):
        """The remaining length n took size bytes: any form will do in MQTT 3.1.1."""

    def _recv_socket(self, deadline):
        """The next bytes from the socket; None on timeout; raise Closed on EOF/reset."""
        left = max(0.0, deadline - time.monotonic())
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            return None
        try:
            data = self.sock.recv(1 << 20)
        except (ConnectionResetError, ConnectionAbortedError):
            data = b""
        if not data:
            self.closed = True
            raise Closed()
        return data

    def _fill(self, deadline):
        """Read more bytes; False on timeout; raise Closed on EOF/reset."""
        data = self._recv_socket(deadline)
        if data is None:
            return False
        self.buf += data
        return True

    def _read_fresh(self, deadline):
        """Next packet from the socket, bypassing pending; None at the deadline; raises
        Closed."""
        while True:
            p = self._parse_one()
            if p is not None:
                return p
            if self.closed:
                raise Closed()
            if not self._fill(deadline):
                return None

    def read_packet(self, timeout=TIMEOUT):
        """Next packet (pending first), None on timeout; raises Closed."""
        if self.pending:
            return self.pending.popleft()
        return self._read_fresh(time.monotonic() + timeout)

    def recv(self, timeout=TIMEOUT):
        """Next packet; fails the test on timeout or close."""
        try:
            p = self.read_packet(timeout)
        except Closed:
            raise AssertionError("connection closed by server while a packet was expected")
        assert p is not None, f"no packet within {timeout:.1f} s"
        return p

    def expect(self, ptype, timeout=TIMEOUT, flags=None):
        p = self.recv(timeout)
        assert p.type == ptype, f"expected {TYPE_NAMES[ptype]}, got {p!r}"
        if flags is not None:
            assert p.flags == flags, f"{TYPE_NAMES[ptype]} flags {p.flags:#x} != {flags:#x}"
        return p

    def expect_bytes(self, data, timeout=TIMEOUT):
        """The next packet must be exactly these bytes."""
        p = self.recv(timeout)
        assert p.raw() == data, f"expected {data.hex(' ')}, got {p.raw().hex(' ')} ({p!r})"
        return p

    def expect_no_packet(self, t=QUIET):
        """Nothing arrives within t seconds and the connection stays open."""
        try:
            p = self.read_packet(t)
        except Closed:
            raise AssertionError(f"connection closed by server within {t:.1f} s")
        assert p is None, f"unexpected packet {p!r}"

    def expect_closed(self, timeout=TIMEOUT, allow=()):
        """The server closes the connection within timeout. Packets received before the
        close must have a type in allow; they are returned."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                p = self.read_packet(max(0.0, deadline - time.monotonic()))
            except Closed:
                return got
            except OSError:
                return got
            if p is None:
                raise AssertionError(f"connection still open after {timeout:.1f} s "
                                     f"(received {got!r})")
            assert p.type in allow, f"unexpected packet {p!r} before close"
            got.append(p)

    def is_open(self, t=0.05):
        try:
            p = self.read_packet(t)
        except Closed:
            return False
        if p is not None:
            self.pending.appendleft(p)
        return True

    # -- protocol helpers ---------------------------------------------------------------
    def alloc_pid(self):
        pid = self.next_pid
        self.next_pid = self.next_pid % 65535 + 1
        return pid

    def connect(self, client_id="", expect_rc=0, expect_sp=None, **kw):
        """Send CONNECT and read CONNACK; returns session-present (bool)."""
        self.send(connect_pkt(client_id, **kw))
        p = self.expect(CONNACK, flags=0)
        assert len(p.body) == 2, f"CONNACK remaining length {len(p.body)} != 2"
        assert p.body[0] & 0xFE == 0, f"CONNACK reserved acknowledge flags set: {p.body[0]:#x}"
        sp, rc = p.body[0] & 1, p.body[1]
        assert rc == expect_rc, f"CONNACK return code {rc} != {expect_rc}"
        if expect_sp is not None:
            assert sp == int(expect_sp), f"session present {sp} != {int(expect_sp)}"
        return bool(sp)

    def subscribe(self, topics, pid=None, timeout=TIMEOUT):
        """topics: [(filter, qos)] or a single filter string (QoS 0). Returns SUBACK codes."""
        if isinstance(topics, (str, bytes)):
            topics = [(topics, 0)]
        pid = self.alloc_pid() if pid is None else pid
        self.send(subscribe_pkt(pid, topics))
        p = self._await(SUBACK, timeout)
        assert p.flags == 0, f"SUBACK flags {p.flags:#x}"
        (got,) = struct.unpack("!H", p.body[:2])
        assert got == pid, f"SUBACK packet id {got} != {pid}"
        codes = list(p.body[2:])
        assert len(codes) == len(topics), f"SUBACK has {len(codes)} codes for {len(topics)} filters"
        return codes

    def unsubscribe(self, filters, pid=None, timeout=TIMEOUT):
        if isinstance(filters, (str, bytes)):
            filters = [filters]
        pid = self.alloc_pid() if pid is None else pid
        self.send(unsubscribe_pkt(pid, filters))
        p = self._await(UNSUBACK, timeout)
        assert p.raw() == packet(UNSUBACK, 0, struct.pack("!H", pid)), f"bad UNSUBACK {p!r}"

    def _await(self, ptype, timeout):
        """Read packets until ptype arrives, queueing the others (e.g. retained PUBLISHes
        the server may send before the SUBACK) for later reads."""
        for i, p in enumerate(self.pending):
            if p.type == ptype:
                del self.pending[i]
                return p
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            try:
                p = self._read_fresh(deadline)
            except Closed:
                raise AssertionError(f"connection closed waiting for {TYPE_NAMES[ptype]}")
            if p is None:
                raise AssertionError(f"no {TYPE_NAMES[ptype]} within {timeout:.1f} s "
                                     f"(got {skipped!r})")
            if p.type == ptype:
                self.pending.extend(skipped)
                return p
            skipped.append(p)

    def publish(self, topic, payload=b"", qos=0, retain=False, dup=False, pid=None, wait=True):
        """Send PUBLISH; for QoS 1/2 complete the handshake (byte-exact acks) when wait.
        Returns the packet id used (None for QoS 0)."""
        if qos and pid is None:
            pid = self.alloc_pid()
        self.send(publish_pkt(topic, payload, qos, retain, dup, pid))
        if wait and qos == 1:
            p = self._await(PUBACK, TIMEOUT)
            assert p.raw() == puback_pkt(pid), f"bad PUBACK {p.raw().hex(' ')} for id {pid}"
        elif wait and qos == 2:
            p = self._await(PUBREC, TIMEOUT)
            assert p.raw() == pubrec_pkt(pid), f"bad PUBREC {p.raw().hex(' ')} for id {pid}"
            self.send(pubrel_pkt(pid))
            p = self._await(PUBCOMP, TIMEOUT)
            assert p.raw() == pubcomp_pkt(pid), f"bad PUBCOMP {p.raw().hex(' ')} for id {pid}"
        return pid

    def recv_publish(self, timeout=TIMEOUT, ack=True):
        """Next packet must be a PUBLISH; parse it and (if ack) acknowledge it: PUBACK for
        QoS 1, PUBREC + wait PUBREL + PUBCOMP for QoS 2."""
        p = self.recv(timeout)
        assert p.type == PUBLISH, f"expected PUBLISH, got {p!r}"
        m = parse_publish(p)
        if m.qos == 0:
            assert m.dup is False, "[MQTT-3.3.1-2] QoS 0 PUBLISH with DUP 1"
        else:
            assert m.pid != 0, "[MQTT-2.3.1-1] server sent packet identifier 0"
        if ack and m.qos == 1:
            self.send(puback_pkt(m.pid))
        elif ack and m.qos == 2:
            self.send(pubrec_pkt(m.pid))
            rel = self._await(PUBREL, timeout)
            assert rel.raw() == pubrel_pkt(m.pid), f"bad PUBREL {rel.raw().hex(' ')}"
            self.send(pubcomp_pkt(m.pid))
        return m

    def collect(self, n, timeout=TIMEOUT, ack=True):
        """Receive exactly n PUBLISHes (within timeout overall)."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"received only {len(out)} of {n} messages: {out[-3:]!r}"
            out.append(self.recv_publish(left, ack))
        return out

    def ping(self, timeout=TIMEOUT):
        self.send(pingreq_pkt())
        self._await(PINGRESP, timeout)

    def disconnect(self):
        try:
            self.send(disconnect_pkt())
        except OSError:
            pass
        self.close()


def expect_quiet(conns, t=QUIET):
    """Prove that none of conns receives a packet (or is closed) within t seconds, waiting
    once for all of them."""
    time.sleep(t)
    for c in conns:
        c.expect_no_packet(0)


def client(broker_or_port, client_id="", *, conn_class=MqttConn, **kw):
    """Open a raw connection (a conn_class) and complete CONNECT/CONNACK (return code 0)."""
    port = broker_or_port.port if isinstance(broker_or_port, Broker) else broker_or_port
    c = conn_class(port)
    c.connect(client_id, **kw)
    return c


# --------------------------------------------------------------------------------------
# paho-mqtt (1.x API)
# --------------------------------------------------------------------------------------

class PahoBase:
    """What PahoClient and Paho5 share: paho's client .c on its own network thread, the
    messages it receives in the queue .messages; NAME starts every failure message."""

    NAME = "paho"

    def publish(self, topic, payload, qos=0, retain=False, props=None):
        """Publish (props: MQTT 5 Properties, Paho5 only) and, for QoS 1/2, wait until the
        flow is complete."""
        info = self.c.publish(topic, payload, qos, retain, properties=props)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"{self.NAME}: publish not completed"

    def get(self, timeout=TIMEOUT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.NAME}: no message within {timeout:.1f} s")

    def expect_nothing(self, t=QUIET):
        try:
            m = self.messages.get(timeout=t)
        except queue.Empty:
            return
        raise AssertionError(f"{self.NAME}: unexpected message {m.topic} {m.payload!r}")


class PahoClient(PahoBase):
    """paho-mqtt client on its own network thread; received messages go to a queue."""

    def __init__(self, port, client_id="", clean_session=True, keepalive=60, will=None,
                 protocol=None, username=None, password=None):
        import paho.mqtt.client as mqtt
        self.mqtt = mqtt
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.rc = None
        self.flags = None
        self.subacks = {}
        self.sub_cond = threading.Condition()
        proto = protocol if protocol is not None else mqtt.MQTTv311
        self.c = mqtt.Client(client_id=client_id, clean_session=clean_session, protocol=proto)
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos, retain)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = self._on_subscribe
        self.c.connect("127.0.0.1", port, keepalive)
        self.c.loop_start()
        assert self.connected.wait(TIMEOUT), "paho: no CONNACK"
        assert self.rc == 0, f"paho: CONNACK return code {self.rc}"

    def _on_connect(self, c, userdata, flags, rc):
        self.rc = rc
        self.flags = flags
        self.connected.set()

    def _on_subscribe(self, c, userdata, mid, granted):
        with self.sub_cond:
            self.subacks[mid] = granted
            self.sub_cond.notify_all()

    def subscribe(self, topic, qos=0):
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == 0
        with self.sub_cond:
            assert self.sub_cond.wait_for(lambda: mid in self.subacks, TIMEOUT), "paho: no SUBACK"
            return self.subacks[mid]

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


# --------------------------------------------------------------------------------------
# mosquitto_pub / mosquitto_sub
# --------------------------------------------------------------------------------------

MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"


def run_pub(port, *args, timeout=None):
    """Run mosquitto_pub against the broker; it must exit 0."""
    cmd = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(port)] + list(args)
    r = subprocess.run(cmd, capture_output=True, timeout=timeout or scaled(10))
    assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    return r


_LIVE_SUBS = []


@atexit.register
def _stop_subs():
    """Never leave a mosquitto_sub behind, whatever a test did."""
    for sp in _LIVE_SUBS:
        sp.stop()


class SubProc:
    """mosquitto_sub in debug mode (-d) so the test can wait until it is subscribed.
    Non-debug output lines (the messages) are collected in .messages."""

    DEBUG_RE = re.compile(r"^(Client \S+ (sending|received) |Subscribed \(mid)")

    def __init__(self, port, *args):
        # stdbuf: line-buffer its stdout so the debug lines arrive while it runs.
        self.cmd = ["/usr/bin/stdbuf", "-oL", MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port),
                    "-d"] + list(args)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = []
        self.cond = threading.Condition()
        self.t = read_lines(self.proc.stdout, self.lines, self.cond)
        _LIVE_SUBS.append(self)
        try:
            self.wait_line(r"^Subscribed \(mid", debug=True)
        except AssertionError:
            self.stop()
            raise

    @property
    def messages(self):
        with self.cond:
            return [ln for ln in self.lines if not self.DEBUG_RE.search(ln)]

    def wait_line(self, regex, timeout=None, debug=False):
        pat = re.compile(regex)
        timeout = timeout or TIMEOUT
        with self.cond:
            ok = self.cond.wait_for(
                lambda: any(pat.search(ln) for ln in self.lines
                            if debug or not self.DEBUG_RE.search(ln))
                or (self.proc.poll() is not None and not self.t.is_alive()), timeout)
            found = any(pat.search(ln) for ln in self.lines
                        if debug or not self.DEBUG_RE.search(ln))
        assert ok and found, f"mosquitto_sub: no line matching {regex!r}; output: {self.lines}"

    def wait_messages(self, n, timeout=None):
        timeout = timeout or TIMEOUT
        with self.cond:
            self.cond.wait_for(lambda: len([ln for ln in self.lines
                                            if not self.DEBUG_RE.search(ln)]) >= n, timeout)
        msgs = self.messages
        assert len(msgs) >= n, f"mosquitto_sub printed {msgs}, expected {n} messages"
        return msgs

    def finish(self, timeout=None):
        """Wait for exit (e.g. with -C N); returns the exit status."""
        try:
            rc = self.proc.wait(timeout=timeout or TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"mosquitto_sub did not exit; output: {self.lines}")
        self.t.join(2)
        return rc

    def stop(self):
        terminate(self.proc, 5)


# --------------------------------------------------------------------------------------
# The real Mosquitto as a peer (a bridge into midge, or a remote midge bridges to)
# --------------------------------------------------------------------------------------

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port():
    """A loopback TCP port that was free a moment ago (for programs that cannot report
    the port they bound, such as Mosquitto)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """/usr/sbin/mosquitto (Debian's 2.0) on a free loopback port with the given extra
    mosquitto.conf lines, its log collected like Broker's. Anonymous access is allowed
    unless anonymous is False (a password_file in conf then decides); nothing is persisted.
    port: a fixed port (a restart of an earlier one). Stop it with stop(), or kill() it."""

    def __init__(self, conf=(), attempts=3, port=None, anonymous=True):
        import pwd
        self.dir = tempfile.mkdtemp(prefix="mosq-it-")
        self.lines = []
        self.cond = threading.Condition()
        for attempt in range(attempts):
            self.port = port or free_port()
            path = os.path.join(self.dir, "mosquitto.conf")
            with open(path, "w") as f:
                f.write("\n".join([f"listener {self.port} 127.0.0.1",
                                   f"allow_anonymous {'true' if anonymous else 'false'}",
                                   # As root it would switch to user mosquitto otherwise.
                                   f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                                   "log_dest stderr", "log_type all", "persistence false",
                                   *conf]) + "\n")
            self.proc = subprocess.Popen([MOSQUITTO, "-c", path], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.reader = read_lines(self.proc.stdout, self.lines, self.cond)
            if self._listening():
                return
            self.stop()
            self.stopped = False  # the port was taken between free_port and the bind: retry
        raise AssertionError(f"mosquitto did not start; log:\n{self.log()}")

    def _listening(self):
        deadline = time.monotonic() + scaled(10)
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def log(self):
        with self.cond:
            return "\n".join(self.lines)

    def wait_log(self, regex, timeout=TIMEOUT):
        pat = re.compile(regex)
        with self.cond:
            ok = self.cond.wait_for(lambda: any(pat.search(ln) for ln in self.lines)
                                    or self.proc.poll() is not None, timeout)
            found = [ln for ln in self.lines if pat.search(ln)]
        assert ok and found, f"mosquitto: no log line matching {regex!r}; log:\n{self.log()}"
        return found[0]

    def kill(self):
        """SIGKILL: no goodbye, no will cleanup, nothing saved."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.stop()

    def stop(self):
        if getattr(self, "stopped", False):
            return
        self.stopped = True
        terminate(self.proc, 10)
        self.reader.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# MQTT 5: properties, the packets in their MQTT 5 form, decoders, MqttConn5, Paho5
# --------------------------------------------------------------------------------------

# Property identifiers (2.2.2.2 of the MQTT 5.0 standard).
P_PAYLOAD_FORMAT, P_MESSAGE_EXPIRY, P_CONTENT_TYPE = 0x01, 0x02, 0x03
P_RESPONSE_TOPIC, P_CORRELATION_DATA, P_SUBSCRIPTION_ID = 0x08, 0x09, 0x0B
P_SESSION_EXPIRY, P_ASSIGNED_CLIENT_ID, P_SERVER_KEEP_ALIVE = 0x11, 0x12, 0x13
P_AUTH_METHOD, P_AUTH_DATA, P_REQUEST_PROBLEM_INFO = 0x15, 0x16, 0x17
P_WILL_DELAY, P_REQUEST_RESPONSE_INFO, P_RESPONSE_INFO = 0x18, 0x19, 0x1A
P_SERVER_REFERENCE, P_REASON_STRING = 0x1C, 0x1F
P_RECEIVE_MAXIMUM, P_TOPIC_ALIAS_MAXIMUM, P_TOPIC_ALIAS = 0x21, 0x22, 0x23
P_MAXIMUM_QOS, P_RETAIN_AVAILABLE, P_USER = 0x24, 0x25, 0x26
P_MAXIMUM_PACKET_SIZE, P_WILDCARD_SUB_AVAILABLE = 0x27, 0x28
P_SUB_ID_AVAILABLE, P_SHARED_SUB_AVAILABLE = 0x29, 0x2A

PROP_TYPES = {
    P_PAYLOAD_FORMAT: "byte", P_MESSAGE_EXPIRY: "u32", P_CONTENT_TYPE: "str",
    P_RESPONSE_TOPIC: "str", P_CORRELATION_DATA: "bin", P_SUBSCRIPTION_ID: "varint",
    P_SESSION_EXPIRY: "u32", P_ASSIGNED_CLIENT_ID: "str", P_SERVER_KEEP_ALIVE: "u16",
    P_AUTH_METHOD: "str", P_AUTH_DATA: "bin", P_REQUEST_PROBLEM_INFO: "byte",
    P_WILL_DELAY: "u32", P_REQUEST_RESPONSE_INFO: "byte", P_RESPONSE_INFO: "str",
    P_SERVER_REFERENCE: "str", P_REASON_STRING: "str", P_RECEIVE_MAXIMUM: "u16",
    P_TOPIC_ALIAS_MAXIMUM: "u16", P_TOPIC_ALIAS: "u16", P_MAXIMUM_QOS: "byte",
    P_RETAIN_AVAILABLE: "byte", P_USER: "pair", P_MAXIMUM_PACKET_SIZE: "u32",
    P_WILDCARD_SUB_AVAILABLE: "byte", P_SUB_ID_AVAILABLE: "byte", P_SHARED_SUB_AVAILABLE: "byte",
}

# Reason codes (2.4).
RC_SUCCESS = 0x00
RC_GRANTED_QOS1, RC_GRANTED_QOS2 = 0x01, 0x02
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_MATCHING_SUBSCRIBERS, RC_NO_SUBSCRIPTION_EXISTED = 0x10, 0x11
RC_CONTINUE_AUTHENTICATION, RC_REAUTHENTICATE = 0x18, 0x19
RC_UNSPECIFIED_ERROR, RC_MALFORMED_PACKET, RC_PROTOCOL_ERROR = 0x80, 0x81, 0x82
RC_IMPLEMENTATION_SPECIFIC_ERROR, RC_UNSUPPORTED_PROTOCOL_VERSION = 0x83, 0x84
RC_CLIENT_ID_NOT_VALID, RC_BAD_USERNAME_OR_PASSWORD, RC_NOT_AUTHORIZED = 0x85, 0x86, 0x87
RC_SERVER_UNAVAILABLE, RC_SERVER_BUSY, RC_BANNED = 0x88, 0x89, 0x8A
RC_SERVER_SHUTTING_DOWN, RC_BAD_AUTHENTICATION_METHOD = 0x8B, 0x8C
RC_KEEP_ALIVE_TIMEOUT, RC_SESSION_TAKEN_OVER = 0x8D, 0x8E
RC_TOPIC_FILTER_INVALID, RC_TOPIC_NAME_INVALID = 0x8F, 0x90
RC_PACKET_ID_IN_USE, RC_PACKET_ID_NOT_FOUND = 0x91, 0x92
RC_RECEIVE_MAXIMUM_EXCEEDED, RC_TOPIC_ALIAS_INVALID, RC_PACKET_TOO_LARGE = 0x93, 0x94, 0x95
RC_MESSAGE_RATE_TOO_HIGH, RC_QUOTA_EXCEEDED, RC_ADMINISTRATIVE_ACTION = 0x96, 0x97, 0x98
RC_PAYLOAD_FORMAT_INVALID, RC_RETAIN_NOT_SUPPORTED, RC_QOS_NOT_SUPPORTED = 0x99, 0x9A, 0x9B
RC_USE_ANOTHER_SERVER, RC_SERVER_MOVED = 0x9C, 0x9D
RC_SHARED_SUBSCRIPTIONS_NOT_SUPPORTED, RC_CONNECTION_RATE_EXCEEDED = 0x9E, 0x9F
RC_MAXIMUM_CONNECT_TIME, RC_SUBSCRIPTION_IDS_NOT_SUPPORTED = 0xA0, 0xA1
RC_WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2

# The reason codes each packet may carry (the tables of 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1,
# 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1, 3.15.2.1), to check what the broker sends.
_PUB_ERRORS = {0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}
REASONS_ALLOWED = {
    CONNACK: {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C,
              0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F},
    PUBACK: {0x00, 0x10} | _PUB_ERRORS,
    PUBREC: {0x00, 0x10} | _PUB_ERRORS,
    PUBREL: {0x00, 0x92},
    PUBCOMP: {0x00, 0x92},
    SUBACK: {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2},
    UNSUBACK: {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91},
    DISCONNECT: {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90,
                 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F,
                 0xA0, 0xA1, 0xA2},
    AUTH: {0x00, 0x18, 0x19},
}


def enc_prop(pid, value):
    """One property: identifier and value encoded by its data type (PROP_TYPES). A User
    Property's value is a (name, value) pair; strings may be str (UTF-8) or raw bytes."""
    t = PROP_TYPES[pid]
    if t == "byte":
        return bytes([pid, value])
    if t == "u16":
        return bytes([pid]) + struct.pack("!H", value)
    if t == "u32":
        return bytes([pid]) + struct.pack("!I", value)
    if t == "varint":
        return bytes([pid]) + enc_len(value)
    if t == "pair":
        return bytes([pid]) + enc_str(value[0]) + enc_str(value[1])
    return bytes([pid]) + enc_str(b(value))


def props_section(props):
    """A property length and its block. props: None or () for none, bytes for a block sent
    verbatim (its length computed), or a list of (identifier, value) in wire order."""
    if not props:
        blk = b""
    elif isinstance(props, (bytes, bytearray)):
        blk = bytes(props)
    else:
        blk = b"".join(enc_prop(i, v) for i, v in props)
    return enc_len(len(blk)) + blk


def connect5_pkt(client_id="", clean=True, keepalive=60, props=(), will=None, will_props=(),
                 username=None, password=None, flags=None, proto_name="MQTT", proto_level=5,
                 will_flags=None):
    """MQTT 5 CONNECT. will = (topic, payload, qos, retain) with will_props its Will
    Properties. flags overrides the connect-flags byte; will_flags=(qos, retain) sets the will
    bits without a will."""
    return connect_pkt(client_id, clean, keepalive, will, username, password, proto_name,
                       proto_level, flags=flags, will_flags=will_flags, props=props or (),
                       will_props=will_props)


def publish5_pkt(topic, payload=b"", qos=0, retain=False, dup=False, pid=None, props=()):
    """MQTT 5 PUBLISH (a pid with QoS 0 is left out)."""
    return publish_pkt(topic, payload, qos, retain, dup, pid if qos else None, props or ())


def ack5_pkt(ptype, pid, reason=None, props=None):
    """PUBACK, PUBREC, PUBREL or PUBCOMP: the packet id alone when reason and props are None,
    the reason code alone when props is None, else both and the properties."""
    body = struct.pack("!H", pid)
    if reason is not None or props is not None:
        body += bytes([reason or 0])
    if props is not None:
        body += props_section(props)
    return packet(ptype, 2 if ptype == PUBREL else 0, body)


def subscribe5_pkt(pid, topics, props=(), flags=2):
    """topics: list of (filter, subscription-options byte)."""
    return subscribe_pkt(pid, topics, flags, props or ())


def unsubscribe5_pkt(pid, filters, props=(), flags=2):
    return unsubscribe_pkt(pid, filters, flags, props or ())


def disconnect5_pkt(reason=None, props=None, flags=0):
    """DISCONNECT: empty when reason and props are None (reason 0x00)."""
    body = b""
    if reason is not None or props is not None:
        body += bytes([reason or 0])
    if props is not None:
        body += props_section(props)
    return packet(DISCONNECT, flags, body)


def auth_pkt(reason=0x18, props=()):
    return packet(AUTH, 0, bytes([reason]) + props_section(props))


def sub_opts(qos=0, no_local=False, retain_as_published=False, retain_handling=0):
    """The subscription options byte of an MQTT 5 SUBSCRIBE entry (3.8.3.1)."""
    return (qos | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0)
            | (retain_handling << 4))


class Props:
    """Properties as the broker sent them, in wire order: (identifier, value) items."""

    def __init__(self, items=()):
        self.items = list(items)

    def get(self, pid, default=None):
        for i, v in self.items:
            if i == pid:
                return v
        return default

    def all(self, pid):
        return [v for i, v in self.items if i == pid]

    def __contains__(self, pid):
        return any(i == pid for i, _ in self.items)

    def ids(self):
        return [i for i, _ in self.items]

    @property
    def user(self):
        return self.all(P_USER)

    def __eq__(self, other):
        return isinstance(other, Props) and self.items == other.items

    def __repr__(self):
        return "Props(" + ", ".join(f"{i:#04x}={v!r}" for i, v in self.items) + ")"


def read_varint(data, off):
    """A variable byte integer at data[off:]: (value, offset after it). The broker must use
    the shortest form and at most 4 bytes ([MQTT-1.5.5-1])."""
    got = split_varint(data, off)
    assert got is not None, "variable byte integer runs past the packet"
    n, end = got
    assert end - off == len(enc_len(n)), \
        f"[MQTT-1.5.5-1] non-minimal variable byte integer {data[off:end].hex()}"
    return n, end


def _read_str(data, off, what):
    assert off + 2 <= len(data), f"{what} length runs past the property block"
    (n,) = struct.unpack("!H", data[off:off + 2])
    assert off + 2 + n <= len(data), f"{what} runs past the property block"
    return bytes(data[off + 2:off + 2 + n]), off + 2 + n


def _utf8(raw, what):
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError(f"[MQTT-1.5.4-1] {what} is not valid UTF-8: {raw!r}")
    assert "\x00" not in s, f"[MQTT-1.5.4-2] {what} contains U+0000"
    return s


def parse_props(data, off=0):
    """The property length at data[off:] and its block: (Props, offset after the block).
    Strings come back as str (and must be valid UTF-8), binary data as bytes."""
    n, off = read_varint(data, off)
    end = off + n
    assert end <= len(data), f"property length {n} runs past the packet"
    block = bytes(data[off:end])
    items, i = [], 0
    while i < len(block):
        pid = block[i]
        assert pid in PROP_TYPES, f"unknown property identifier {pid:#04x} from the broker"
        t = PROP_TYPES[pid]
        i += 1
        if t == "byte":
            v, i = block[i], i + 1
        elif t == "u16":
            (v,), i = struct.unpack("!H", block[i:i + 2]), i + 2
        elif t == "u32":
            (v,), i = struct.unpack("!I", block[i:i + 4]), i + 4
        elif t == "varint":
            v, i = read_varint(block, i)
        elif t == "pair":
            k, i = _read_str(block, i, "User Property name")
            val, i = _read_str(block, i, "User Property value")
            v = (_utf8(k, "User Property name"), _utf8(val, "User Property value"))
        else:
            raw, i = _read_str(block, i, f"property {pid:#04x}")
            v = raw if t == "bin" else _utf8(raw, f"property {pid:#04x}")
        assert i <= len(block), f"property {pid:#04x} runs past its block"
        items.append((pid, v))
    return Props(items), end


Connack5 = collections.namedtuple("Connack5", "session_present reason props")
Publish5 = collections.namedtuple("Publish5", "topic payload qos retain dup pid props")
Ack5 = collections.namedtuple("Ack5", "type pid reason props")
SubAck5 = collections.namedtuple("SubAck5", "type pid props codes")
Disconnect5 = collections.namedtuple("Disconnect5", "reason props")


def parse_connack5(p):
    assert p.type == CONNACK, f"expected CONNACK, got {p!r}"
    assert p.flags == 0, f"CONNACK flags {p.flags:#x}"
    assert len(p.body) >= 3, f"MQTT 5 CONNACK too short: {p!r}"
    assert p.body[0] & 0xFE == 0, f"[MQTT-3.2.2-1] CONNACK reserved flags set: {p.body[0]:#x}"
    reason = p.body[1]
    assert reason in REASONS_ALLOWED[CONNACK], f"[MQTT-3.2.2-8] CONNACK reason {reason:#x}"
    props, end = parse_props(p.body, 2)
    assert end == len(p.body), f"bytes after the CONNACK properties: {p!r}"
    sp = bool(p.body[0] & 1)
    if reason:
        assert not sp, "[MQTT-3.2.2-6] refused CONNACK with Session Present 1"
    return Connack5(sp, reason, props)


def parse_publish5(p):
    assert p.type == PUBLISH, f"expected PUBLISH, got {p!r}"
    qos = (p.flags >> 1) & 3
    assert qos != 3, "server sent QoS 3"
    (tlen,) = struct.unpack("!H", p.body[:2])
    topic = _utf8(bytes(p.body[2:2 + tlen]), "topic")
    off = 2 + tlen
    pid = None
    if qos:
        (pid,) = struct.unpack("!H", p.body[off:off + 2])
        off += 2
    props, off = parse_props(p.body, off)
    if P_TOPIC_ALIAS in props:
        assert props.get(P_TOPIC_ALIAS) != 0, "[MQTT-3.3.2-8] server sent Topic Alias 0"
    return Publish5(topic, bytes(p.body[off:]), qos, bool(p.flags & 1), bool(p.flags & 8),
                    pid, props)


def parse_ack5(p):
    """PUBACK, PUBREC, PUBREL or PUBCOMP in any of its MQTT 5 forms."""
    assert p.type in (PUBACK, PUBREC, PUBREL, PUBCOMP), f"expected an acknowledgement, got {p!r}"
    assert p.flags == (2 if p.type == PUBREL else 0), f"{p!r}: wrong fixed-header flags"
    assert len(p.body) >= 2, f"{p!r}: no packet id"
    (pid,) = struct.unpack("!H", p.body[:2])
    reason, props = 0, Props()
    if len(p.body) > 2:
        reason = p.body[2]
    if len(p.body) > 3:
        props, end = parse_props(p.body, 3)
        assert end == len(p.body), f"bytes after the properties of {p!r}"
    assert reason in REASONS_ALLOWED[p.type], f"{TYPE_NAMES[p.type]} reason {reason:#x}"
    return Ack5(p.type, pid, reason, props)


def parse_suback5(p):
    """SUBACK or UNSUBACK: packet id, properties, one reason code per filter."""
    assert p.type in (SUBACK, UNSUBACK), f"expected SUBACK or UNSUBACK, got {p!r}"
    assert p.flags == 0, f"{p!r}: wrong fixed-header flags"
    (pid,) = struct.unpack("!H", p.body[:2])
    props, off = parse_props(p.body, 2)
    codes = list(p.body[off:])
    for c in codes:
        assert c in REASONS_ALLOWED[p.type], f"{TYPE_NAMES[p.type]} reason {c:#x}"
    return SubAck5(p.type, pid, props, codes)


def parse_disconnect5(p):
    assert p.type == DISCONNECT, f"expected DISCONNECT, got {p!r}"
    assert p.flags == 0, f"DISCONNECT flags {p.flags:#x}"
    reason, props = 0, Props()
    if p.body:
        reason = p.body[0]
    if len(p.body) > 1:
        props, end = parse_props(p.body, 1)
        assert end == len(p.body), f"bytes after the DISCONNECT properties: {p!r}"
    assert reason in REASONS_ALLOWED[DISCONNECT], f"DISCONNECT reason {reason:#x}"
    return Disconnect5(reason, props)


class MqttConn5(MqttConn):
    """The raw client speaking MQTT 5 (protocol level 5): CONNECT with properties,
    acknowledgements with reason codes, and decoded CONNACK, PUBLISH, acknowledgements,
    SUBACK, UNSUBACK and DISCONNECT (Connack5, Publish5, Ack5, SubAck5, Disconnect5).
    Everything the broker sends through these helpers is checked against the standard's
    encoding rules (shortest variable byte integers, reason code tables, UTF-8)."""

    connack = None

    def _check_length(self, n, size):
        """MQTT 5 wants the remaining length in its shortest form ([MQTT-1.5.5-1])."""
        assert size == len(enc_len(n)), \
            f"[MQTT-1.5.5-1] non-minimal remaining length {self.buf[1:1 + size].hex()}"

    def connect(self, client_id="", expect_rc=0, expect_sp=None, **kw):
        """Send CONNECT (connect5_pkt arguments) and read CONNACK; returns the Connack5."""
        self.send(connect5_pkt(client_id, **kw))
        ack = parse_connack5(self.expect(CONNACK))
        assert ack.reason == expect_rc, \
            f"CONNACK reason {ack.reason:#04x} != {expect_rc:#04x} ({ack.props!r})"
        if expect_sp is not None:
            assert ack.session_present == bool(expect_sp), \
                f"session present {ack.session_present} != {bool(expect_sp)}"
        self.connack = ack
        return ack

    def subscribe(self, topics, pid=None, props=(), timeout=TIMEOUT):
        """topics: [(filter, options byte)] or a single filter (options 0). Returns the
        SUBACK's reason codes (the SubAck5 is kept as .last_ack)."""
        if isinstance(topics, (str, bytes)):
            topics = [(topics, 0)]
        pid = self.alloc_pid() if pid is None else pid
        self.send(subscribe5_pkt(pid, topics, props))
        return self._codes(SUBACK, pid, len(topics), timeout)

    def unsubscribe(self, filters, pid=None, props=(), timeout=TIMEOUT):
        """Returns the UNSUBACK's reason codes (the SubAck5 is kept as .last_ack)."""
        if isinstance(filters, (str, bytes)):
            filters = [filters]
        pid = self.alloc_pid() if pid is None else pid
        self.send(unsubscribe5_pkt(pid, filters, props))
        return self._codes(UNSUBACK, pid, len(filters), timeout)

    def _codes(self, ptype, pid, n, timeout):
        """Await the SUBACK or UNSUBACK (ptype) of pid for n filters; its reason codes."""
        ack = parse_suback5(self._await(ptype, timeout))
        name = TYPE_NAMES[ptype]
        assert ack.pid == pid, f"{name} packet id {ack.pid} != {pid}"
        assert len(ack.codes) == n, f"{name} has {len(ack.codes)} codes for {n} filters"
        self.last_ack = ack
        return ack.codes

    def publish(self, topic, payload=b"", qos=0, retain=False, dup=False, pid=None, props=(),
                wait=True, expect_reason=None):
        """Send PUBLISH; with wait, complete QoS 1/2 (PUBREL only after a PUBREC below 0x80)
        and return the PUBACK or PUBREC as an Ack5 (None for QoS 0, the packet id without
        wait). expect_reason: the reason code that acknowledgement must carry."""
        if qos and pid is None:
            pid = self.alloc_pid()
        self.send(publish5_pkt(topic, payload, qos, retain, dup, pid, props))
        if not wait or qos == 0:
            return pid
        ack = parse_ack5(self._await(PUBACK if qos == 1 else PUBREC, TIMEOUT))
        assert ack.pid == pid, f"{TYPE_NAMES[ack.type]} for id {ack.pid}, not {pid}"
        if expect_reason is not None:
            assert ack.reason == expect_reason, \
                f"{TYPE_NAMES[ack.type]} reason {ack.reason:#04x} != {expect_reason:#04x}"
        if qos == 2 and ack.reason < 0x80:
            self.send(ack5_pkt(PUBREL, pid))
            comp = parse_ack5(self._await(PUBCOMP, TIMEOUT))
            assert (comp.pid, comp.reason) == (pid, 0), f"bad PUBCOMP {comp!r}"
        return ack

    def recv_publish(self, timeout=TIMEOUT, ack=True):
        """Next packet must be a PUBLISH: parsed (Publish5) and, with ack, acknowledged
        (PUBACK; PUBREC, the PUBREL awaited, PUBCOMP)."""
        p = self.recv(timeout)
        m = parse_publish5(p)
        if m.qos == 0:
            assert m.dup is False, "[MQTT-3.3.1-2] QoS 0 PUBLISH with DUP 1"
        else:
            assert m.pid != 0, "[MQTT-2.2.1-4] server sent packet identifier 0"
        if ack and m.qos == 1:
            self.send(ack5_pkt(PUBACK, m.pid))
        elif ack and m.qos == 2:
            self.send(ack5_pkt(PUBREC, m.pid))
            rel = parse_ack5(self._await(PUBREL, timeout))
            assert (rel.pid, rel.reason) == (m.pid, 0), f"bad PUBREL {rel!r}"
            self.send(ack5_pkt(PUBCOMP, m.pid))
        return m

    def disconnect(self, reason=None, props=None):
        try:
            self.send(disconnect5_pkt(reason, props))
        except OSError:
            pass
        self.close()

    def expect_disconnect(self, reason, timeout=TIMEOUT):
        """The next packet is a DISCONNECT with this reason code, then the connection is
        closed (packets before it fail the test). Returns the Disconnect5."""
        p = self.recv(timeout)
        d = parse_disconnect5(p)
        assert d.reason == reason, f"DISCONNECT reason {d.reason:#04x} != {reason:#04x} ({d!r})"
        rest = self.expect_closed(timeout)
        assert rest == [], f"packets after DISCONNECT: {rest!r}"
        return d

    def expect_refused(self, reason, timeout=TIMEOUT):
        """The next packet is a CONNACK refusing with reason, then the connection closes.
        Returns the Connack5."""
        ack = parse_connack5(self.expect(CONNACK, timeout))
        assert ack.reason == reason, \
            f"CONNACK reason {ack.reason:#04x} != {reason:#04x} ({ack.props!r})"
        rest = self.expect_closed(timeout)
        assert rest == [], f"packets after the refusing CONNACK: {rest!r}"
        return ack


def client5(broker_or_port, client_id="", **kw):
    """Open a raw MQTT 5 connection and complete CONNECT/CONNACK (reason 0x00)."""
    return client(broker_or_port, client_id, conn_class=MqttConn5, **kw)


class Paho5(PahoBase):
    """paho-mqtt's MQTTv5 client (Debian's python3-paho-mqtt) on its own network thread,
    never reconnecting by itself. Received messages, SUBACK/UNSUBACK reason codes and
    disconnects (reason code value and properties) go to queues or dicts for the test.

    will = (topic, payload, qos, retain, Properties or None). props: the CONNECT's
    paho.mqtt.properties.Properties. expect_rc: the CONNACK reason code (int)."""

    NAME = "paho v5"

    def __init__(self, port, client_id="", clean_start=True, keepalive=60, props=None,
                 will=None, username=None, password=None, expect_rc=0):
        import paho.mqtt.client as mqtt
        self.mqtt = mqtt
        self.messages = queue.Queue()
        self.disconnects = queue.Queue()
        self.connected = threading.Event()
        self.rc = None
        self.session_present = None
        self.connack_props = None
        self.acks = {}
        self.ack_cond = threading.Condition()
        self.c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5,
                             reconnect_on_failure=False)
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will[:4]
            self.c.will_set(topic, payload, qos, retain,
                            properties=will[4] if len(will) > 4 else None)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect
        self.c.connect("127.0.0.1", port, keepalive, clean_start=clean_start, properties=props)
        self.c.loop_start()
        assert self.connected.wait(TIMEOUT), "paho v5: no CONNACK"
        assert self.rc == expect_rc, f"paho v5: CONNACK reason {self.rc:#04x} != {expect_rc:#04x}"

    @staticmethod
    def properties(packet_type, **values):
        """paho Properties for packet_type (a name of paho.mqtt.packettypes.PacketTypes, e.g.
        "PUBLISH") with the given attributes; UserProperty takes a list of pairs."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        p = Properties(getattr(PacketTypes, packet_type))
        for k, v in values.items():
            setattr(p, k, v)
        return p

    def _on_connect(self, c, userdata, flags, rc, props):
        self.rc = rc.value if hasattr(rc, "value") else rc
        self.session_present = bool(flags.get("session present"))
        self.connack_props = props
        self.connected.set()

    def _on_subscribe(self, c, userdata, mid, codes, props):
        with self.ack_cond:
            self.acks[mid] = [x.value for x in codes]
            self.ack_cond.notify_all()

    def _on_unsubscribe(self, c, userdata, mid, props, codes):
        codes = codes if isinstance(codes, list) else [codes]
        with self.ack_cond:
            self.acks[mid] = [x.value for x in codes]
            self.ack_cond.notify_all()

    def _on_disconnect(self, c, userdata, rc, props=None):
        self.disconnects.put((rc.value if hasattr(rc, "value") else rc, props))

    def _wait_ack(self, mid):
        with self.ack_cond:
            assert self.ack_cond.wait_for(lambda: mid in self.acks, TIMEOUT), \
                "paho v5: no SUBACK/UNSUBACK"
            return self.acks.pop(mid)

    def subscribe(self, topic, qos=0, no_local=False, retain_as_published=False,
                  retain_handling=0, props=None):
        """Subscribe with these options; returns the SUBACK reason codes (ints)."""
        from paho.mqtt.subscribeoptions import SubscribeOptions
        opts = SubscribeOptions(qos=qos, noLocal=no_local,
                                retainAsPublished=retain_as_published,
                                retainHandling=retain_handling)
        rc, mid = self.c.subscribe(topic, options=opts, properties=props)
        assert rc == 0, f"paho v5: subscribe returned {rc}"
        return self._wait_ack(mid)

    def unsubscribe(self, topic, props=None):
        rc, mid = self.c.unsubscribe(topic, properties=props)
        assert rc == 0, f"paho v5: unsubscribe returned {rc}"
        return self._wait_ack(mid)

    def wait_disconnect(self, timeout=TIMEOUT):
        """(reason code value, properties) of the next disconnect paho reports."""
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"paho v5: not disconnected within {timeout:.1f} s")

    def close(self, reason=None, props=None):
        try:
            if reason is None:
                self.c.disconnect(properties=props)
            else:
                from paho.mqtt.reasoncodes import ReasonCodes
                from paho.mqtt.packettypes import PacketTypes
                self.c.disconnect(ReasonCodes(PacketTypes.DISCONNECT, identifier=reason),
                                  properties=props)
        finally:
            self.c.loop_stop()

    def kill(self):
        """Drop the connection without DISCONNECT (as if the client died)."""
        self.c.loop_stop()
        self.c.socket().close()
