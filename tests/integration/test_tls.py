"""test_tls.py - TLS listeners (issue 4): a CA, server and client certificates made with
the `openssl` command; mosquitto_pub/sub and paho-mqtt over TLS (QoS 0/1/2, a 1 MB
payload); client certificates (require_certificate, a bad or revoked one refused with a
precise log line, use_identity_as_username with an ACL); a plaintext MQTT client on the
TLS port closed quickly; start-up errors for every file that cannot be used (exit 1,
nothing listening); SIGHUP re-reads the certificates; tls_version tlsv1.3; TCP_NODELAY on
the broker's socket of every kind of connection (issue 17, read through pidfd_getfd).
"""
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from midge_harness import (CONNACK, MIDGE_BIN, MOSQUITTO_PUB, QUIET, SANITIZER_MARKERS, TIMEOUT,
                           Closed, MqttConn, SubProc, connect_pkt, midge_only, run_pub, scaled)
from test_ws_raw import WsConn

pytestmark = midge_only

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


# --------------------------------------------------------------------------------------
# certificates
# --------------------------------------------------------------------------------------

def ossl(*args, cwd=None):
    r = subprocess.run([OPENSSL] + list(args), capture_output=True, cwd=cwd, timeout=60)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr.decode(errors='replace')}"
    return r


def make_ca(d, name="ca", cn="midge test CA"):
    key, crt = os.path.join(d, f"{name}.key"), os.path.join(d, f"{name}.crt")
    ossl("req", "-x509", *EC_KEY, "-keyout", key, "-out", crt, "-days", "30", "-subj", f"/CN={cn}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def make_cert(d, name, cn, ca, serial, server=False):
    """A key and a certificate for cn signed by ca (crt, key), or self-signed when ca is
    None. Server certificates carry SAN IP:127.0.0.1 and DNS:localhost."""
    key, crt = os.path.join(d, f"{name}.key"), os.path.join(d, f"{name}.crt")
    ext = os.path.join(d, f"{name}.ext")
    with open(ext, "w") as f:
        if server:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                    "extendedKeyUsage=serverAuth\n")
        else:
            f.write("extendedKeyUsage=clientAuth\n")
    if ca is None:
        ossl("req", "-x509", *EC_KEY, "-keyout", key, "-out", crt, "-days", "30",
             "-subj", f"/CN={cn}", "-set_serial", str(serial))
        return crt, key
    csr = os.path.join(d, f"{name}.csr")
    ossl("req", *EC_KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
    ossl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial", str(serial),
         "-days", "30", "-out", crt, "-extfile", ext)
    return crt, key


def make_crl(d, ca, revoked_crt):
    """A CRL from ca that revokes revoked_crt (openssl ca needs a small database)."""
    cnf = os.path.join(d, "ca.cnf")
    with open(os.path.join(d, "index.txt"), "w"):
        pass
    with open(os.path.join(d, "crlnumber"), "w") as f:
        f.write("01\n")
    with open(cnf, "w") as f:
        f.write(f"""[ ca ]
default_ca = CA_default
[ CA_default ]
database = {d}/index.txt
crlnumber = {d}/crlnumber
certificate = {ca[0]}
private_key = {ca[1]}
default_md = sha256
default_crl_days = 30
""")
    ossl("ca", "-config", cnf, "-revoke", revoked_crt)
    crl = os.path.join(d, "crl.pem")
    ossl("ca", "-config", cnf, "-gencrl", "-out", crl)
    return crl


class Certs:
    pass


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tls"))
    c = Certs()
    c.dir = d
    c.ca = make_ca(d)
    c.cafile = c.ca[0]
    c.server = make_cert(d, "server", "localhost", c.ca, 1001, server=True)
    c.alice = make_cert(d, "alice", "alice", c.ca, 2001)
    c.revoked = make_cert(d, "revoked", "revoked", c.ca, 2002)
    c.mallory = make_cert(d, "mallory", "mallory", None, 3001)  # self-signed
    c.other_ca = make_ca(d, "otherca", "another CA")
    c.eve = make_cert(d, "eve", "eve", c.other_ca, 4001)  # signed by a CA we do not trust
    c.crl = make_crl(d, c.ca, c.revoked[0])
    return c


# Each TLS test runs twice against midge: with handshakes on the loop thread (the default)
# and with tls_handshake_threads 2 (handshake steps on threads of low priority).
HS_THREADS = [0]


@pytest.fixture(autouse=True, params=[0, 2], ids=["loop", "hs_threads"])
def hs_threads(request):
    HS_THREADS[0] = request.param
    yield


