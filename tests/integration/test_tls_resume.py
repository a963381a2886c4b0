"""test_tls_resume.py - TLS session resumption and the record layer midge takes over from
OpenSSL after the handshake (issue 17): a session resumes across reconnects (Python's ssl
and `openssl s_client`, both OpenSSL clients), each resumption brings a fresh ticket,
tickets are useless after a restart and after a reload (so new certificates and CRLs
apply), a client certificate's identity survives resumption, KeyUpdate both ways, and
the per-connection TLS state of many clients in every phase is freed when they leave
(LeakSanitizer checks the broker at teardown; with glibc's allocator the heap is compared
too).
"""
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from midge_harness import TIMEOUT, MqttConn, connect_pkt, midge_only, publish_pkt, scaled
from test_tls import (OPENSSL, TlsConn, certs, client_ctx, hs_threads, make_ca,  # noqa: F401
                      make_cert, make_crl, sighup, tls_client, tls_conf)

pytestmark = midge_only


class ResumingConn(TlsConn):
    """TlsConn offering a saved session (None: a full handshake)."""

    def __init__(self, port, ctx, session=None):
        MqttConn.__init__(self, port)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost", session=session)


def session_round(port, ctx, session, client_id, **kw):
    """Connect offering session, CONNECT (the CONNACK comes after the ticket), and return
    (reused, the session to offer next time, the connection)."""
    c = ResumingConn(port, ctx, session)
    c.connect(client_id, **kw)
    c.ping()  # the ticket precedes CONNACK and PINGRESP: it has been read
    return c.sock.session_reused, c.sock.session, c


def test_tls_resumption_across_reconnects(start_broker, certs):
    """A client that reconnects with its last session resumes (no certificate is sent,
    the log says "resumed"), every time: each resumption brings a fresh ticket, since
    TLS 1.3 clients use a ticket once. Traffic flows both ways on resumed connections."""
    br = start_broker(conf=tls_conf(certs))
    ctx = client_ctx(certs)
    reused, sess, c = session_round(br.port, ctx, None, "board")
    assert not reused and sess is not None
    c.disconnect()
    sub = tls_client(br.port, ctx, "watcher")
    assert sub.subscribe([("board/#", 1)]) == [1]
    for i in range(3):
        mark = br.mark()
        reused, nsess, c = session_round(br.port, ctx, sess, "board")
        assert reused, f"reconnect {i} did not resume"
        assert nsess is not sess and nsess.id != sess.id, "no fresh ticket on resumption"
        br.wait_log(r"TLS connection from 127\.0\.0\.1:\d+: TLSv1\.3, \S+, resumed", since=mark)
        c.publish(f"board/{i}", b"x" * (40000 if i == 1 else 10), qos=1)
        m = sub.recv_publish()
        assert (m.topic, len(m.payload)) == (f"board/{i}", 40000 if i == 1 else 10)
        c.disconnect()
        sess = nsess
    sub.disconnect()


def test_tls_resumption_tls12(start_broker, certs):
    """TLS 1.2 clients resume with tickets too (and keep OpenSSL's record layer)."""
    br = start_broker(conf=tls_conf(certs))
    ctx = client_ctx(certs, max_version=ssl.TLSVersion.TLSv1_2)
    reused, sess, c = session_round(br.port, ctx, None, "old-board")
    assert not reused
    c.disconnect()
    reused, _, c = session_round(br.port, ctx, sess, "old-board")
    assert reused
    assert c.sock.version() == "TLSv1.2"
    c.publish("t", b"after resumption", qos=1)
    c.disconnect()


def s_client(port, cafile, sess_in=None, sess_out=None, script=(), timeout=TIMEOUT, extra=()):
    """openssl s_client: feed script (each item written alone, after a pause), then
    return its stdout."""
    args = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", cafile,
            "-servername", "localhost"]
    if "-tls1_2" not in extra:
        args.append("-tls1_3")
    if sess_in:
        args += ["-sess_in", sess_in]
    if sess_out:
        args += ["-sess_out", sess_out]
    args += list(extra)
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        for item in script:
            time.sleep(scaled(0.3))
            try:
                p.stdin.write(item)
                p.stdin.flush()
            except BrokenPipeError:  # s_client ended (the test decides whether it should)
                break
        time.sleep(scaled(0.5))
        try:
            out, _ = p.communicate(timeout=timeout)  # closes stdin: s_client then ends
        except BrokenPipeError:
            out = p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return out


