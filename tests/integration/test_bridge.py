"""test_bridge.py - bridges (issue 14) through the real binary: midge to midge both ways, a
real Mosquitto as the remote (plain, TLS with a client certificate, a password file), the
remote down at start, every `topic` remapping form, notifications and the bridge's figures,
SIGHUP adding, removing and changing bridges, and a scripted remote for what real brokers
rarely do (refusing the bridge bit, sending garbage, checking SNI).

Each bridge here names its remote_clientid, so the remote's log lines can be matched.
"""
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

import midge_harness as h
from midge_harness import TIMEOUT, Mosquitto, PahoClient, midge_only, needs, scaled

pytestmark = [midge_only, needs(h.MOSQUITTO, reason="Mosquitto is a remote of these tests")]

TS_RE = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) "


def bridge(name, port, *lines, host="127.0.0.1"):
    """The lines of a bridge section to host:port, with a fast restart for tests."""
    return [f"connection {name}", f"address {host}:{port}", f"remote_clientid r-{name}",
            f"local_clientid l-{name}", "restart_timeout 1", *lines]


def wait_up(a, remote, name, since=0, remote_since=0):
    """The bridge is connected and its remote subscriptions are in place."""
    a.wait_log(rf"bridge {name}: connected to ", since=since)
    if hasattr(remote, "mark"):  # a midge remote: its SUBSCRIBE (or none) has been handled
        remote.wait_log(rf"client r-{name} connected from ", since=remote_since)


def drain(c, t=0.6):
    """Every message c receives within t seconds of quiet, as (topic, payload) pairs."""
    got = []
    while True:
        try:
            m = c.messages.get(timeout=t)
        except Exception:
            return got
        got.append((m.topic, m.payload))


def websockets_port(br):
    return int(br.wait_log(r"listening on 127\.0\.0\.1:(\d+) \(websockets").group(1))


def conf_of(br):
    with open(br.conf_path) as f:
        return f.read().splitlines()