def tls_conf(c, *extra):
    threads = [f"tls_handshake_threads {HS_THREADS[0]}"] if HS_THREADS[0] else []
    return ([f"cafile {c.cafile}", f"certfile {c.server[0]}", f"keyfile {c.server[1]}"] + threads
            + list(extra))


# --------------------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------------------

def client_ctx(c, cert=None, max_version=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=c.cafile)
    if cert is not None:
        ctx.load_cert_chain(cert[0], cert[1])
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


class TlsConn(MqttConn):
    """The harness's raw MQTT client over a TLS socket."""

    def __init__(self, port, ctx, server_hostname="localhost"):
        super().__init__(port)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)

    def _fill(self, deadline):
        if not self.sock.pending():
            left = max(0.0, deadline - time.monotonic())
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return False
        try:
            data = self.sock.recv(1 << 20)
        except ssl.SSLWantReadError:
            return True
        except (ConnectionResetError, ConnectionAbortedError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            raise Closed()
        self.buf += data
        return True


def tls_client(port, ctx, client_id="", **kw):
    c = TlsConn(port, ctx)
    c.connect(client_id, **kw)
    return c


def tls_refused(port, ctx):
    """Handshake, then CONNECT: the server must end the connection without a CONNACK
    (TLS 1.3 reports a refused client certificate only after the client's handshake).
    Returns what the client saw."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        try:
            t = ctx.wrap_socket(s, server_hostname="localhost")
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            return repr(e)
        try:
            t.sendall(connect_pkt("refused"))
            data = t.recv(100)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            return repr(e)
        assert data == b"", f"server answered {data!r} instead of refusing the client"
        return "EOF"
    finally:
        s.close()


def peer_serial(port, c):
    """The serial number of the certificate the server presents to a new connection."""
    ctx = client_ctx(c)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return int(t.getpeercert()["serialNumber"], 16)


class PahoTls:
    """paho-mqtt 1.x over TLS (tls_set); received messages are queued."""

    def __init__(self, port, c, cert=None, client_id="", username=None):
        import queue
        import threading

        import paho.mqtt.client as mqtt
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = {}
        self.cond = threading.Condition()
        self.rc = None
        self.c = mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
        self.c.tls_set(ca_certs=c.cafile, certfile=cert[0] if cert else None,
                       keyfile=cert[1] if cert else None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if username is not None:
            self.c.username_pw_set(username)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda cl, u, m: self.messages.put(m)
        self.c.on_subscribe = self._on_subscribe
        self.c.connect("127.0.0.1", port, 60)
        self.c.loop_start()
        assert self.connected.wait(TIMEOUT), "paho: no CONNACK over TLS"
        assert self.rc == 0, f"paho: CONNACK return code {self.rc}"

    def _on_connect(self, cl, u, flags, rc):
        self.rc = rc
        self.connected.set()

    def _on_subscribe(self, cl, u, mid, granted):
        with self.cond:
            self.subscribed[mid] = granted
            self.cond.notify_all()

    def subscribe(self, topic, qos):
        rc, mid = self.c.subscribe(topic, qos)
        assert rc == 0
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.subscribed, TIMEOUT), "paho: no SUBACK"
            return self.subscribed[mid]

    def publish(self, topic, payload, qos):
        info = self.c.publish(topic, payload, qos)
        info.wait_for_publish(scaled(20))
        assert info.is_published(), "paho: publish over TLS not completed"

    def get(self, timeout=TIMEOUT):
        import queue
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"paho: no message within {timeout:.1f} s")

    def close(self):
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def mosq_tls(c, cert=None):
    args = ["--cafile", c.cafile]
    if cert is not None:
        args += ["--cert", cert[0], "--key", cert[1]]
    return args


def run_midge(conf_lines, tmp_path, name="midge.conf"):
    """Run midge on a configuration that must fail at start-up: (status, stderr)."""
    conf = tmp_path / name
    conf.write_text("\n".join(conf_lines) + "\n")
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    r = subprocess.run([MIDGE_BIN, "-c", str(conf), "-v"], capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=scaled(15), env=env)
    err = r.stderr.decode(errors="replace") + r.stdout.decode(errors="replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in err, err
    return r.returncode, err


# --------------------------------------------------------------------------------------
# traffic
# --------------------------------------------------------------------------------------

def test_tls_mosquitto_pub_sub_qos012(start_broker, certs):
    """mosquitto_sub and mosquitto_pub with --cafile: messages at QoS 0, 1 and 2 arrive,
    each connection is logged with its TLS version and cipher."""
    br = start_broker(conf=tls_conf(certs))
    br.wait_log(rf"listening on 127\.0\.0\.1:{br.port} \(mqtt over tls\)$")
    sub = SubProc(br.port, *mosq_tls(certs), "-t", "tls/#", "-q", "2", "-v")
    try:
        for q in (0, 1, 2):
            run_pub(br.port, *mosq_tls(certs), "-t", f"tls/q{q}", "-m", f"hello {q}", "-q", str(q))
        msgs = sub.wait_messages(3)
        assert msgs[:3] == ["tls/q0 hello 0", "tls/q1 hello 1", "tls/q2 hello 2"], msgs
    finally:
        sub.stop()
    br.wait_log(r"info: TLS connection from 127\.0\.0\.1:\d+: TLSv1\.3, TLS_")


def test_tls_paho_qos012_and_1mb(start_broker, certs):
    """paho-mqtt with tls_set: QoS 0/1/2 round trips and a 1 MB payload both ways."""
    br = start_broker(conf=tls_conf(certs))
    sub = PahoTls(br.port, certs, client_id="paho-sub")
    pub = PahoTls(br.port, certs, client_id="paho-pub")
    try:
        assert sub.subscribe("paho/#", 2) == (2,)
        for q in (0, 1, 2):
            pub.publish(f"paho/q{q}", f"payload {q}".encode(), q)
            m = sub.get()
            assert (m.topic, m.payload, m.qos) == (f"paho/q{q}", f"payload {q}".encode(), q)
        big = os.urandom(1 << 20)
        pub.publish("paho/big", big, 1)
        m = sub.get(scaled(20))
        assert m.topic == "paho/big" and m.payload == big, \
            f"1 MB payload mangled ({len(m.payload)} bytes)"
    finally:
        sub.close()
        pub.close()


def test_tls_raw_client_byte_exact(start_broker, certs):
    """The harness's byte-exact client over python's ssl: CONNACK, SUBACK, PUBLISH at QoS
    2 and a ping go through unchanged; many small packets in one TLS record are split
    correctly and a packet spread over many records is reassembled."""
    br = start_broker(conf=tls_conf(certs))
    ctx = client_ctx(certs)
    a = tls_client(br.port, ctx, "raw-a")
    b = tls_client(br.port, ctx, "raw-b")
    assert a.subscribe([("raw/#", 2)]) == [2]
    b.publish("raw/x", b"exact", qos=2)
    m = a.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("raw/x", b"exact", 2)
    # 50 QoS 0 publishes in one write, then one 200 kB publish in many records.
    from midge_harness import publish_pkt
    b.send(b"".join(publish_pkt("raw/burst", b"%d" % i) for i in range(50)))
    got = a.collect(50)
    assert [p.payload for p in got] == [b"%d" % i for i in range(50)]
    big = os.urandom(200_000)
    b.send(publish_pkt("raw/big", big))
    assert a.recv_publish(scaled(10)).payload == big
    a.ping()
    a.disconnect()
    b.disconnect()


# --------------------------------------------------------------------------------------
# client certificates
# --------------------------------------------------------------------------------------

def test_tls_require_certificate(start_broker, certs):
    """require_certificate true: a client certificate signed by the CA is accepted; none,
    a self-signed one, or one from another CA is refused during the handshake, with a
    log line naming the peer and OpenSSL's reason."""
    br = start_broker(conf=tls_conf(certs, "require_certificate true"))
    run_pub(br.port, *mosq_tls(certs, certs.alice), "-t", "rc/ok", "-m", "x")
    c = tls_client(br.port, client_ctx(certs, certs.alice), "with-cert")
    c.ping()

    mark = br.mark()
    seen = tls_refused(br.port, client_ctx(certs))
    br.wait_log(r"notice: TLS handshake with 127\.0\.0\.1:\d+ failed: peer did not return a "
                r"certificate", since=mark)
    br.wait_log(r"connection from 127\.0\.0\.1:\d+ closed: TLS handshake failed", since=mark)

    mark = br.mark()
    seen = tls_refused(br.port, client_ctx(certs, certs.mallory))
    br.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: certificate verify failed "
                r"\(client certificate: self-signed certificate\)", since=mark)

    mark = br.mark()
    seen = tls_refused(br.port, client_ctx(certs, certs.eve))
    br.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: certificate verify failed "
                r"\(client certificate: unable to get local issuer certificate\)", since=mark)
    assert seen

    # mosquitto_pub with the bad certificate fails too.
    r = subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(br.port),
                        *mosq_tls(certs, certs.mallory), "-t", "rc/bad", "-m", "x"],
                       capture_output=True, timeout=scaled(10))
    assert r.returncode != 0, "mosquitto_pub with a self-signed client certificate got in"
    c.ping()  # the good client was never disturbed
    c.disconnect()