def test_tls_resumption_openssl_s_client(start_broker, certs, tmp_path):
    """`openssl s_client -sess_out` then `-sess_in`: "Reused, TLSv1.3"."""
    br = start_broker(conf=tls_conf(certs))
    sess = str(tmp_path / "sess.pem")
    out = s_client(br.port, certs.cafile, sess_out=sess, script=[connect_pkt("s1")])
    assert b"New, TLSv1.3" in out and b"\x20\x02\x00\x00" in out, out[-400:]
    assert os.path.getsize(sess) > 0
    out = s_client(br.port, certs.cafile, sess_in=sess, script=[connect_pkt("s2")])
    assert b"Reused, TLSv1.3" in out and b"\x20\x02\x00\x00" in out, out[-400:]


def test_tls_tickets_useless_after_restart(start_broker, certs):
    """Ticket keys are made at start-up and kept in memory only: after a restart a saved
    session gets a full handshake (and the connection works)."""
    br = start_broker(conf=tls_conf(certs))
    for version in (None, ssl.TLSVersion.TLSv1_2):
        ctx = client_ctx(certs, max_version=version)
        _, sess, c = session_round(br.port, ctx, None, "restart")
        c.disconnect()
        br2 = start_broker(conf=tls_conf(certs))
        reused, _, c = session_round(br2.port, ctx, sess, "restart")
        assert not reused, f"a ticket from another broker process resumed ({version})"
        c.disconnect()
        br2.stop()


def test_tls_client_certificate_identity_on_resumption(start_broker, certs, tmp_path):
    """use_identity_as_username: a resumed session keeps the client certificate it was
    verified with, so the CN is still the user name and the ACL still applies."""
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite alice/#\n")
    br = start_broker(conf=tls_conf(certs, "require_certificate true",
                                    "use_identity_as_username true", f"acl_file {acl}"))
    ctx = client_ctx(certs, certs.alice)
    _, sess, c = session_round(br.port, ctx, None, "alice-1", username="bob")
    c.disconnect()
    mark = br.mark()
    reused, _, c = session_round(br.port, ctx, sess, "alice-2", username="bob")
    assert reused
    br.wait_log(r"TLS connection from 127\.0\.0\.1:\d+: TLSv1\.3, \S+, resumed, client "
                r"certificate CN=alice \(its user name\)", since=mark)
    assert c.subscribe([("alice/#", 1), ("bob/#", 1)]) == [1, 0x80]
    c.publish("alice/x", b"mine", qos=1)
    assert c.recv_publish().payload == b"mine"
    c.disconnect()


def test_tls_reload_ends_resumption_and_applies_new_crl(start_broker, certs, tmp_path):
    """A reload builds a new TLS context with new ticket keys: sessions from before it
    do not resume, so a CRL that now revokes a client certificate refuses that client even
    though it offers a valid old session; other clients get in with a full handshake."""
    d = str(tmp_path)
    crl = os.path.join(d, "live-crl.pem")
    shutil.copy(certs.crl, crl)  # revokes only certs.revoked
    bob = make_cert(d, "bob", "bob", certs.ca, 2003)
    br = start_broker(conf=tls_conf(certs, "require_certificate true", f"crlfile {crl}"))
    alice_ctx, bob_ctx = client_ctx(certs, certs.alice), client_ctx(certs, bob)
    _, alice_sess, c = session_round(br.port, alice_ctx, None, "alice")
    c.disconnect()
    _, bob_sess, c = session_round(br.port, bob_ctx, None, "bob")
    c.disconnect()
    assert session_round(br.port, bob_ctx, bob_sess, "bob")[0]  # resumes before the reload

    crl_dir = os.path.join(d, "crl2")
    os.mkdir(crl_dir)
    os.replace(make_crl(crl_dir, certs.ca, certs.alice[0]), crl)
    mark = sighup(br)
    s = socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
    try:
        t = alice_ctx.wrap_socket(s, server_hostname="localhost", session=alice_sess)
        t.sendall(connect_pkt("alice-again"))
        data = t.recv(100)
        assert data == b"", f"a revoked client got {data!r}"
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    br.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: .*certificate revoked", since=mark)
    reused, _, c = session_round(br.port, bob_ctx, bob_sess, "bob")
    assert not reused, "a session from before the reload resumed"
    c.disconnect()