def reload(br, lines, ok=True):
    with open(br.conf_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    if ok:
        br.wait_log(r"configuration reloaded from ", since=mark)
    else:
        br.wait_log(r"(has errors \(above\); the|reload: the) running configuration stays in force",
                    since=mark)
    return mark


# ---- midge to midge --------------------------------------------------------------------------

def test_both_ways_exactly_once(start_broker):
    """A `both` bridge between two midges: a publish on either side reaches the subscribers
    of both sides exactly once (the bridge bit keeps it from coming back), QoS 1 end to end."""
    b = start_broker()
    a = start_broker(bridge("tob", b.port, "topic t/# both 1"))
    wait_up(a, b, "tob")
    b.wait_log(r"client r-tob subscribed to t/# \(QoS 1\)")
    sa, sb = PahoClient(a.port, "sa"), PahoClient(b.port, "sb")
    sa.subscribe("t/#", 1)
    sb.subscribe("t/#", 1)
    PahoClient(a.port, "pa").publish("t/a", b"from-a", qos=1)
    PahoClient(b.port, "pb").publish("t/b", b"from-b", qos=1)
    got_a, got_b = drain(sa, 1.0), drain(sb, 1.0)
    assert sorted(got_a) == [("t/a", b"from-a"), ("t/b", b"from-b")]
    assert sorted(got_b) == [("t/a", b"from-a"), ("t/b", b"from-b")]
    # QoS 1 both ways: the received copies kept QoS 1 (the minimum of line and message).
    a.assert_no_log(r"bridge tob: .*dropped")


def test_qos_is_the_minimum(start_broker):
    """The topic line's QoS caps the message's: QoS 2 published under a QoS 1 line arrives
    with QoS 1, QoS 0 stays 0; the retained flag crosses (bridge_outgoing_retain true)."""
    b = start_broker()
    a = start_broker(bridge("q", b.port, "topic q/# out 1"))
    wait_up(a, b, "q")
    sb = PahoClient(b.port, "sb")
    sb.subscribe("q/#", 2)
    p = PahoClient(a.port, "p")
    p.publish("q/two", b"2", qos=2)
    m = sb.get()
    assert (m.topic, m.qos) == ("q/two", 1)
    p.publish("q/zero", b"0", qos=0)
    m = sb.get()
    assert (m.topic, m.qos) == ("q/zero", 0)
    p.publish("q/kept", b"r", qos=1, retain=True)
    sb.get()
    late = PahoClient(b.port, "late")
    late.subscribe("q/kept", 1)
    m = late.get()
    assert (m.topic, m.payload, m.retain) == ("q/kept", b"r", True)


def test_outgoing_retain_false(start_broker):
    """bridge_outgoing_retain false: the retain bit is cleared on the way out."""
    b = start_broker()
    a = start_broker(bridge("nr", b.port, "topic r/# out 1", "bridge_outgoing_retain false"))
    wait_up(a, b, "nr")
    PahoClient(a.port, "p").publish("r/x", b"v", qos=1, retain=True)
    b.wait_log(r"r-nr")
    time.sleep(0.3)
    late = PahoClient(b.port, "late")
    late.subscribe("r/x", 1)
    late.expect_nothing(0.5)


def test_remapping_every_form(start_broker):
    """Every `topic` form of mosquitto.conf(5)'s table, both ways, between two midges."""
    b = start_broker()
    a = start_broker(bridge(
        "map", b.port,
        "topic a/# out 1 L/ R/",
        "topic b/# in 1 L/ R/",
        "topic c out 1 \"\" R/",
        "topic d in 1 L/ \"\"",
        "topic \"\" out 1 single/local single/remote",
        "topic \"\" in 1 one/local one/remote",
        "topic e/# both 0 \"\" \"\"",
        "topic # both 1 loc/tree/ rem/tree/"))
    wait_up(a, b, "map")
    b.wait_log(r"client r-map subscribed to rem/tree/#")
    sa, sb = PahoClient(a.port, "sa"), PahoClient(b.port, "sb")
    sa.subscribe("#", 1)
    sb.subscribe("#", 1)
    pa, pb = PahoClient(a.port, "pa"), PahoClient(b.port, "pb")
    for t in ["L/a/x", "c", "single/local", "e/1", "loc/tree/x/y", "a/x", "L/b/x"]:
        pa.publish(t, t.encode(), qos=1)
    for t in ["R/b/x", "d", "one/remote", "e/2", "rem/tree/z", "R/a/x"]:
        pb.publish(t, t.encode(), qos=1)
    got_a = {(t, p) for t, p in drain(sa, 1.0)}
    got_b = {(t, p) for t, p in drain(sb, 1.0)}
    crossed_to_b = {(t, p) for t, p in got_b if t.encode() != p}
    crossed_to_a = {(t, p) for t, p in got_a if t.encode() != p}
    assert crossed_to_b == {("R/a/x", b"L/a/x"), ("R/c", b"c"), ("single/remote", b"single/local"),
                            ("rem/tree/x/y", b"loc/tree/x/y")}
    assert crossed_to_a == {("L/b/x", b"R/b/x"), ("L/d", b"d"), ("one/local", b"one/remote"),
                            ("loc/tree/z", b"rem/tree/z")}
    # e/# without prefixes crosses unchanged; a/x (no L/ prefix) and R/a/x (an out line's
    # remote side) stay where they were published.
    assert ("e/1", b"e/1") in got_b and ("e/2", b"e/2") in got_a
    assert ("a/x", b"a/x") not in got_b and ("R/a/x", b"R/a/x") not in got_a


def test_remote_down_at_start(start_broker):
    """The remote is down when midge starts: failed attempts are logged with the reason and
    the next delay; QoS 1 and QoS 0 messages published meanwhile wait in the bridge's
    session and arrive in order once the remote is up."""
    port = h.free_port()
    a = start_broker(bridge("late", port, "topic late/# out 1"))
    a.wait_log(rf"bridge late: connecting to 127\.0\.0\.1:{port}")
    a.wait_log(rf"bridge late: connecting to 127\.0\.0\.1:{port} failed: Connection refused; "
               r"next attempt in 1\.0 s \(127\.0\.0\.1\)")
    p = PahoClient(a.port, "p")
    for i in range(20):
        p.publish("late/q", f"{i}".encode(), qos=1 if i % 2 else 0)
    # The remote comes up with its subscriber in place before the bridge can reach it: it
    # listens first on another port only, and opens the bridge's port by a reload.
    b = start_broker()
    sb = PahoClient(b.port, "sb")
    sb.subscribe("late/#", 1)
    reload(b, conf_of(b) + [f"listener {port} 127.0.0.1"])
    b.wait_log(r"client r-late connected from ")
    got = [int(p) for _, p in drain(sb, 1.5)]
    assert got == list(range(20)), got


# ---- Mosquitto as the remote -----------------------------------------------------------------

def test_mosquitto_remote_plain(start_broker):
    """A real Mosquitto as the remote: messages both ways, the state notification on both
    sides (1 while connected, the will's 0 after a SIGKILL of midge)."""
    m = Mosquitto()
    try:
        a = start_broker(bridge("mq", m.port, "topic up/# out 1", "topic down/# in 1",
                                "keepalive_interval 5"))
        a.wait_log(r"bridge mq: connected to .*with the bridge bit")
        m.wait_log(r"New bridge connected from 127\.0\.0\.1:\d+ as r-mq")
        sm = PahoClient(m.port, "sm")
        sm.subscribe("#", 1)
        sm.subscribe("$SYS/broker/connection/#", 1)
        sa = PahoClient(a.port, "sa")
        sa.subscribe("down/#", 1)
        sa.subscribe("$SYS/broker/connection/#", 1)
        PahoClient(a.port, "pa").publish("up/1", b"u", qos=1)
        PahoClient(m.port, "pm").publish("down/1", b"d", qos=1)
        got_m = drain(sm, 1.0)
        got_a = drain(sa, 1.0)
        assert ("up/1", b"u") in got_m
        assert ("$SYS/broker/connection/mq/state", b"1") in got_m
        assert ("down/1", b"d") in got_a
        assert ("$SYS/broker/connection/mq/state", b"1") in got_a
        a.kill()
        m_msg = sm.get(timeout=scaled(10))
        assert (m_msg.topic, m_msg.payload) == ("$SYS/broker/connection/mq/state", b"0")
    finally:
        m.stop()


def test_mosquitto_remote_password(start_broker, tmp_path):
    """A remote with a password file: wrong credentials give one clear line per attempt and
    attempts back off (decorrelated jitter between base and cap, as logged); a reload with the
    right password restarts the bridge, which then connects."""
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "bridgeuser", "right"], check=True,
                   capture_output=True)
    os.chmod(pw, 0o644)
    m = Mosquitto([f"password_file {pw}"], anonymous=False)
    try:
        lines = bridge("pw", m.port, "topic up/# out 1", "remote_username bridgeuser",
                       "remote_password wrong", "restart_timeout 1 3")
        a = start_broker(lines)
        fail_re = (TS_RE + r"notice: bridge pw: connection to 127\.0\.0\.1:\d+ failed: the "
                   r"remote refused the connection: CONNACK ([45]) ([a-z ]+); next attempt in "
                   r"([\d.]+) s")
        seen = []
        deadline = time.monotonic() + scaled(30)
        while len(seen) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = [re.search(fail_re, ln) for ln in a.log().splitlines()]
            seen = [x for x in seen if x]
        assert len(seen) >= 6, a.log()
        stamps = [time.mktime(time.strptime(x.group(1)[:19], "%Y-%m-%d %H:%M:%S")) +
                  int(x.group(1)[20:]) / 1000.0 for x in seen]
        delays = [float(x.group(4)) for x in seen]
        assert seen[0].group(3) in ("not authorized", "bad user name or password")
        for i in range(len(seen) - 1):
            assert 1.0 <= delays[i] <= 3.0, delays
            gap = stamps[i + 1] - stamps[i]
            # The next failure comes the announced delay later (plus a connection's time).
            assert delays[i] - 0.05 <= gap <= delays[i] + scaled(0.5), (i, gap, delays)
        assert len(set(delays)) > 1, f"no jitter: {delays}"
        # Never a tight loop: at most one attempt per second at this base.
        assert all(d >= 1.0 for d in delays)
        mark = reload(a, [ln.replace("remote_password wrong", "remote_password right")
                          for ln in conf_of(a)])
        a.wait_log(r"reload: bridge pw changed: restarting it", since=mark)
        a.wait_log(r"bridge pw: connected to ", since=mark, timeout=scaled(10))
        m.wait_log(r"as r-pw")
    finally:
        m.stop()