def test_tls_crlfile_refuses_revoked(start_broker, certs):
    """crlfile: a client certificate revoked by the CA is refused ("certificate revoked");
    a valid one still gets in."""
    br = start_broker(conf=tls_conf(certs, "require_certificate true", f"crlfile {certs.crl}"))
    tls_client(br.port, client_ctx(certs, certs.alice), "not-revoked").disconnect()
    mark = br.mark()
    tls_refused(br.port, client_ctx(certs, certs.revoked))
    br.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: certificate verify failed "
                r"\(client certificate: certificate revoked\)", since=mark)


def test_tls_use_identity_as_username(start_broker, certs, tmp_path):
    """use_identity_as_username: the certificate's CN is the user name (the acl_file grants
    `user alice` only alice/#), whatever user name CONNECT carries; a client without a
    certificate gets CONNACK 5 with a log line saying why."""
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite alice/#\n")
    br = start_broker(conf=tls_conf(certs, "use_identity_as_username true", f"acl_file {acl}"))
    c = tls_client(br.port, client_ctx(certs, certs.alice), "alice-dev", username="bob")
    br.wait_log(r"TLS connection from 127\.0\.0\.1:\d+: TLSv1\.3, \S+, client certificate "
                r"CN=alice \(its user name\)")
    assert c.subscribe([("alice/#", 1), ("bob/#", 1)]) == [1, 0x80]
    c.publish("alice/feeds/x", b"mine", qos=1)
    m = c.recv_publish()
    assert (m.topic, m.payload) == ("alice/feeds/x", b"mine")
    c.disconnect()

    mark = br.mark()
    n = TlsConn(br.port, client_ctx(certs))
    n.connect("no-cert", username="alice", expect_rc=5)
    n.expect_closed()
    br.wait_log(r"use_identity_as_username is set but the client presented no certificate",
                since=mark)

    # paho with the certificate, too.
    p = PahoTls(br.port, certs, cert=certs.alice, client_id="alice-paho")
    try:
        assert p.subscribe("alice/#", 0) == (0,)
        assert p.subscribe("other/#", 0) == (0x80,)
    finally:
        p.close()