def test_tls_key_update_both_ways(start_broker, certs):
    """A client's KeyUpdate after the handshake (here asking for ours too: `K` in
    s_client) is followed: its next PUBLISH is read under its new keys and our PINGRESP,
    under our new keys, reaches it."""
    br = start_broker(conf=tls_conf(certs))
    sub = tls_client(br.port, client_ctx(certs), "ku-watch")
    assert sub.subscribe([("ku/#", 0)]) == [0]
    out = s_client(br.port, certs.cafile,
                   script=[connect_pkt("ku"), b"K\n", publish_pkt("ku/x", b"rekeyed"),
                           b"k\n", b"\xc0\x00"])
    assert b"KEYUPDATE" in out, out[-400:]
    m = sub.recv_publish()
    assert (m.topic, m.payload) == ("ku/x", b"rekeyed")
    assert b"\xd0\x00" in out.split(b"KEYUPDATE")[-1], "no PINGRESP after the key updates"
    br.assert_no_log(r"TLS error")
    sub.disconnect()


def test_tls_state_freed_when_clients_leave(start_broker, certs):
    """Many TLS clients in every phase: TLS 1.3 handed over to midge's record layer (one
    with a record half sent, one with a 1 MB message queued), TLS 1.2 kept by OpenSSL,
    handshakes abandoned half-way, a client that resumed. When they have all gone, what
    they held is freed: LeakSanitizer checks at teardown, and with glibc's allocator the
    heap comes back to where it was (within a tenth of what they took)."""
    listener = tls_conf(certs)
    br = start_broker(conf=["sys_interval 1"] + listener + ["listener 0 127.0.0.1"])
    plain_port = int(br.wait_log_always(r"listening on 127\.0\.0\.1:(\d+) \(mqtt\)$").group(1))

    def heap():
        """$SYS/broker/heap/current as published after we asked (the first one may be
        the retained copy of an older figure); 0 where the allocator does not say (ASan):
        then only uptime comes, and twice without the heap is the answer."""
        c = MqttConn(plain_port)
        c.connect("heap-probe")
        c.subscribe([("$SYS/broker/heap/current", 0), ("$SYS/broker/uptime", 0)])
        heaps = uptimes = 0
        while uptimes < 3:
            m = c.recv_publish(timeout=scaled(10))
            if m.topic.endswith("heap/current"):
                heaps += 1
                if heaps == 2:
                    c.disconnect()
                    return int(m.payload)
            else:
                uptimes += 1
        c.disconnect()
        return 0

    ctx13, ctx12 = client_ctx(certs), client_ctx(certs, max_version=ssl.TLSVersion.TLSv1_2)

    def crowd():
        conns, raw = [], []
        _, sess, c = session_round(br.port, ctx13, None, "r0")
        conns.append(c)
        conns.append(session_round(br.port, ctx13, sess, "r1")[2])
        for i in range(60):
            conns.append(tls_client(br.port, ctx13, f"c13-{i}"))
        for i in range(20):
            conns.append(tls_client(br.port, ctx12, f"c12-{i}"))
        big = tls_client(br.port, ctx13, "big", keepalive=0)
        big.subscribe([("big/#", 0)])
        conns.append(big)
        pub = tls_client(br.port, ctx13, "big-pub")
        pub.publish("big/x", b"m" * (1 << 20), qos=0)  # big does not read it
        conns.append(pub)
        half = tls_client(br.port, ctx13, "half")
        # Under the TLS layer: a record header and part of its body, the rest never comes.
        os.write(half.sock.fileno(), b"\x17\x03\x03\x00\x40" + b"x" * 10)
        conns.append(half)
        for _ in range(10):  # TCP up, ClientHello never finished
            s = socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
            s.sendall(b"\x16\x03\x01\x00\xff\x01\x00")
            raw.append(s)
        return conns, raw

    warm, warm_raw = crowd()  # the first round fills OpenSSL's and midge's one-time tables
    for c in warm:
        c.close()
    for s in warm_raw:
        s.close()
    br.wait_log_always(r"client r0 disconnected")
    time.sleep(scaled(2.5))
    before = heap()
    conns, raw = crowd()
    during = heap()
    mark = br.mark()
    for i, c in enumerate(conns):
        if i % 2:
            c.close()  # without DISCONNECT or close_notify
        else:
            c.disconnect()
    for s in raw:
        s.close()
    for i in range(20):
        br.wait_log(rf"client c12-{i} disconnected", since=mark)
    br.wait_log(r"client big disconnected", since=mark)
    time.sleep(scaled(2.5))  # two ticks: pooled output buffers are trimmed
    after = heap()
    if before == 0:
        return  # no heap figures from this allocator (ASan): LeakSanitizer checks at teardown
    assert during - before > 100 * 1024, (before, during)
    assert after - before < (during - before) / 10, (before, during, after)