OPENSSL = "/usr/bin/openssl"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def ossl(*args):
    r = subprocess.run([OPENSSL] + list(args), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")


def make_certs(d, san="IP:127.0.0.1,DNS:localhost"):
    """A CA, a server certificate for san and a client certificate, all signed by the CA."""
    d = str(d)
    ca, cakey = f"{d}/ca.crt", f"{d}/ca.key"
    ossl("req", "-x509", *EC_KEY, "-keyout", cakey, "-out", ca, "-days", "30",
         "-subj", "/CN=bridge test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    out = {"ca": ca}
    for name, ext in (("server", f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(f"{d}/{name}.ext", "w") as f:
            f.write(ext)
        ossl("req", *EC_KEY, "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr",
             "-subj", f"/CN={name}")
        ossl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", ca, "-CAkey", cakey,
             "-set_serial", "7" if name == "server" else "8", "-days", "30",
             "-out", f"{d}/{name}.crt", "-extfile", f"{d}/{name}.ext")
        out[name] = (f"{d}/{name}.crt", f"{d}/{name}.key")
    return out


@needs(OPENSSL, reason="the tests make their certificates with openssl")
def test_mosquitto_remote_tls_client_certificate(start_broker, tmp_path):
    """TLS to a Mosquitto that requires a client certificate: bridge_cafile, bridge_certfile,
    bridge_keyfile; the host name (here the address, and localhost by name) is verified;
    messages cross both ways. A wrong CA fails with the certificate error in the log line."""
    c = make_certs(tmp_path)
    m = Mosquitto([f"cafile {c['ca']}", f"certfile {c['server'][0]}",
                   f"keyfile {c['server'][1]}", "require_certificate true"])
    try:
        tls = [f"bridge_cafile {c['ca']}", f"bridge_certfile {c['client'][0]}",
               f"bridge_keyfile {c['client'][1]}"]
        a = start_broker(bridge("tls", m.port, "topic up/# out 1", "topic down/# in 1", *tls) +
                         bridge("byname", m.port, "topic x/# out 0", *tls, host="localhost"))
        a.wait_log(r"TLS connection to 127\.0\.0\.1:\d+: TLSv1\.[23]")
        a.wait_log(r"bridge tls: connected to 127\.0\.0\.1:")
        a.wait_log(r"bridge byname: connected to localhost:")
        sm = PahoClient(m.port, "sm") if False else None  # Mosquitto's listener is TLS only
        sa = PahoClient(a.port, "sa")
        sa.subscribe("down/#", 1)
        # A TLS client on Mosquitto's side: mosquitto_pub with the client certificate.
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(m.port), "--cafile",
                        c["ca"], "--cert", c["client"][0], "--key", c["client"][1], "-t",
                        "down/1", "-m", "over-tls", "-q", "1"], check=True, timeout=scaled(10))
        got = drain(sa, 1.0)
        assert ("down/1", b"over-tls") in got
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(m.port), "--cafile",
                                c["ca"], "--cert", c["client"][0], "--key", c["client"][1], "-t",
                                "up/#", "-C", "1", "-W", "10", "-q", "1"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        PahoClient(a.port, "pa").publish("up/1", b"to-tls", qos=1)
        out, _ = sub.communicate(timeout=scaled(15))
        assert out.strip() == "to-tls"
        del sm
    finally:
        m.stop()

    # The wrong CA: one line per attempt naming the certificate problem.
    other = tmp_path / "other"
    other.mkdir()
    c2 = make_certs(other)
    m = Mosquitto([f"cafile {c['ca']}", f"certfile {c['server'][0]}",
                   f"keyfile {c['server'][1]}", "require_certificate true"])
    try:
        a2 = start_broker(bridge("badca", m.port, "topic up/# out 1", f"bridge_cafile {c2['ca']}",
                                 f"bridge_certfile {c['client'][0]}",
                                 f"bridge_keyfile {c['client'][1]}"))
        a2.wait_log(r"bridge badca: connection to 127\.0\.0\.1:\d+ failed: TLS handshake failed: "
                    r"certificate verify failed \(remote certificate: (unable to get local issuer "
                    r"certificate|self-signed certificate in certificate chain)\); next attempt in")
    finally:
        m.stop()


@needs(OPENSSL, reason="the tests make their certificates with openssl")
def test_tls_host_name_checked(start_broker, tmp_path):
    """The remote's certificate must name the host the bridge dialled; bridge_insecure true
    skips that check (and only that: the CA still verifies the chain)."""
    c = make_certs(tmp_path, san="DNS:elsewhere.example")
    m = Mosquitto([f"cafile {c['ca']}", f"certfile {c['server'][0]}", f"keyfile {c['server'][1]}"])
    try:
        a = start_broker(bridge("strict", m.port, "topic s/# out 0", f"bridge_cafile {c['ca']}") +
                         bridge("loose", m.port, "topic l/# out 0", f"bridge_cafile {c['ca']}",
                                "bridge_insecure true"))
        a.wait_log(r"bridge strict: connection to 127\.0\.0\.1:\d+ failed: TLS handshake failed: "
                   r"certificate verify failed \(remote certificate: IP address mismatch\)")
        a.wait_log(r"bridge loose: connected to ")
    finally:
        m.stop()


# ---- a scripted remote -----------------------------------------------------------------------

class FakeRemote:
    """A TCP (or TLS) server on a free port that answers each connection with handler(conn,
    connect_bytes) in a thread, recording every CONNECT it read (and TLS SNI names)."""

    def __init__(self, handler, tls=None):
        self.handler = handler
        self.connects = []
        self.sni = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*tls)
            self.ctx.sni_callback = lambda s, name, ctx: self.sni.append(name)
        self.stopped = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            if self.ctx:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            conn.settimeout(TIMEOUT)
            data = read_packet(conn)
            self.connects.append(data)
            self.handler(conn, data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        self.sock.close()


def read_packet(conn):
    head = conn.recv(2)
    if len(head) < 2:
        raise OSError("closed")
    n, shift, i = 0, 0, 1
    b = head[1]
    while True:
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        b = conn.recv(1)[0]
    body = b""
    while len(body) < n:
        chunk = conn.recv(n - len(body))
        if not chunk:
            raise OSError("closed")
        body += chunk
    return head[:1] + body


def serve_plain(conn, connect):
    """CONNACK 0, then SUBACK every SUBSCRIBE, PINGRESP every PINGREQ, until closed."""
    conn.sendall(b"\x20\x02\x00\x00")
    while True:
        p = read_packet(conn)
        if p[0] >> 4 == 8:  # SUBSCRIBE: grant QoS 1 to each filter
            body, pid, i, codes = p[1:], p[1:3], 2, b""
            while i < len(body):
                n = body[i] << 8 | body[i + 1]
                i += 2 + n + 1
                codes += b"\x01"
            conn.sendall(bytes([0x90, 2 + len(codes)]) + pid + codes)
        elif p[0] >> 4 == 12:
            conn.sendall(b"\xd0\x00")
        elif p[0] >> 4 == 14:
            return


def test_bridge_bit_refused_falls_back(start_broker):
    """A remote that refuses the bridge bit (CONNACK 1 to protocol level 0x84): one line says
    so, the bridge connects again at once as a plain 3.1.1 client and stays connected."""
    def handler(conn, connect):
        level = connect[7]  # after the first byte, the name length and "MQTT"
        if level & 0x80:
            conn.sendall(b"\x20\x02\x00\x01")
            return
        serve_plain(conn, connect)
    r = FakeRemote(handler)
    try:
        a = start_broker(bridge("nobit", r.port, "topic t/# out 0"))
        a.wait_log(r"bridge nobit: 127\.0\.0\.1:\d+ refused the bridge bit \(try_private\): "
                   r"connecting again as a plain client")
        a.wait_log(r"bridge nobit: connected to 127\.0\.0\.1:\d+ \(MQTT 3\.1\.1, new session\)")
        assert [c[7] for c in r.connects[:2]] == [0x84, 0x04]
        a.assert_no_log(r"bridge nobit: connected to .*with the bridge bit")
    finally:
        r.stop()


@pytest.mark.parametrize("answer,why", [
    (b"\xff\xff\xff\xff\xff", r"protocol error: the remote sent a malformed packet \(.*\)"),
    (b"\x30\x05\x00\x01t\x00\x00", r"protocol error: the remote sent PUBLISH before CONNACK"),
    (b"\x20\x03\x00\x00\x00", r"protocol error: the remote sent a malformed packet \(.*\)"),
    (b"\x20\x02\x00\x05", r"the remote refused the connection: CONNACK 5 not authorized"),
    (b"", r"connection closed by peer"),
], ids=["garbage", "publish-first", "bad-connack", "refused", "closed"])
def test_bad_remote_backs_off(start_broker, answer, why):
    """Whatever a remote answers to CONNECT that is not a CONNACK 0, the bridge logs one line
    with the reason per attempt and tries again after restart_timeout, never faster."""
    def handler(conn, connect):
        if answer:
            conn.sendall(answer)
            time.sleep(0.3)
    r = FakeRemote(handler)
    try:
        a = start_broker(bridge("bad", r.port, "topic t/# out 0", "try_private false",
                                "restart_timeout 1"))
        a.wait_log(rf"bridge bad: connection to 127\.0\.0\.1:\d+ failed: {why}; next attempt in "
                   r"1\.0 s")
        t0 = time.monotonic()
        n0 = len(r.connects)
        time.sleep(scaled(3.2))
        n = len(r.connects) - n0
        # One attempt per restart_timeout (1 s), never more.
        assert 2 <= n <= (time.monotonic() - t0) / 1.0 + 1, n
        assert a.alive()
    finally:
        r.stop()


def test_oversized_packet_from_remote(start_broker):
    """A remote that announces a packet over max_packet_size: refused from its header,
    the connection closed with a clear line, and tried again later."""
    def handler(conn, connect):
        conn.sendall(b"\x20\x02\x00\x00")
        conn.sendall(b"\x30\xff\xff\xff\x7f")  # PUBLISH of 256 MiB
        time.sleep(0.5)
    r = FakeRemote(handler)
    try:
        a = start_broker(["max_packet_size 1000"] + bridge("big", r.port, "topic t/# in 0",
                                                           "try_private false"))
        a.wait_log(r"bridge big: connection to 127\.0\.0\.1:\d+ lost: protocol error: the remote "
                   r"sent a malformed packet \(.*\); next attempt in")
    finally:
        r.stop()


@needs(OPENSSL, reason="the tests make their certificates with openssl")
def test_sni_sent(start_broker, tmp_path):
    """The TLS client sends the host name it dials as SNI (never an address)."""
    c = make_certs(tmp_path)
    r = FakeRemote(serve_plain, tls=c["server"])
    try:
        a = start_broker(bridge("sni", r.port, "topic t/# out 0", f"bridge_cafile {c['ca']}",
                                host="localhost") +
                         bridge("ip", r.port, "topic u/# out 0", f"bridge_cafile {c['ca']}"))
        a.wait_log(r"bridge sni: connected to localhost:")
        a.wait_log(r"bridge ip: connected to 127\.0\.0\.1:")
        assert "localhost" in r.sni and None in r.sni
    finally:
        r.stop()


# ---- notifications, figures, queue limits ---------------------------------------------------

def test_figures_in_sys_and_metrics(start_broker):
    """$SYS/broker/bridge/NAME/... and /metrics show each bridge's figures."""
    b = start_broker()
    a = start_broker(["sys_interval 1", "listener 0 127.0.0.1", "protocol websockets"] +
                     bridge("fig", b.port, "topic f/# out 1"))
    wait_up(a, b, "fig")
    s = PahoClient(a.port, "s")
    s.subscribe("$SYS/broker/bridge/fig/#", 0)
    PahoClient(a.port, "p").publish("f/1", b"x", qos=1)
    seen = {}
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline and seen.get("messages/sent") != b"1":
        try:
            m = s.messages.get(timeout=0.5)
        except Exception:
            continue
        seen[m.topic.split("/", 4)[4]] = m.payload
    assert seen.get("connected") == b"1"
    assert seen.get("messages/sent") == b"1"
    assert "bytes/sent" in seen and "queued" in seen and "reconnects" in seen
    ws_port = websockets_port(a)
    text = urllib.request.urlopen(f"http://127.0.0.1:{ws_port}/metrics", timeout=5).read().decode()
    assert 'midge_bridge_connected{bridge="fig"} 1' in text
    assert 'midge_bridge_messages_sent_total{bridge="fig"} 1' in text
    assert "# TYPE midge_bridge_dropped_total counter" in text


def test_queue_limit_drops_counted(start_broker):
    """While the remote is down the bridge's session queue has max_queued_messages: past it
    the newest messages are dropped, counted and logged (once per interval), never kept."""
    port = h.free_port()
    a = start_broker(["max_queued_messages 5", "sys_interval 1"] +
                     bridge("cap", port, "topic cap/# out 1"))
    a.wait_log(r"bridge cap: connecting to .* failed")
    p = PahoClient(a.port, "p")
    for i in range(12):
        p.publish("cap/x", str(i).encode(), qos=1)
    a.wait_log(r"client l-cap: queue full \(5 messages, \d+ bytes\), dropped message on cap/x")
    assert len(re.findall(r"client l-cap: queue full", a.log())) == 1
    s = PahoClient(a.port, "s")
    s.subscribe("$SYS/broker/bridge/cap/dropped", 0)
    deadline = time.monotonic() + scaled(5)
    while True:
        m = s.get(timeout=max(0.1, deadline - time.monotonic()))
        if m.payload == b"7":
            break
    b = start_broker()
    sb = PahoClient(b.port, "sb")
    sb.subscribe("cap/#", 1)
    reload(b, conf_of(b) + [f"listener {port} 127.0.0.1"])
    got = [int(p) for _, p in drain(sb, 1.5)]
    assert got == [0, 1, 2, 3, 4], got


def test_notifications_local_only(start_broker):
    """notifications_local_only: the state goes to the local broker only (no will, nothing
    published on the remote); notifications false: nowhere."""
    b = start_broker()
    sb = PahoClient(b.port, "sb")
    sb.subscribe("$SYS/broker/connection/#", 1)
    a = start_broker(bridge("lo", b.port, "topic t/# out 0", "notifications_local_only true") +
                     bridge("none", b.port, "topic u/# out 0", "notifications false"))
    wait_up(a, b, "lo")
    wait_up(a, b, "none")
    sa = PahoClient(a.port, "sa")
    sa.subscribe("$SYS/broker/connection/#", 1)
    assert drain(sa, 0.8) == [("$SYS/broker/connection/lo/state", b"1")]
    sb.expect_nothing(0.3)


# ---- reload ---------------------------------------------------------------------------------

def test_reload_adds_removes_changes(start_broker):
    """SIGHUP: an unchanged bridge keeps its connection, a removed one stops (and its local
    session ends), a new one starts, a changed one restarts; local clients stay connected; a
    bad bridge section refuses the whole reload."""
    b = start_broker()
    base = ["listener 0 127.0.0.1", "allow_anonymous true"]
    keep = bridge("keep", b.port, "topic k/# out 1")
    gone = bridge("gone", b.port, "topic g/# out 1")
    chg = bridge("chg", b.port, "topic c/# out 1")
    a = start_broker(keep + gone + chg)
    for n in ("keep", "gone", "chg"):
        wait_up(a, b, n)
    local = PahoClient(a.port, "stays")
    local.subscribe("k/#", 1)
    mark_b = b.mark()
    new = bridge("new", b.port, "topic n/# out 1")
    mark = reload(a, base + keep + chg[:-1] + ["topic c/# out 0"] + new)
    a.wait_log(r"reload: bridge gone removed: stopping it", since=mark)
    a.wait_log(r"reload: bridge chg changed: restarting it", since=mark)
    a.wait_log(r"reload: bridge new starting", since=mark)
    a.wait_log(r"bridge new: connected to ", since=mark)
    a.wait_log(r"bridge chg: connected to ", since=mark)
    a.wait_log(r"bridge gone: removed; its local session l-gone ended", since=mark)
    b.wait_log(r"client r-gone disconnected", since=mark_b)
    time.sleep(0.3)
    b.assert_no_log(r"client r-keep (dis)?connected", since=mark_b)
    a.assert_no_log(r"bridge keep:", since=mark)
    # The kept bridge still forwards; the local client was not disturbed.
    sb = PahoClient(b.port, "sb")
    sb.subscribe("#", 1)
    PahoClient(a.port, "p").publish("k/1", b"still", qos=1)
    local.get()
    assert ("k/1", b"still") in drain(sb, 0.8)
    mark = reload(a, conf_of(a) + ["connection broken", "address 127.0.0.1:1", "topic a b c"],
                  ok=False)
    a.wait_log(r"topic: expected in, out or both after the pattern, got \"b\"", since=mark)
    a.assert_no_log(r"reload: bridge", since=mark)


def test_test_config_refuses_unimplemented(tmp_path):
    """--test-config refuses an option the bridges do not implement, with the reason."""
    conf = tmp_path / "m.conf"
    conf.write_text("connection x\naddress h\ntopic t\nbridge_require_ocsp true\n")
    r = h.run_midge("-c", conf, "--test-config", rc=1)
    assert "bridge_require_ocsp: midge's bridges do not check OCSP responses" in r.stderr
    conf.write_text("connection x\naddress h\ntopic t\n")
    r = h.run_midge("-c", conf, "--test-config", rc=0)
    assert "(2 listeners, 1 bridge)" in r.stdout


# ---- MQTT 5, WebSocket, start types -------------------------------------------------------------

def test_mqtt5_bridge_keeps_properties(start_broker):
    """bridge_protocol_version mqttv50 between two midges: both sides speak MQTT 5 (the local
    side too), so User Properties, Content Type and the Message Expiry Interval cross; the
    bridge's subscriptions use No Local, so nothing comes back."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    b = start_broker()
    a = start_broker(bridge("v5", b.port, "topic p/# both 1", "bridge_protocol_version mqttv50"))
    a.wait_log(r"bridge v5: connected to 127\.0\.0\.1:\d+ \(MQTT 5\.0, new session\)")
    b.wait_log(r"client r-v5 connected from .*\(MQTT 5\.0")
    a.wait_log(r"client l-v5 connected from bridge:v5 \(MQTT 5\.0")
    b.wait_log(r"client r-v5 subscribed to p/#")
    got = []
    ev = threading.Event()
    sub = mqtt.Client(client_id="sub5", protocol=mqtt.MQTTv5)

    def on_message(c, u, m):
        got.append(m)
        ev.set()
    sub.on_message = on_message
    sub.connect("127.0.0.1", b.port)
    sub.loop_start()
    sub.subscribe("p/#", 1)
    time.sleep(0.3)
    pub = mqtt.Client(client_id="pub5", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", a.port)
    pub.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "a"), ("n", "1")]
    props.ContentType = "text/plain"
    props.MessageExpiryInterval = 300
    pub.publish("p/x", b"hello", 1, properties=props).wait_for_publish(5)
    assert ev.wait(scaled(5))
    m = got[0]
    assert (m.topic, m.payload, m.qos) == ("p/x", b"hello", 1)
    assert m.properties.UserProperty == [("site", "a"), ("n", "1")]
    assert m.properties.ContentType == "text/plain"
    assert 290 <= m.properties.MessageExpiryInterval <= 300
    time.sleep(0.5)
    assert len(got) == 1
    for c in (sub, pub):
        c.disconnect()
        c.loop_stop()


def test_websocket_bridge(start_broker):
    """address ws://host:port/path: MQTT over WebSocket to a midge websockets listener."""
    b = start_broker(["listener 0 127.0.0.1", "protocol websockets"])
    ws_port = websockets_port(b)
    a = start_broker(["connection ws", f"address ws://127.0.0.1:{ws_port}/mqtt",
                      "remote_clientid r-ws", "topic w/# both 1", "restart_timeout 1"])
    a.wait_log(rf"bridge ws: connected to ws://127\.0\.0\.1:{ws_port}/mqtt ")
    b.wait_log(r"client r-ws subscribed to w/#")
    sa, sb = PahoClient(a.port, "sa"), PahoClient(b.port, "sb")
    sa.subscribe("w/#", 1)
    sb.subscribe("w/#", 1)
    PahoClient(a.port, "pa").publish("w/a", b"1", qos=1)
    PahoClient(b.port, "pb").publish("w/b", b"2", qos=1)
    assert sorted(drain(sa)) == [("w/a", b"1"), ("w/b", b"2")]
    assert sorted(drain(sb)) == [("w/a", b"1"), ("w/b", b"2")]


def test_websocket_bridge_refused_upgrade(start_broker):
    """A WebSocket upgrade the remote refuses (an HTTP error) is one clear line per attempt;
    so is a 101 answer with the wrong Sec-WebSocket-Accept."""
    answers = [b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
               b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n"]
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve():
        i = 0
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(4096)
            conn.sendall(answers[min(i, 1)])
            i += 1
            time.sleep(0.2)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    try:
        a = start_broker(["connection ws", f"address ws://127.0.0.1:{port}/mqtt",
                          "topic w/# out 0", "restart_timeout 1"])
        a.wait_log(r"bridge ws: connection to ws://127\.0\.0\.1:\d+/mqtt failed: the remote "
                   r"refused the WebSocket upgrade: HTTP/1\.1 403 Forbidden; next attempt in")
        a.wait_log(r"bridge ws: connection to ws://127\.0\.0\.1:\d+/mqtt failed: the remote's "
                   r"Sec-WebSocket-Accept is wrong; next attempt in")
    finally:
        srv.close()


@needs(OPENSSL, reason="the tests make their certificates with openssl")
def test_secure_websocket_bridge(start_broker, tmp_path):
    """address wss://...: WebSocket over TLS, the remote's certificate checked with
    bridge_cafile."""
    c = make_certs(tmp_path)
    b = start_broker(["listener 0 127.0.0.1", "protocol websockets", f"certfile {c['server'][0]}",
                      f"keyfile {c['server'][1]}"])
    ws_port = websockets_port(b)
    a = start_broker(["connection wss", f"address wss://localhost:{ws_port}/mqtt",
                      "remote_clientid r-wss", f"bridge_cafile {c['ca']}", "topic s/# out 1",
                      "restart_timeout 1"])
    a.wait_log(rf"bridge wss: connected to wss://localhost:{ws_port}/mqtt ")
    b.wait_log(r"client r-wss connected from ")
    sb = PahoClient(b.port, "sb")
    sb.subscribe("s/#", 1)
    time.sleep(0.2)
    PahoClient(a.port, "pa").publish("s/1", b"secure", qos=1)
    assert drain(sb) == [("s/1", b"secure")]


def test_start_type_lazy(start_broker):
    """start_type lazy: the bridge starts once threshold messages are queued for it, and
    stops after idle_timeout without traffic (messages keep queueing meanwhile)."""
    b = start_broker()
    a = start_broker(bridge("lz", b.port, "topic lz/# out 1", "start_type lazy", "threshold 3",
                            "idle_timeout 2"))
    sb = PahoClient(b.port, "sb")
    sb.subscribe("lz/#", 1)
    p = PahoClient(a.port, "p")
    p.publish("lz/1", b"1", qos=1)
    p.publish("lz/2", b"2", qos=1)
    time.sleep(0.8)
    a.assert_no_log(r"bridge lz: connecting")
    p.publish("lz/3", b"3", qos=1)
    a.wait_log(r"bridge lz: 3 messages queued \(threshold 3\): starting")
    a.wait_log(r"bridge lz: connected to ")
    assert [x for _, x in drain(sb)] == [b"1", b"2", b"3"]
    a.wait_log(r"bridge lz: idle for idle_timeout, disconnected from 127\.0\.0\.1:\d+; waiting "
               r"for the threshold", timeout=scaled(6))
    p.publish("lz/4", b"4", qos=1)
    sb.expect_nothing(0.5)


def test_start_type_once(start_broker):
    """start_type once: connected at start-up, not restarted when the connection fails."""
    port = h.free_port()
    a = start_broker(bridge("one", port, "topic o/# out 1", "start_type once"))
    a.wait_log(r"bridge one: connecting to 127\.0\.0\.1:\d+ failed: Connection refused; not "
               r"restarting \(start_type once\)")
    time.sleep(1.5)
    assert len(re.findall(r"bridge one: connecting to 127\.0\.0\.1:\d+$", a.log(), re.M)) == 1


def test_round_robin_failover(start_broker):
    """Several addresses: the first that answers is used; round_robin true stays where it is
    when the connection is lost, going on to the next address."""
    dead = h.free_port()
    b1, b2 = start_broker(), start_broker()
    a = start_broker(["connection rr", f"address 127.0.0.1:{dead} 127.0.0.1:{b1.port}",
                      f"address 127.0.0.1:{b2.port}", "round_robin true", "remote_clientid r-rr",
                      "topic rr/# out 1", "restart_timeout 1"])
    a.wait_log(rf"bridge rr: connecting to 127\.0\.0\.1:{dead} failed: Connection refused; next "
               rf"attempt in 0\.0 s")
    a.wait_log(rf"bridge rr: connected to 127\.0\.0\.1:{b1.port}")
    b1.stop()
    a.wait_log(rf"bridge rr: connected to 127\.0\.0\.1:{b2.port}", timeout=scaled(10))


@pytest.mark.parametrize("version", ["mqttv311", "mqttv50"])
def test_shared_subscription_at_the_remote(start_broker, version):
    """Two sites each take their share of the remote's jobs: `topic jobs/# in 1 "" $share/
    workers/` subscribes to a shared subscription there, and each job reaches one site only,
    under its own topic."""
    b = start_broker()
    sites = []
    for n in ("s1", "s2"):
        site = start_broker(bridge(n, b.port, "topic jobs/# in 1 \"\" $share/workers/",
                                   f"bridge_protocol_version {version}"))
        b.wait_log(rf"client r-{n} subscribed to \$share/workers/jobs/#")
        c = PahoClient(site.port, f"w-{n}")
        c.subscribe("jobs/#", 1)
        sites.append(c)
    p = PahoClient(b.port, "boss")
    for i in range(10):
        p.publish(f"jobs/{i}", str(i).encode(), qos=1)
    got = [drain(c, 1.0) for c in sites]
    assert sorted(int(x) for g in got for _, x in g) == list(range(10))
    assert all(t == f"jobs/{int(x)}" for g in got for t, x in g)
    assert got[0] and got[1]


def test_stop_tells_the_remote(start_broker):
    """SIGTERM: the bridge publishes state 0 on the remote before its DISCONNECT (which
    discards the will), and locally."""
    b = start_broker()
    sb = PahoClient(b.port, "sb")
    sb.subscribe("$SYS/broker/connection/#", 1)
    a = start_broker(bridge("bye", b.port, "topic t/# out 0"))
    wait_up(a, b, "bye")
    assert sb.get().payload == b"1"
    a.stop()
    m = sb.get()
    assert (m.topic, m.payload) == ("$SYS/broker/connection/bye/state", b"0")
    late = PahoClient(b.port, "late")
    late.subscribe("$SYS/broker/connection/bye/state", 0)
    assert late.get().payload == b"0"  # retained


def test_dns_failure_and_bind_address(start_broker):
    """A name that does not resolve is one line naming the lookup failure (the loop goes on);
    bridge_bind_address sets the connection's local address."""
    b = start_broker()
    a = start_broker(bridge("dns", 1883, "topic t/# out 0", host="no-such-host.invalid") +
                     bridge("bind", b.port, "topic u/# out 0", "bridge_bind_address 127.0.0.1"))
    a.wait_log(r"bridge dns: DNS lookup of no-such-host\.invalid failed: .*; next attempt in",
               timeout=scaled(15))
    a.wait_log(r"bridge bind: connected to ")
    b.wait_log(r"client r-bind connected from 127\.0\.0\.1:")
    PahoClient(a.port, "still-serving").publish("x", b"1", qos=1)


def test_psk_to_mosquitto(start_broker, tmp_path):
    """bridge_identity and bridge_psk: TLS-PSK to a Mosquitto listener with a psk_file."""
    psk = tmp_path / "psk"
    psk.write_text("site-a:00112233445566778899aabbccddeeff\n")
    os.chmod(psk, 0o644)
    m = Mosquitto([f"psk_file {psk}", "psk_hint midge-test", "use_identity_as_username true"])
    try:
        a = start_broker(bridge("psk", m.port, "topic p/# out 1", "bridge_identity site-a",
                                "bridge_psk 00112233445566778899aabbccddeeff"))
        a.wait_log(r"bridge psk: connected to ")
        m.wait_log(r"as r-psk")
    finally:
        m.stop()


@needs(OPENSSL, reason="the tests make their certificates with openssl")
def test_reload_refused_for_unusable_tls_file(start_broker, tmp_path):
    """A new bridge whose TLS file cannot be used refuses the whole reload; the running
    bridges stay as they are."""
    b = start_broker()
    a = start_broker(bridge("ok", b.port, "topic t/# out 0"))
    wait_up(a, b, "ok")
    mark = reload(a, conf_of(a) + bridge("bad", b.port, "topic u/# out 0",
                                         f"bridge_cafile {tmp_path}/missing.pem"), ok=False)
    a.wait_log(r"bridge bad: bridge_cafile .*missing\.pem: No such file or directory", since=mark)
    a.wait_log(r"reload: the running configuration stays in force \(the password file, ACL and "
               r"log settings included\)", since=mark)
    a.wait_log(r"reload: bridge bad cannot start \(above\)", since=mark)
    a.assert_no_log(r"bridge ok:", since=mark)


def test_outage_outlasts_persistent_client_expiration(start_broker):
    """persistent_client_expiration ends abandoned sessions, never a bridge's: its queue waits
    however long the remote is away."""
    port = h.free_port()
    a = start_broker(["persistent_client_expiration 1s", "sys_interval 1"] +
                     bridge("long", port, "topic l/# out 1"))
    a.wait_log(r"bridge long: connecting to .* failed")
    PahoClient(a.port, "p").publish("l/1", b"kept", qos=1)
    gone = PahoClient(a.port, "gone", clean_session=False)
    gone.close()
    a.wait_log(r"client gone expired: away for more than 1 s", timeout=scaled(10))
    a.assert_no_log(r"client l-long expired")
    b = start_broker()
    sb = PahoClient(b.port, "sb")
    sb.subscribe("l/#", 1)
    reload(b, conf_of(b) + [f"listener {port} 127.0.0.1"])
    assert drain(sb, 1.5) == [("l/1", b"kept")]