def strict_eof_ctx(c):
    """A client context that reports a connection ended without close_notify as an
    error instead of a clean end of file."""
    ctx = client_ctx(c)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


def test_tls_close_notify_from_client(start_broker, certs):
    """A client that ends TLS with close_notify gets the broker's close_notify back
    (unwrap completes) and the disconnection is logged with that reason."""
    br = start_broker(conf=tls_conf(certs))
    c = TlsConn(br.port, strict_eof_ctx(certs))
    c.connect("notify-me")
    c.sock.settimeout(TIMEOUT)
    c.sock.unwrap()  # sends close_notify and waits for the broker's
    br.wait_log(r"client notify-me disconnected: connection closed by peer \(TLS close_notify\)")
    c.close()


def test_tls_close_notify_from_broker(start_broker, certs):
    """When the broker ends a TLS connection (here: a protocol error), the client reads a
    close_notify, not a bare end of file."""
    br = start_broker(conf=tls_conf(certs))
    s = socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
    t = strict_eof_ctx(certs).wrap_socket(s, server_hostname="localhost",
                                          suppress_ragged_eofs=False)
    try:
        t.sendall(connect_pkt("bad", reserved=True))
        assert t.recv(100) == b"", "expected close_notify"
    finally:
        s.close()
    br.wait_log(r"connection from 127\.0\.0\.1:\d+ closed: protocol error")


# --------------------------------------------------------------------------------------
# TCP_NODELAY on the broker's end of every connection
# --------------------------------------------------------------------------------------

# pidfd_getfd(2): the same number in every Linux architecture's table (x86-64, arm64, arm).
SYS_PIDFD_GETFD = 438


