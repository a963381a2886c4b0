"""test_daemon.py - midge as a service (issue 3): the sd_notify protocol on a
$NOTIFY_SOCKET the test creates (READY only after every listener is bound, STOPPING,
WATCHDOG), -d with its start-up result as exit status, pid_file, `user`, the log
destinations and levels, and journald priority prefixes under JOURNAL_STREAM.

Every process the test starts is stopped with SIGTERM and must exit 0 without a sanitizer
report; a daemonized child is reaped through PR_SET_CHILD_SUBREAPER so its exit status is
checked too, and its sanitizer output goes to files (ASAN_OPTIONS log_path) that must not
exist afterwards.
"""
import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from midge_harness import (MIDGE_BIN, QUIET, SANITIZER_MARKERS, TIMEOUT, MqttConn, client,
                           connect_pkt, midge_only, scaled)

pytestmark = midge_only

TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
LEVEL_PRIORITY = {"error": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7,
                  "subscribe": 7, "unsubscribe": 7}


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def write_conf(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def read(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_for(cond, timeout=TIMEOUT, what="condition"):
    """Poll cond() until it returns something truthy; return it or fail."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:.1f} s")
        time.sleep(0.02)


def wait_file(path, regex, timeout=TIMEOUT):
    """Wait until the file holds a line matching regex; return the match."""
    pat = re.compile(regex, re.M)

    def found():
        return pat.search(read(path))
    try:
        return wait_for(found, timeout)
    except AssertionError:
        raise AssertionError(f"no line matching {regex!r} in {path} within {timeout:.1f} s; "
                             f"it holds:\n{read(path)}")


def _hex_addr(h):
    raw = bytes.fromhex(h)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    return socket.inet_ntop(socket.AF_INET6,
                            b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listen_sockets(pid):
    """{(address, port)} of the TCP sockets in LISTEN state that process pid holds."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except FileNotFoundError:
        return set()
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                col = line.split()
                if col[3] == "0A" and col[9] in inodes:
                    addr, port = col[1].split(":")
                    out.add((_hex_addr(addr), int(port, 16)))
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def sanitizer_env(logdir):
    """Environment for a process whose stderr nobody sees: sanitizer reports go to files."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = f"detect_leaks=1:abort_on_error=0:log_path={logdir}/asan"
    env["UBSAN_OPTIONS"] = f"print_stacktrace=1:log_path={logdir}/ubsan"
    return env


def assert_no_sanitizer_files(logdir):
    reports = [n for n in os.listdir(logdir) if n.startswith(("asan", "ubsan"))]
    assert not reports, "sanitizer report(s): " + "\n".join(
        read(os.path.join(logdir, n)) for n in reports)


def assert_no_sanitizer_text(text, what):
    for marker in SANITIZER_MARKERS:
        assert marker not in text, f"sanitizer report in {what}:\n{text}"


class Proc:
    """midge started by the test itself (when the harness's Broker does not fit: own
    stdout/stderr files, a wrapper, an exact environment). Stopped by the fixture."""

    def __init__(self, argv, env=None, cwd=None, stderr_file=None):
        self.dir = tempfile.mkdtemp(prefix="midge-it-d-")
        self.out_path = os.path.join(self.dir, "stdout")
        self.err_path = stderr_file or os.path.join(self.dir, "stderr")
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        with open(self.out_path, "ab") as fo, open(self.err_path, "ab") as fe:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                         env=full_env, cwd=cwd)
        self.pid = self.proc.pid
        self.stopped = False

    def out(self):
        return read(self.out_path)

    def err(self):
        return read(self.err_path)

    def stop(self, sig=signal.SIGTERM):
        """One signal; exit 0 within 10 s; no sanitizer report on either stream."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"midge did not exit within {scaled(10):.0f} s of {sig!r}")
        text = self.out() + self.err()
        assert_no_sanitizer_text(text, "midge output")
        assert rc == 0, f"midge exited with status {rc}; output:\n{text}"
        return rc

    def kill(self):
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def procs():
    """procs(argv, ...) -> Proc; at teardown each still-running one must stop cleanly, and
    anything left is killed."""
    started = []

    def start(*a, **kw):
        p = Proc(*a, **kw)
        started.append(p)
        return p
    yield start
    errors = []
    for p in started:
        try:
            p.stop()
        except AssertionError as e:
            errors.append(str(e))
        finally:
            p.kill()
            shutil.rmtree(p.dir, ignore_errors=True)
    if errors:
        pytest.fail("midge shutdown check failed:\n" + "\n".join(errors), pytrace=False)


class Notify:
    """An AF_UNIX datagram socket standing in for systemd's notification socket."""

    def __init__(self, abstract=False):
        self.dir = tempfile.mkdtemp(prefix="mn-", dir="/tmp")  # short: sun_path is 108 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"midge-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.env = os.path.join(self.dir, "notify")
            self.sock.bind(self.env)
        self.msgs = []  # (monotonic receive time, text) in arrival order

    def recv(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        msg = data.decode("utf-8", "replace")
        self.msgs.append((time.monotonic(), msg))
        return msg

    def expect(self, regex, timeout=TIMEOUT):
        """Receive until a datagram matches regex (re.search); return it."""
        pat = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = self.recv(left) if left > 0 else None
            if msg is None:
                raise AssertionError(f"no notification matching {regex!r} within "
                                     f"{timeout:.1f} s; got {[m for _, m in self.msgs]}")
            if pat.search(msg):
                return msg

    def drain(self, t=0.0):
        """Everything that arrives within t seconds (at least what is queued now)."""
        got = []
        deadline = time.monotonic() + t
        while True:
            msg = self.recv(max(0.001, deadline - time.monotonic()))
            if msg is None:
                return got
            got.append(msg)

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def fields(msg):
    """'A=1\\nB=x' -> {'A': '1', 'B': 'x'} (sd_notify's newline-separated assignments)."""
    out = {}
    for line in msg.split("\n"):
        k, sep, v = line.partition("=")
        assert sep, f"notification line without '=': {line!r} in {msg!r}"
        out[k] = v
    return out


STATUS_RE = r"^\d+ clients connected, \d+ messages received, \d+ sent$"


@pytest.fixture
def notify(monkeypatch):
    n = Notify()
    monkeypatch.setenv("NOTIFY_SOCKET", n.env)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield n
    n.close()


# --------------------------------------------------------------------------------------
# sd_notify
# --------------------------------------------------------------------------------------

def test_notify_ready_only_after_every_listener_is_bound(start_broker, notify):
    """READY=1 (with STATUS=) is the first notification and is sent only once all three
    listeners (two IPv4, one IPv6) are listening: at READY the process is frozen and its
    LISTEN sockets are counted."""
    br = start_broker(conf=["listener 0 ::1", "listener 0 127.0.0.1"], expect_listen=False)
    msg = notify.expect(r"READY=1", timeout=scaled(10))
    os.kill(br.proc.pid, signal.SIGSTOP)
    try:
        socks = listen_sockets(br.proc.pid)
    finally:
        os.kill(br.proc.pid, signal.SIGCONT)
    assert len(socks) == 3, f"READY=1 sent with only {sorted(socks)} listening"
    assert {a for a, _ in socks} == {"127.0.0.1", "::1"}, socks
    assert [m for _, m in notify.msgs] == [msg], "READY=1 was not the first notification"
    f = fields(msg)
    assert f["READY"] == "1"
    assert re.match(STATUS_RE, f.get("STATUS", "")), msg
    assert f["STATUS"].startswith("0 clients connected"), msg
    for addr, port in socks:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        c = MqttConn(port, host=addr, family=fam)
        c.send(connect_pkt(f"rdy-{port}"))
        c.expect_bytes(b"\x20\x02\x00\x00")
        c.disconnect()
    assert notify.drain(0) == [], "unexpected notifications while running"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_notify_stopping_on_shutdown(start_broker, notify, sig):
    """SIGTERM / SIGINT: STOPPING=1 is sent, is the last notification, and midge exits 0."""
    br = start_broker()
    notify.expect(r"^READY=1")
    c = client(br, "stopper")
    c.ping()
    assert br.stop(sig) == 0
    rest = notify.drain(0)
    assert rest == ["STOPPING=1"], f"notifications at shutdown: {rest}"


def test_notify_abstract_socket(start_broker, monkeypatch):
    """$NOTIFY_SOCKET may name the abstract namespace ("@name"), as systemd allows."""
    n = Notify(abstract=True)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", n.env)
        br = start_broker()
        assert fields(n.expect(r"^READY=1"))["READY"] == "1"
        br.stop()
        assert n.drain(0) == ["STOPPING=1"]
    finally:
        n.close()


def test_notify_watchdog_every_half_interval_with_status(start_broker, notify, monkeypatch):
    """WATCHDOG_USEC=300000 (no WATCHDOG_PID): WATCHDOG=1 about every 150 ms, each with a
    STATUS= that follows the clients and messages."""
    monkeypatch.setenv("WATCHDOG_USEC", "300000")
    br = start_broker()
    notify.expect(r"^READY=1")
    t0 = time.monotonic()
    first = notify.expect(r"^WATCHDOG=1", timeout=scaled(2))
    assert re.match(STATUS_RE, fields(first)["STATUS"]), first
    for _ in range(3):
        notify.expect(r"^WATCHDOG=1", timeout=scaled(1))
    elapsed = time.monotonic() - t0
    # 4 pings at 150 ms: ~0.6 s. Not faster than half of that (no spamming), not slower
    # than the watchdog interval allows (each ping within 300 ms of the previous one).
    stamps = [t for t, m in notify.msgs if m.startswith("WATCHDOG=1")]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert elapsed >= 0.3, f"4 WATCHDOG=1 in {elapsed:.2f} s: more often than every 150 ms"
    assert max(gaps) < scaled(0.3), f"WATCHDOG gaps {gaps} exceed WATCHDOG_USEC"
    sub = client(br, "wd-sub")
    sub.subscribe("wd/#")
    pub = client(br, "wd-pub")
    pub.publish("wd/x", b"1", qos=1)
    sub.recv_publish()
    notify.expect(r"^WATCHDOG=1\nSTATUS=2 clients connected, 1 messages received, 1 sent$",
                  timeout=scaled(2))


def test_notify_watchdog_pid_matching(procs, tmp_path, notify):
    """WATCHDOG_PID equal to midge's own pid (set by a shell that execs midge, as systemd
    does for the main process): the watchdog is on."""
    conf = write_conf(tmp_path / "m.conf", ["listener 0 127.0.0.1", "allow_anonymous true"])
    env = dict(os.environ, WATCHDOG_USEC="200000")
    p = procs(["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"',
               MIDGE_BIN, "-c", conf], env=env)
    notify.expect(r"^READY=1")
    notify.expect(r"^WATCHDOG=1", timeout=scaled(2))
    with open(f"/proc/{p.pid}/environ", "rb") as f:
        assert f"WATCHDOG_PID={p.pid}".encode() in f.read().split(b"\0")


def test_notify_watchdog_pid_other_process(start_broker, notify, monkeypatch):
    """WATCHDOG_PID naming another process: the watchdog is meant for it, midge sends no
    WATCHDOG=1 (at 100 ms it would have sent ~5 within the quiet period)."""
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    start_broker()
    notify.expect(r"^READY=1")
    got = notify.drain(QUIET)
    assert not [m for m in got if "WATCHDOG" in m], got


# --------------------------------------------------------------------------------------
# pid_file, -d, user
# --------------------------------------------------------------------------------------

def test_pid_file_written_and_removed(start_broker, tmp_path):
    """pid_file holds midge's pid (a decimal line) while it runs; removed at exit."""
    pid_path = tmp_path / "midge.pid"
    br = start_broker(conf=[f"pid_file {pid_path}"])
    text = read(pid_path)
    assert re.fullmatch(r"\d+\n", text), repr(text)
    assert int(text) == br.proc.pid
    assert br.stop() == 0
    assert not pid_path.exists(), "pid_file left behind after a clean exit"
    assert not [n for n in os.listdir(tmp_path) if n.startswith("midge.pid")], \
        os.listdir(tmp_path)


PR_SET_CHILD_SUBREAPER = 36


def kill_matching(marker):
    """SIGKILL every process whose command line contains marker (a path unique to the
    test), so nothing the test started is left listening."""
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid() and marker.encode() in read_cmdline(p):
            try:
                os.kill(int(p), signal.SIGKILL)
            except ProcessLookupError:
                pass


def read_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.fixture
def subreaper():
    """Make this test process the reaper of orphans, so a daemonized midge's exit status
    can be read with waitpid. The test appends the daemon's pid and/or a marker string
    from its command line (its config path); whatever is left is killed and reaped."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    left = []
    yield left
    for item in left:
        if isinstance(item, str):
            kill_matching(item)
            continue
        try:
            os.kill(item, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for item in left:
        if isinstance(item, int):
            try:
                os.waitpid(item, 0)
            except ChildProcessError:
                pass
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def reap(pid, timeout):
    """Wait for our (adopted) child pid to exit; return its exit status (or -signal)."""
    deadline = time.monotonic() + timeout
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon {pid} did not exit within {timeout:.1f} s")
        time.sleep(0.02)


def test_daemonize_returns_after_bind_with_pid_and_log_file(tmp_path, subreaper):
    """midge -d: the parent exits 0 once the child has bound every listener (the sockets
    are already listening when it returns); the child is a session leader with stdio on
    /dev/null, in the same working directory (relative pid_file and log file land there),
    serves MQTT, logs to the file, and on SIGTERM exits 0 and removes its pid file."""
    work = tmp_path / "work"
    work.mkdir()
    sanlog = tmp_path / "san"
    sanlog.mkdir()
    conf = write_conf(tmp_path / "d.conf", [
        "listener 0 127.0.0.1", "listener 0 ::1", "allow_anonymous true",
        "pid_file midge.pid", "log_dest file midge.log", "log_type all"])
    subreaper.append(conf)
    r = subprocess.run([MIDGE_BIN, "-d", "-c", conf], cwd=work, env=sanitizer_env(sanlog),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=scaled(10))
    pid_text = read(work / "midge.pid")
    pid = int(pid_text) if re.fullmatch(r"\d+\n", pid_text) else None
    if pid:
        subreaper.append(pid)
    assert r.returncode == 0, f"midge -d exited {r.returncode}: {r.stderr!r}"
    assert r.stdout == b"" and r.stderr == b"", (r.stdout, r.stderr)
    assert pid, f"no pid in {work / 'midge.pid'}: {pid_text!r}"
    socks = listen_sockets(pid)  # no waiting: the parent returned after the bind
    assert {a for a, _ in socks} == {"127.0.0.1", "::1"} and len(socks) == 2, socks
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    sid, tty = int(stat[3]), int(stat[4])
    assert sid == pid, f"daemon is not a session leader (sid {sid})"
    assert tty == 0, "daemon has a controlling terminal"
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null", f"fd {fd} not /dev/null"
    assert os.readlink(f"/proc/{pid}/cwd") == str(work)
    port = next(p for a, p in socks if a == "127.0.0.1")
    c = client(port, "to-daemon")
    c.ping()
    c.disconnect()
    log = work / "midge.log"
    wait_file(log, rf"^{TS} notice: listening on 127\.0\.0\.1:{port} \(mqtt\)$")
    wait_file(log, r"client to-daemon disconnected: DISCONNECT received")
    os.kill(pid, signal.SIGTERM)
    rc = reap(pid, scaled(10))
    subreaper.remove(pid)  # reaped: its pid may be reused, never signal it again
    assert rc == 0, f"daemon exited with status {rc}; log:\n{read(log)}"
    assert not (work / "midge.pid").exists(), "pid file not removed at exit"
    assert re.search(r"midge stopped", read(log)), read(log)
    assert_no_sanitizer_text(read(log), "the log file")
    assert_no_sanitizer_files(sanlog)
    assert listen_sockets(pid) == set()


def test_daemonize_startup_failure_exits_1(tmp_path):
    """midge -d with a listener whose port is taken: the parent exits 1 (not 0), the
    reason is in the log file, the child is gone and has removed its pid file."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    sanlog = tmp_path / "san"
    sanlog.mkdir()
    log = tmp_path / "fail.log"
    pid_path = tmp_path / "fail.pid"
    conf = write_conf(tmp_path / "f.conf", [
        "listener 0 127.0.0.1", f"listener {port} 127.0.0.1", "allow_anonymous true",
        f"pid_file {pid_path}", f"log_dest file {log}"])
    try:
        r = subprocess.run([MIDGE_BIN, "-d", "-c", conf], env=sanitizer_env(sanlog),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=scaled(10))
        assert r.returncode == 1, f"midge -d exited {r.returncode} although start-up failed"
        wait_file(log, rf"error: cannot listen on 127\.0\.0\.1:{port}: address already in use")
        wait_for(lambda: not pid_path.exists(), what="pid file removed by the failed child")
        wait_for(lambda: not [p for p in os.listdir("/proc") if p.isdigit() and
                              conf.encode() in read_cmdline(p)],
                 what="failed daemon child gone")
        assert_no_sanitizer_text(read(log), "the log file")
        assert_no_sanitizer_files(sanlog)
    finally:
        busy.close()
        kill_matching(conf)  # never leave a child of ours behind


def test_daemonize_bad_config_fails_in_the_foreground(tmp_path):
    """midge -d with a config error: exit 1 before detaching, the file:line error on the
    caller's stderr (not lost in /dev/null)."""
    conf = write_conf(tmp_path / "bad.conf", ["listener 0 127.0.0.1", "bogus_option 1"])
    r = subprocess.run([MIDGE_BIN, "-d", "-c", conf], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=scaled(10))
    assert r.returncode == 1
    assert f'{conf}:2: unknown option "bogus_option"' in r.stderr.decode(), r.stderr


def free_privileged_port():
    for port in range(1023, 900, -1):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.skip("no free port below 1024 on 127.0.0.1")


def test_user_drops_root_after_binding_privileged_port(start_broker):
    """Run as root with `user nobody` and a listener below 1024: the port is bound (as
    root), then uid, gid and supplementary groups are nobody's; MQTT still works."""
    if os.geteuid() != 0:
        pytest.skip("needs root: `user` only switches users when started as root")
    nobody = pwd.getpwnam("nobody")
    port = free_privileged_port()
    br = start_broker(conf=[f"listener {port} 127.0.0.1", "user nobody"])
    br.wait_log(rf"running as user nobody \(uid {nobody.pw_uid}\)")
    with open(f"/proc/{br.proc.pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    assert status["Uid"].split() == [str(nobody.pw_uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(nobody.pw_gid)] * 4, status["Gid"]
    assert "0" not in status["Groups"].split(), f"still in root's groups: {status['Groups']}"
    for p in (br.port, port):
        c = client(p, f"as-nobody-{p}")
        c.ping()
        c.disconnect()


def test_user_with_pid_file_and_log_file_in_its_runtime_directory(start_broker):
    """`user nobody` with pid_file and log_dest file in a directory that user owns (what
    systemd's RuntimeDirectory= gives): both files are written, the broker keeps logging
    after the switch, and the pid file is removed at exit although midge is no longer
    root by then."""
    if os.geteuid() != 0:
        pytest.skip("needs root: `user` only switches users when started as root")
    nobody = pwd.getpwnam("nobody")
    rundir = tempfile.mkdtemp(prefix="midge-run-", dir="/tmp")  # reachable for nobody
    try:
        os.chmod(rundir, 0o755)
        os.chown(rundir, nobody.pw_uid, nobody.pw_gid)
        pid_path = os.path.join(rundir, "midge.pid")
        log = os.path.join(rundir, "midge.log")
        br = start_broker(conf=["user nobody", f"pid_file {pid_path}", f"log_dest file {log}"],
                          expect_listen=False)
        wait_file(log, r"running as user nobody")
        assert read(pid_path).strip() == str(br.proc.pid)
        port = int(wait_file(log, r"listening on 127\.0\.0\.1:(\d+)").group(1))
        client(port, "after-switch").disconnect()
        wait_file(log, r"client after-switch disconnected: DISCONNECT received")
        assert br.stop() == 0
        assert not os.path.exists(pid_path), "pid file left behind after the user switch"
        assert re.search(r"midge stopped", read(log)), read(log)
        assert_no_sanitizer_text(read(log), "the log file")
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def test_user_unknown_refuses_to_start(tmp_path):
    """`user` naming no account: start-up fails with exit 1 and a line naming it, rather
    than running on as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root: `user` is ignored when not started as root")
    conf = write_conf(tmp_path / "u.conf", ["listener 0 127.0.0.1", "allow_anonymous true",
                                            "user no-such-user-midge"])
    r = subprocess.run([MIDGE_BIN, "-c", conf], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=scaled(10))
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert re.search(r"error: user no-such-user-midge: no such user", err), err
    assert_no_sanitizer_text(err, "stderr")


# --------------------------------------------------------------------------------------
# log destinations and levels
# --------------------------------------------------------------------------------------

def test_log_dest_file_appends_with_timestamps(start_broker, tmp_path):
    """log_dest file PATH: lines are appended after what the file already holds, each
    with the timestamp; nothing goes to stderr."""
    log = tmp_path / "broker.log"
    log.write_text("an earlier line\n")
    br = start_broker(conf=[f"log_dest file {log}"], expect_listen=False)
    m = wait_file(log, r"listening on 127\.0\.0\.1:(\d+) \(mqtt\)")
    c = client(int(m.group(1)), "filelog")
    c.disconnect()
    wait_file(log, r"client filelog disconnected: DISCONNECT received$")
    lines = read(log).splitlines()
    assert lines[0] == "an earlier line", lines[:2]
    for ln in lines[1:]:
        assert re.match(rf"^{TS} (error|warning|notice|info|debug|subscribe|unsubscribe): ",
                        ln), ln
    assert br.log() == "", f"log_dest file also wrote to stderr/stdout:\n{br.log()}"


def test_log_dest_file_without_timestamps(start_broker, tmp_path):
    """log_timestamp false also applies to the file: lines start with the level."""
    log = tmp_path / "plain.log"
    br = start_broker(conf=[f"log_dest file {log}", "log_timestamp false"],
                      expect_listen=False)
    wait_file(log, r"^notice: listening on 127\.0\.0\.1:\d+ \(mqtt\)$")
    br.stop()
    for ln in read(log).splitlines():
        assert re.match(r"^(error|warning|notice|info|debug|subscribe|unsubscribe): ", ln), ln


def test_log_dest_stdout_only(procs, tmp_path):
    """log_dest stdout: the lines go to stdout and stderr stays empty."""
    conf = write_conf(tmp_path / "o.conf", ["listener 0 127.0.0.1", "allow_anonymous true",
                                            "log_dest stdout"])
    p = procs([MIDGE_BIN, "-c", conf])
    m = wait_file(p.out_path, r"notice: listening on 127\.0\.0\.1:(\d+)")
    client(int(m.group(1)), "to-stdout").disconnect()
    wait_file(p.out_path, r"client to-stdout disconnected")
    p.stop()
    assert p.err() == "", p.err()


def test_log_dest_stdout_and_file_together(procs, tmp_path):
    """log_dest lines accumulate: stdout and a file both get every line."""
    log = tmp_path / "both.log"
    conf = write_conf(tmp_path / "o.conf", ["listener 0 127.0.0.1", "allow_anonymous true",
                                            "log_dest stdout", f"log_dest file {log}"])
    p = procs([MIDGE_BIN, "-c", conf])
    m = wait_file(p.out_path, r"listening on 127\.0\.0\.1:(\d+)")
    wait_file(log, re.escape(m.group(0)))
    p.stop()
    assert p.err() == ""
    assert re.search(r"midge stopped", read(log)) and re.search(r"midge stopped", p.out())


def test_log_dest_none(procs, tmp_path):
    """log_dest none: not a single line anywhere, and the broker still serves."""
    conf = write_conf(tmp_path / "n.conf", ["listener 0 127.0.0.1", "allow_anonymous true",
                                            "log_dest none"])
    p = procs([MIDGE_BIN, "-c", conf])
    socks = wait_for(lambda: listen_sockets(p.pid), what="midge listening")
    c = client(next(iter(socks))[1], "silent")
    c.ping()
    c.disconnect()
    p.stop()
    assert p.out() == "" and p.err() == "", (p.out(), p.err())


def test_log_type_error_hides_notice(procs, tmp_path):
    """log_type error (no -v): notice lines (listening, connects) are not written; error
    lines are (a reload of a broken file)."""
    path = tmp_path / "e.conf"
    write_conf(path, ["listener 0 127.0.0.1", "allow_anonymous true", "log_type error"])
    p = procs([MIDGE_BIN, "-c", str(path)])
    socks = wait_for(lambda: listen_sockets(p.pid), what="midge listening")
    c = client(next(iter(socks))[1], "quiet-client")
    c.ping()
    write_conf(path, ["listener 0 127.0.0.1", "allow_anonymous true", "log_type error",
                      "no_such_option"])
    p.proc.send_signal(signal.SIGHUP)
    wait_file(p.err_path, rf"error: {re.escape(str(path))}:4: unknown option")
    wait_file(p.err_path, r"error: reload: .* has errors")
    c.ping()
    c.disconnect()
    p.stop()
    text = p.err()
    assert not re.search(r"notice:|info:|debug:", text), text


def test_connection_messages_false(start_broker):
    """connection_messages false: no "connected from" / "disconnected" lines; other
    lines are still logged."""
    br = start_broker(conf=["connection_messages false"])
    c = client(br, "unlogged")
    c.subscribe("x/#")
    c.disconnect()
    c2 = client(br, "unlogged2")
    c2.close()
    client(br, "marker").ping()  # something after both that must have been processed
    br.stop()
    br.assert_no_log(r"connected from|disconnected")
    assert re.search(r"listening on", br.log())


# --------------------------------------------------------------------------------------
# journald priority prefixes
# --------------------------------------------------------------------------------------

def journal_env(stderr_path, match=True):
    st = os.stat(stderr_path)
    env = dict(os.environ)
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}" if match else "1:1"
    return env


def check_prefixes(text, want_levels):
    """Every non-empty line is '<N>' + the usual line, N matching its level word; each of
    want_levels occurs."""
    seen = set()
    for ln in text.splitlines():
        m = re.match(rf"^<(\d)>{TS} (\w+): ", ln)
        assert m, f"line without a journald priority prefix: {ln!r}\nall:\n{text}"
        assert LEVEL_PRIORITY.get(m.group(2)) == int(m.group(1)), f"wrong priority: {ln!r}"
        seen.add(m.group(2))
    assert set(want_levels) <= seen, f"levels seen {seen}, wanted {want_levels}"


def test_journal_stream_runtime_lines_have_priority_prefixes(procs, tmp_path):
    """Under systemd (JOURNAL_STREAM = dev:ino of stderr) every line starts with its
    syslog priority: <5> notice, <6> info, <4> warning, <3> error."""
    errf = tmp_path / "stderr"
    errf.touch()
    path = tmp_path / "j.conf"
    write_conf(path, ["listener 0 127.0.0.1", "allow_anonymous true"])
    p = procs([MIDGE_BIN, "-c", str(path), "-v"], env=journal_env(errf),
              stderr_file=str(errf))
    m = wait_file(errf, r"^<5>.* notice: listening on 127\.0\.0\.1:(\d+)")
    c = client(int(m.group(1)), "journal")
    c.subscribe("j/#")
    write_conf(path, ["listener 0 127.0.0.1", "allow_anonymous true", "plugin /x.so"])
    p.proc.send_signal(signal.SIGHUP)
    wait_file(errf, r"^<4>.* warning: .*plugin: not supported")
    wait_file(errf, r"configuration reloaded")
    write_conf(path, ["listener 0 127.0.0.1", "allow_anonymous true", "bogus"])
    p.proc.send_signal(signal.SIGHUP)
    wait_file(errf, r"^<3>.* error: reload: ")
    c.disconnect()
    p.stop()
    check_prefixes(read(errf), ["error", "warning", "notice"])


def test_journal_stream_startup_config_messages_have_priority_prefixes(tmp_path):
    """The configuration is read before the logger starts; its messages must carry the
    prefixes too, or journalctl -p warning / -p err misses why the service did not start
    (journald files unprefixed lines at the default priority, info)."""
    errf = tmp_path / "stderr"
    errf.touch()
    conf = write_conf(tmp_path / "s.conf", ["listener 0 127.0.0.1", "plugin /x.so",
                                            "bogus_option 1"])
    with open(errf, "ab") as fe:
        r = subprocess.run([MIDGE_BIN, "-c", conf], env=journal_env(errf),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fe,
                           timeout=scaled(10))
    text = read(errf)
    assert r.returncode == 1, text
    assert re.search(r'^<4>.*s\.conf:2: plugin: not supported', text, re.M), text
    assert re.search(r'^<3>.*s\.conf:3: unknown option "bogus_option"', text, re.M), text
    for ln in text.splitlines():
        assert re.match(r"^<[0-7]>", ln), f"line without a priority prefix: {ln!r}\n{text}"


def test_journal_stream_not_matching_stderr_means_no_prefix(procs, tmp_path):
    """JOURNAL_STREAM naming another file (stderr redirected elsewhere, as when started
    from a shell inside a service): plain lines, no prefixes."""
    errf = tmp_path / "stderr"
    errf.touch()
    conf = write_conf(tmp_path / "n.conf", ["listener 0 127.0.0.1", "allow_anonymous true"])
    p = procs([MIDGE_BIN, "-c", conf], env=journal_env(errf, match=False),
              stderr_file=str(errf))
    wait_file(errf, rf"^{TS} notice: listening on 127\.0\.0\.1:\d+")
    p.stop()
    assert not re.search(r"^<\d>", read(errf), re.M), read(errf)