def test_tls_handshake_storm(start_broker, certs):
    """Many handshakes at once (a reconnect storm; past a time budget per wake-up the new
    ones wait their turn, oldest first): every client gets in, clients that vanish while
    waiting are forgotten, and a client connected before the storm keeps being served."""
    import threading

    br = start_broker(conf=tls_conf(certs))
    ctx = client_ctx(certs)
    steady = tls_client(br.port, ctx, "steady")
    assert steady.subscribe([("storm/#", 0)]) == [0]
    socks = [socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
             for _ in range(80)]
    quitters = [socket.create_connection(("127.0.0.1", br.port), timeout=TIMEOUT)
                for _ in range(20)]
    errors, conns = [], [None] * len(socks)
    start = threading.Barrier(len(socks) + 1)

    def one(i):
        try:
            start.wait()
            t = ctx.wrap_socket(socks[i], server_hostname="localhost")
            t.sendall(connect_pkt(f"storm-{i}"))
            data = b""
            while len(data) < 4:
                chunk = t.recv(4 - len(data))
                if not chunk:
                    break
                data += chunk
            assert data == b"\x20\x02\x00\x00", data
            conns[i] = t
        except Exception as e:  # reported below
            errors.append(f"{i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(socks))]
    for t in threads:
        t.start()
    start.wait()
    for s in quitters:  # a ClientHello's first bytes, then gone
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        s.close()
    pub = tls_client(br.port, ctx, "storm-pub")
    pub.publish("storm/x", b"during the storm", qos=1)
    assert steady.recv_publish().payload == b"during the storm"
    for t in threads:
        t.join(scaled(60))
    assert not errors, errors
    for t in conns:
        t.sendall(b"\xe0\x00")
        t.close()
    steady.ping()
    steady.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-SHA256"])
def test_tls12_suites_after_the_handshake(start_broker, certs, suite):
    """TLS 1.2 with each AEAD suite (whose records midge takes over from OpenSSL after the
    handshake) and a CBC one (which stays OpenSSL's): messages of 10 bytes, 40 KB (several
    records) and 200 KB both ways, a ping, a resumed connection, close_notify."""
    br = start_broker(conf=tls_conf(certs))
    ctx = client_ctx(certs, max_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers(suite)
    reused, sess, c = session_round(br.port, ctx, None, "twelve")
    assert c.sock.cipher()[0] == suite and c.sock.version() == "TLSv1.2"
    assert c.subscribe([("t12/#", 1)]) == [1]
    for size in (10, 40000, 200000):
        c.publish(f"t12/{size}", bytes(range(256)) * (size // 256) + b"x" * (size % 256), qos=1)
        m = c.recv_publish()
        assert (m.topic, len(m.payload)) == (f"t12/{size}", size)
        assert m.payload[:512] == (bytes(range(256)) * 2)[:min(size, 512)] or size < 256
    c.ping()
    c.disconnect()
    reused, _, c = session_round(br.port, ctx, sess, "twelve")
    assert reused
    c.ping()
    c.sock.settimeout(TIMEOUT)
    c.sock.unwrap()  # close_notify, answered
    br.wait_log(r"client twelve disconnected: connection closed by peer \(TLS close_notify\)")
    c.close()


@pytest.mark.parametrize("suite", ["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256",
                                   "TLS_AES_256_GCM_SHA384"])
def test_tls13_suites_after_the_handshake(start_broker, certs, suite):
    """Each TLS 1.3 suite (openssl s_client -ciphersuites): after the handshake midge's own
    record layer reads a SUBSCRIBE and a PUBLISH and sends the message back, then a PINGRESP."""
    br = start_broker(conf=tls_conf(certs))
    script = [connect_pkt("s13"), b"\x82\x09\x00\x01\x00\x04s/13\x00",
              publish_pkt("s/13", b"suite " + suite.encode()), b"\xc0\x00"]
    out = s_client(br.port, certs.cafile, script=script, extra=["-ciphersuites", suite])
    assert f"Cipher is {suite}".encode() in out, out[-400:]
    assert b"suite " + suite.encode() in out, out[-400:]
    assert b"\xd0\x00" in out
    br.assert_no_log(r"TLS error")


def test_tls12_renegotiation_refused(start_broker, certs):
    """A TLS 1.2 client asking to renegotiate (`R` in s_client) after the handshake gets a
    no_renegotiation alert, as from OpenSSL with renegotiation disabled; the broker logs the
    client's answer and stays up for others."""
    br = start_broker(conf=tls_conf(certs))
    out = s_client(br.port, certs.cafile, script=[connect_pkt("reneg"), b"R\n", b"\xc0\x00"],
                   extra=["-tls1_2"])
    assert b"RENEGOTIATING" in out and b"no renegotiation" in out, out[-400:]
    tls_client(br.port, client_ctx(certs), "after-reneg").disconnect()