def pidfd_getfd(pidfd, fd):
    """A duplicate in this process of descriptor fd of the process behind pidfd, or None
    when that descriptor is gone. A kernel that refuses the call fails the test: a
    check that cannot look must not pass."""
    import ctypes
    import errno
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    dup = libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_long(pidfd), ctypes.c_long(fd),
                       ctypes.c_long(0))
    if dup >= 0:
        return dup
    err = ctypes.get_errno()
    if err == errno.EBADF:
        return None  # closed since /proc listed it
    pytest.fail(f"pidfd_getfd({fd}) failed: {errno.errorcode.get(err, err)} "
                f"({os.strerror(err)}); this test reads the broker's socket options through it "
                "(Linux 5.6 or later, run as root or with CAP_SYS_PTRACE)", pytrace=False)


def peer_nodelay(pid, peer):
    """TCP_NODELAY (0 or not) of process pid's TCP socket whose peer is peer, a client's
    (host, port): each socket in /proc/<pid>/fd is duplicated here with pidfd_getfd and
    the one with that peer address read."""
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            except FileNotFoundError:
                continue
            dup = pidfd_getfd(pidfd, int(name))
            if dup is None:
                continue
            with socket.socket(fileno=dup) as s:  # closes only our duplicate
                if s.family != socket.AF_INET or s.type != socket.SOCK_STREAM:
                    continue
                try:
                    if s.getpeername() != peer:
                        continue
                except OSError:  # a listening socket
                    continue
                return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        os.close(pidfd)
    raise AssertionError(f"process {pid} has no TCP socket connected to {peer}")


def test_tls_nodelay_on_every_connection(start_broker, certs):
    """The broker's socket of a connection has TCP_NODELAY on, read from the running
    broker (pidfd_getfd), for MQTT over TLS, plain MQTT, WebSocket and WebSocket over TLS.
    Issue 17: with Nagle's algorithm on, a TLS 1.3 client waited ~40 ms for its CONNACK:
    the session tickets go out in one small segment, and the CONNACK behind them waits
    for its ACK, which the client delays. Checked structurally, not by timing."""
    # The helper reads the real value: two sockets of this process, off and on.
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        clients, served = [], []
        try:
            for on in (0, 1):
                clients.append(socket.create_connection(lsock.getsockname(), timeout=TIMEOUT))
                served.append(lsock.accept()[0])
                served[-1].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, on)
            assert [peer_nodelay(os.getpid(), c.getsockname()) != 0 for c in clients] \
                == [False, True], "peer_nodelay does not read the socket's TCP_NODELAY"
        finally:
            for s in clients + served:
                s.close()

    br = start_broker(conf=tls_conf(certs) + [
        "listener 0 127.0.0.1",
        "listener 0 127.0.0.1", "protocol websockets",
        "listener 0 127.0.0.1", "protocol websockets", f"certfile {certs.server[0]}",
        f"keyfile {certs.server[1]}"])
    port = {kind: int(br.wait_log_always(rf"listening on 127\.0\.0\.1:(\d+) \({kind}\)$")
                      .group(1))
            for kind in ("mqtt over tls", "mqtt", "websockets", "websockets over tls")}
    assert port["mqtt over tls"] == br.port
    ctx = client_ctx(certs)
    conns = {
        "mqtt over tls": TlsConn(br.port, ctx),
        "mqtt": MqttConn(port["mqtt"]),
        "websockets": WsConn(port["websockets"]),
        "websockets over tls": WsConn(port["websockets over tls"], wrap=lambda s: ctx.wrap_socket(
            s, server_hostname="localhost")),
    }
    try:
        assert conns["mqtt over tls"].sock.version() == "TLSv1.3"
        nodelay = {}
        for kind, c in conns.items():
            c.connect(f"nodelay-{kind.replace(' ', '-')}")  # after the CONNACK
            nodelay[kind] = peer_nodelay(br.proc.pid, c.sock.getsockname()) != 0
        assert nodelay == dict.fromkeys(conns, True), \
            "TCP_NODELAY off on the broker's socket of some connections (issue 17)"
    finally:
        for c in conns.values():
            c.close()


# --------------------------------------------------------------------------------------
# hostile or confused clients
# --------------------------------------------------------------------------------------

def plain_connect(port):
    """A plaintext CONNECT; read until the server closes. (local port, seconds, bytes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    local = s.getsockname()[1]
    t0 = time.monotonic()
    s.sendall(connect_pkt("plain"))
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    elapsed = time.monotonic() - t0
    s.close()
    return local, elapsed, data


def test_tls_plaintext_client_closed_quickly(start_broker, certs):
    """A plain MQTT CONNECT on the TLS port: closed in well under 2 s, one log line with
    the peer, OpenSSL's reason and a hint; the broker keeps serving TLS clients."""
    br = start_broker(conf=tls_conf(certs))
    mark = br.mark()
    local, elapsed, data = plain_connect(br.port)
    assert elapsed < 2.0, f"plaintext client held open for {elapsed:.2f} s"
    assert not data.startswith(b"\x20\x02"), "a plaintext client got a CONNACK on a TLS port"
    br.wait_log(rf"notice: TLS handshake with 127\.0\.0\.1:{local} failed: wrong version number "
                r"\(is the client speaking plain MQTT to a TLS port\?\)$", since=mark)
    tls_client(br.port, client_ctx(certs), "after-plain").disconnect()


def test_tls_garbage_and_stalled_handshakes(start_broker, certs):
    """Random bytes, an HTTP request and a truncated ClientHello: each is closed (the
    stalled one by connect_timeout), none crashes the broker or disturbs a TLS client."""
    br = start_broker(conf=tls_conf(certs, "connect_timeout 1"))
    good = tls_client(br.port, client_ctx(certs), "good", keepalive=0)
    for junk in (os.urandom(3000), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        mark = br.mark()
        s = socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
        try:
            s.sendall(junk)
        except (ConnectionResetError, BrokenPipeError):
            pass
        br.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: ", since=mark)
        s.close()
    s = socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00")  # a ClientHello that never completes
    t0 = time.monotonic()
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    assert time.monotonic() - t0 < scaled(4), "stalled handshake not closed by connect_timeout"
    s.close()
    good.ping()
    good.disconnect()


def test_tls_version_13_refuses_tls12_client(start_broker, certs):
    """tls_version tlsv1.3: a client limited to TLS 1.2 is refused ("unsupported
    protocol"); a TLS 1.3 client gets in. The default listener accepts TLS 1.2."""
    br = start_broker(conf=tls_conf(certs, "tls_version tlsv1.3"))
    mark = br.mark()
    with pytest.raises(ssl.SSLError):
        TlsConn(br.port, client_ctx(certs, max_version=ssl.TLSVersion.TLSv1_2))
    br.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: unsupported protocol", since=mark)
    tls_client(br.port, client_ctx(certs), "v13").disconnect()

    br12 = start_broker(conf=tls_conf(certs))
    c = tls_client(br12.port, client_ctx(certs, max_version=ssl.TLSVersion.TLSv1_2), "v12")
    assert c.sock.version() == "TLSv1.2"
    c.disconnect()


def test_tls_ciphers(start_broker, certs):
    """ciphers restricts TLS 1.2 suites: a client offering only another suite is refused."""
    br = start_broker(conf=tls_conf(certs, "ciphers ECDHE-ECDSA-AES256-GCM-SHA384"))
    ctx = client_ctx(certs, max_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    mark = br.mark()
    with pytest.raises(ssl.SSLError):
        TlsConn(br.port, ctx)
    br.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: no shared cipher", since=mark)
    ok = client_ctx(certs, max_version=ssl.TLSVersion.TLSv1_2)
    ok.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    c = tls_client(br.port, ok, "cipher-ok")
    assert c.sock.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    c.disconnect()


def tls13_suite(port, cafile, offer):
    """The TLS 1.3 suite an `openssl s_client` offering only `offer` (in that order) gets,
    or None when the handshake fails."""
    r = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", cafile,
                        "-servername", "localhost", "-tls1_3", "-ciphersuites", offer, "-brief"],
                       input=b"", capture_output=True, timeout=60)
    m = re.search(rb"Ciphersuite: (\S+)", r.stdout + r.stderr)
    return m.group(1).decode() if m else None


def test_tls13_suites(start_broker, certs):
    """TLS 1.3 suites: by default the server's order puts AES-128-GCM-SHA256 first (a client
    whose list starts with AES-256 gets AES-128), unless the client lists ChaCha20 first;
    ciphers_tls1.3 sets the suites and their order, and a client offering none of them is
    refused."""
    br = start_broker(conf=tls_conf(certs))
    c = tls_client(br.port, client_ctx(certs), "suite-default")
    assert c.sock.cipher()[0] == "TLS_AES_128_GCM_SHA256"
    c.disconnect()
    assert tls13_suite(br.port, certs.cafile,
                       "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256") == "TLS_AES_128_GCM_SHA256"
    assert tls13_suite(br.port, certs.cafile, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256") \
        == "TLS_CHACHA20_POLY1305_SHA256"
    assert tls13_suite(br.port, certs.cafile, "TLS_AES_256_GCM_SHA384") == "TLS_AES_256_GCM_SHA384"

    br2 = start_broker(conf=tls_conf(certs, "ciphers_tls1.3 TLS_AES_256_GCM_SHA384"))
    c = tls_client(br2.port, client_ctx(certs), "suite-256")
    assert c.sock.cipher()[0] == "TLS_AES_256_GCM_SHA384"
    c.disconnect()
    mark = br2.mark()
    assert tls13_suite(br2.port, certs.cafile, "TLS_CHACHA20_POLY1305_SHA256") is None
    br2.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: no shared cipher", since=mark)


# --------------------------------------------------------------------------------------
# start-up errors: never plaintext
# --------------------------------------------------------------------------------------

START_ERRORS = {
    "missing_certfile": (lambda c, d: [f"certfile {d}/nope.crt", f"keyfile {c.server[1]}"],
                         r"error: listener 0: certfile {d}/nope\.crt: No such file or directory"),
    "missing_keyfile": (lambda c, d: [f"certfile {c.server[0]}", f"keyfile {d}/nope.key"],
                        r"error: listener 0: keyfile {d}/nope\.key: No such file or directory"),
    "wrong_key": (lambda c, d: [f"certfile {c.server[0]}", f"keyfile {d}/garbage.pem"],
                  r"error: listener 0: keyfile {d}/garbage\.pem holds no usable PEM private key"),
    "mismatched_key": (lambda c, d: [f"certfile {c.server[0]}", f"keyfile {c.alice[1]}"],
                       r"error: listener 0: keyfile {ak} does not match certfile {sc} \(.*\): "
                       r"the key belongs to another certificate"),
    "encrypted_key": (lambda c, d: [f"certfile {c.server[0]}", f"keyfile {d}/enc.key"],
                      r"error: listener 0: keyfile {d}/enc\.key is protected by a passphrase"),
    "certfile_not_a_cert": (lambda c, d: [f"certfile {d}/garbage.pem", f"keyfile {c.server[1]}"],
                            r"error: listener 0: certfile {d}/garbage\.pem holds no usable PEM "
                            r"certificate"),
    "missing_cafile": (lambda c, d: [f"cafile {d}/noca.crt", f"certfile {c.server[0]}",
                                     f"keyfile {c.server[1]}", "require_certificate true"],
                       r"error: listener 0: cafile {d}/noca\.crt: No such file or directory"),
    "unreadable_cafile": (lambda c, d: [f"cafile {d}/garbage.pem", f"certfile {c.server[0]}",
                                        f"keyfile {c.server[1]}", "require_certificate true"],
                          r"error: listener 0: cafile {d}/garbage\.pem holds no usable PEM CA "
                          r"certificate"),
    "capath_not_dir": (lambda c, d: [f"capath {c.cafile}", f"certfile {c.server[0]}",
                                     f"keyfile {c.server[1]}", "require_certificate true"],
                       r"error: listener 0: capath {ca}: not a directory"),
    "bad_ciphers": (lambda c, d: tls_conf(c, "ciphers NO-SUCH-CIPHER"),
                    r"error: listener 0: ciphers \"NO-SUCH-CIPHER\" selects no cipher"),
    "bad_ciphers_tls13": (lambda c, d: tls_conf(c, "ciphers_tls1.3 NO_SUCH_SUITE"),
                          r"error: listener 0: ciphers_tls1\.3 \"NO_SUCH_SUITE\" selects no TLS "
                          r"1\.3 suite"),
    "crlfile_missing": (lambda c, d: tls_conf(c, "require_certificate true",
                                              f"crlfile {d}/nocrl.pem"),
                        r"error: listener 0: crlfile {d}/nocrl\.pem: No such file or directory"),
    # Consistency, refused while reading the configuration.
    "certfile_without_keyfile": (lambda c, d: [f"certfile {c.server[0]}"],
                                 r"error: .*: listener 0: certfile is set but keyfile is not"),
    "cafile_without_certfile": (lambda c, d: [f"cafile {c.cafile}"],
                                r"error: .*: listener 0: cafile is set but certfile and keyfile "
                                r"are not; refusing to serve this listener unencrypted"),
    "require_certificate_without_ca": (
        lambda c, d: [f"certfile {c.server[0]}", f"keyfile {c.server[1]}",
                      "require_certificate true"],
        r"error: .*: listener 0: require_certificate true needs cafile or capath"),
    "unknown_tls_version": (lambda c, d: tls_conf(c, "tls_version tlsv9"),
                            r"error: .*: listener 0: tls_version \"tlsv9\" is not known"),
}


@pytest.mark.parametrize("case", sorted(START_ERRORS))
def test_tls_startup_errors(certs, tmp_path, case):
    """A TLS listener whose files or options cannot be used: exit 1 with one precise line,
    and nothing is ever listening (no plaintext fallback)."""
    d = str(tmp_path)
    (tmp_path / "garbage.pem").write_text("this is not PEM\n")
    ossl("pkey", "-in", certs.server[1], "-aes256", "-passout", "pass:secret",
         "-out", os.path.join(d, "enc.key"))
    lines_fn, pattern = START_ERRORS[case]
    pattern = pattern.format(d=re.escape(d), ak=re.escape(certs.alice[1]),
                             sc=re.escape(certs.server[0]), ca=re.escape(certs.cafile))
    rc, err = run_midge(["listener 0 127.0.0.1", "allow_anonymous true"] + lines_fn(certs, d),
                        tmp_path)
    assert rc == 1, f"status {rc}; output:\n{err}"
    assert re.search(pattern, err, re.M), f"no line matching {pattern!r} in:\n{err}"
    assert "listening on" not in err, f"something listened:\n{err}"


def test_tls_listener_failure_stops_plain_listener_too(certs, tmp_path):
    """One plain and one broken TLS listener: the whole start-up fails (exit 1)."""
    rc, err = run_midge(["listener 0 127.0.0.1", "allow_anonymous true",
                         "listener 0 127.0.0.1", f"certfile {certs.server[0]}",
                         f"keyfile {certs.alice[1]}"], tmp_path)
    assert rc == 1, err
    assert "does not match certfile" in err and "start-up failed" in err, err
    assert "(mqtt over tls)" not in err, err


# --------------------------------------------------------------------------------------
# reload
# --------------------------------------------------------------------------------------

def sighup(br):
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    br.wait_log(rf"configuration reloaded from {re.escape(br.conf_path)} ", since=mark)
    return mark


def test_tls_sighup_renews_certificate(start_broker, certs, tmp_path):
    """SIGHUP re-reads certfile/keyfile: new connections see the renewed certificate
    (another serial) while an established TLS connection stays up and keeps working. New
    files that do not load are logged and the current certificate stays in use."""
    d = str(tmp_path)
    crt, key = os.path.join(d, "live.crt"), os.path.join(d, "live.key")
    shutil.copy(certs.server[0], crt)
    shutil.copy(certs.server[1], key)
    br = start_broker(conf=[f"cafile {certs.cafile}", f"certfile {crt}", f"keyfile {key}"])
    assert peer_serial(br.port, certs) == 1001
    old = tls_client(br.port, client_ctx(certs), "old-conn", keepalive=0)
    assert old.subscribe([("renew/#", 1)]) == [1]

    new_crt, new_key = make_cert(d, "renewed", "localhost", certs.ca, 1002, server=True)
    os.replace(new_key, key)
    os.replace(new_crt, crt)
    sighup(br)
    assert peer_serial(br.port, certs) == 1002
    pub = tls_client(br.port, client_ctx(certs), "new-conn")
    pub.publish("renew/x", b"after reload", qos=1)
    m = old.recv_publish()
    assert m.payload == b"after reload"
    old.ping()

    # A broken renewal (the key of another certificate): logged, old context kept.
    shutil.copy(certs.alice[1], key)
    mark = sighup(br)
    br.wait_log(rf"error: listener 0: keyfile {re.escape(key)} does not match certfile "
                rf"{re.escape(crt)}", since=mark)
    br.wait_log(r"error: reload: listener 0 keeps its current TLS certificates and settings",
                since=mark)
    assert peer_serial(br.port, certs) == 1002
    old.ping()
    pub.disconnect()
    old.disconnect()


def test_tls_sighup_turns_tls_on(start_broker, certs):
    """A plain listener that gains certfile/keyfile on reload is reopened as TLS: a
    plaintext client no longer gets in, a TLS client does."""
    br = start_broker()
    plain = MqttConn(br.port)
    plain.connect("plain-before")
    with open(br.conf_path, "a") as f:
        f.write("\n".join(tls_conf(certs)) + "\n")
    mark = sighup(br)
    m = br.wait_log(r"listening on 127\.0\.0\.1:(\d+) \(mqtt over tls\)$", since=mark)
    port = int(m.group(1))
    tls_client(port, client_ctx(certs), "tls-after").disconnect()
    _, elapsed, data = plain_connect(port)
    assert elapsed < 2.0 and not data.startswith(b"\x20\x02"), (elapsed, data)
    plain.ping()  # connections accepted before stay as they were
