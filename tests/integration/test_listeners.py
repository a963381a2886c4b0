"""test_listeners.py - listener configuration through the real binary (issue 3): several
listeners on IPv4 and IPv6 loopback, wildcard listeners (0.0.0.0 and ::, reached only via
loopback here), socket_domain, -p, per-listener security, addresses not configured yet
(IP_FREEBIND), and the start-up errors: a wss certificate that cannot be loaded, port in
use.

All ports are ephemeral (listener 0 ...), read back from the "listening on" lines.
"""
import os
import re
import socket
import subprocess
import time

import pytest

from midge_harness import (CONNACK, MIDGE_BIN, Closed, TIMEOUT, MqttConn, client, connect_pkt,
                           midge_only, scaled)

pytestmark = midge_only

LISTEN = r"notice: listening on (\S+):(\d+) \(mqtt\)$"


def _hex_addr(h):
    raw = bytes.fromhex(h)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    return socket.inet_ntop(socket.AF_INET6,
                            b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listen_sockets(pid):
    """{(address, port)} of the TCP sockets in LISTEN state held by process pid."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                col = line.split()
                if col[3] == "0A" and col[9] in inodes:
                    addr, port = col[1].split(":")
                    out.add((_hex_addr(addr), int(port, 16)))
    return out


def listening(br, n):
    """The first n "listening on" lines as [(name, port)]: name like 127.0.0.1 or [::1]."""
    pat = re.compile(LISTEN)
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = [m for m in map(pat.search, br.log().splitlines()) if m]
        if len(found) >= n:
            return [(m.group(1), int(m.group(2))) for m in found[:n]]
        assert time.monotonic() < deadline, f"fewer than {n} listening lines:\n{br.log()}"
        time.sleep(0.02)


def mqtt_ok(host, port, cid):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    c = MqttConn(port, host=host, family=fam)
    c.send(connect_pkt(cid))
    c.expect_bytes(b"\x20\x02\x00\x00")
    c.disconnect()


def refused(host, port):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((host, port))
    except ConnectionRefusedError:
        return True
    finally:
        s.close()
    return False


def run(conf_path, *extra, timeout=10):
    r = subprocess.run([MIDGE_BIN, "-c", str(conf_path)] + list(extra),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=scaled(timeout))
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------

def test_several_listeners_ipv4_and_ipv6_loopback(start_broker):
    """Three listeners (127.0.0.1, ::1, 127.0.0.1): three distinct ports, each logged,
    each serving MQTT, and the process listens on exactly those sockets."""
    br = start_broker(conf=["listener 0 ::1", "listener 0 127.0.0.1"])
    got = listening(br, 3)
    assert [n for n, _ in got] == ["127.0.0.1", "[::1]", "127.0.0.1"], got
    assert len({p for _, p in got}) == 3, got
    for name, port in got:
        mqtt_ok(name.strip("[]"), port, f"l-{port}")
    assert listen_sockets(br.proc.pid) == {(n.strip("[]"), p) for n, p in got}
    br.wait_log(r"serving 127\.0\.0\.1:\d+, \[::1\]:\d+, 127\.0\.0\.1:\d+ \(loopback only")


def test_listener_without_address_binds_both_families(start_broker, tmp_path):
    """`listener 0` (no address): 0.0.0.0 and :: on the same port (the IPv6 socket is
    v6-only, else the second bind would fail); reachable via 127.0.0.1 and ::1."""
    conf = write(tmp_path / "w.conf", ["listener 0", "allow_anonymous true"])
    br = start_broker(args=["-c", str(conf), "-v"], expect_listen=False)
    got = listening(br, 2)
    assert sorted(n for n, _ in got) == ["0.0.0.0", "[::]"], got
    assert got[0][1] == got[1][1], f"one listener, one port: {got}"
    port = got[0][1]
    assert listen_sockets(br.proc.pid) == {("0.0.0.0", port), ("::", port)}
    mqtt_ok("127.0.0.1", port, "wild4")
    mqtt_ok("::1", port, "wild6")
    br.wait_log(rf"midge \S+ serving (0\.0\.0\.0:{port}, \[::\]:{port}|"
                rf"\[::\]:{port}, 0\.0\.0\.0:{port})$")


@pytest.mark.parametrize("domain,family_names,other", [("ipv4", ["0.0.0.0"], "::1"),
                                                       ("ipv6", ["[::]"], "127.0.0.1")])
def test_socket_domain_restricts_wildcard_listener(start_broker, tmp_path, domain,
                                                   family_names, other):
    """socket_domain ipv4 / ipv6 on an address-less listener binds only that family."""
    conf = write(tmp_path / "d.conf", ["listener 0", f"socket_domain {domain}",
                                       "allow_anonymous true"])
    br = start_broker(args=["-c", str(conf), "-v"], expect_listen=False)
    (name, port), = listening(br, 1)
    assert [name] == family_names
    br.wait_log(r"serving ")
    assert len(listen_sockets(br.proc.pid)) == 1, listen_sockets(br.proc.pid)
    mqtt_ok("127.0.0.1" if domain == "ipv4" else "::1", port, "dom")
    assert refused(other, port), f"socket_domain {domain} still accepts on {other}"


def test_listener_on_host_name(start_broker, tmp_path):
    """`listener 0 localhost`: the name is resolved; every address it has shares the
    port; MQTT works on 127.0.0.1."""
    conf = write(tmp_path / "h.conf", ["listener 0 localhost", "allow_anonymous true"])
    br = start_broker(args=["-c", str(conf), "-v"])
    socks = listen_sockets(br.proc.pid)
    assert {p for _, p in socks} == {br.port}, socks
    mqtt_ok("127.0.0.1", br.port, "byname")


def test_listener_address_not_configured_yet_freebind(start_broker, tmp_path):
    """A listener on an address no interface has yet (TEST-NET 192.0.2.1, 2001:db8::1), as
    when systemd starts midge before the network is up: start-up does not fail (IP_FREEBIND),
    and the loopback listener serves."""
    conf = write(tmp_path / "f.conf", ["listener 0 127.0.0.1", "listener 0 192.0.2.1",
                                       "listener 0 2001:db8::1", "allow_anonymous true"])
    br = start_broker(args=["-c", str(conf), "-v"])
    br.wait_log(r"listening on 192\.0\.2\.1:\d+ \(mqtt\)")
    br.wait_log(r"listening on \[2001:db8::1\]:\d+ \(mqtt\)")
    mqtt_ok("127.0.0.1", br.port, "freebind")


def test_p_replaces_first_listener_port_only(start_broker, tmp_path):
    """-p PORT replaces the first listener's port (here the IPv6 one); the second keeps
    its own (ephemeral) port."""
    s = socket.socket(socket.AF_INET6)
    s.bind(("::1", 0))
    port = s.getsockname()[1]
    s.close()
    conf = write(tmp_path / "p.conf", ["listener 1 ::1", "listener 0 127.0.0.1",
                                       "allow_anonymous true"])
    br = start_broker(args=["-c", str(conf), "-p", str(port), "-v"])
    got = listening(br, 2)
    assert got[0] == ("[::1]", port), got
    assert got[1][0] == "127.0.0.1" and got[1][1] != port
    mqtt_ok("::1", port, "p6")


def test_empty_config_with_p0_one_port_for_both_loopback_addresses(start_broker, tmp_path):
    """A file without listeners gives the loopback listener (127.0.0.1 and ::1) "the same"
    as running without a file (docs/configuration.md); with -p 0 both addresses then share
    one picked port, as they do without a file."""
    conf = write(tmp_path / "e.conf", ["# nothing but a comment"])
    br = start_broker(args=["-c", str(conf), "-p", "0", "-v"])
    got = listening(br, 2)
    assert sorted(n for n, _ in got) == ["127.0.0.1", "[::1]"], got
    assert got[0][1] == got[1][1], f"-p 0 gave the loopback addresses different ports: {got}"
    mqtt_ok("::1", got[0][1], "anon-default")


def test_per_listener_allow_anonymous(start_broker, tmp_path):
    """per_listener_settings true: allow_anonymous applies to its listener block only; the
    other listener (no value: default false) refuses anonymous clients with CONNACK 5 and
    the log line names allow_anonymous."""
    conf = write(tmp_path / "s.conf", ["per_listener_settings true",
                                       "listener 0 127.0.0.1", "allow_anonymous true",
                                       "listener 0 ::1"])
    br = start_broker(args=["-c", str(conf), "-v"])
    port6 = int(br.wait_log(r"listening on \[::1\]:(\d+)").group(1))
    mqtt_ok("127.0.0.1", br.port, "open")
    c = MqttConn(port6, host="::1", family=socket.AF_INET6)
    c.send(connect_pkt("closed"))
    c.expect_bytes(b"\x20\x02\x00\x05")
    c.expect_closed()
    br.wait_log(r"client closed refused: .*allow_anonymous.*\(CONNACK 5\)")


def test_max_connections_per_listener(start_broker, tmp_path):
    """max_connections 2 on a listener (mosquitto.conf(5): "Limit the total number of
    clients connected for the current listener"): a third connection is closed (Mosquitto
    closes it without a CONNACK; a refusing CONNACK is accepted too); the other listener is
    not limited."""
    conf = write(tmp_path / "m.conf", ["listener 0 127.0.0.1", "max_connections 2",
                                       "allow_anonymous true", "listener 0 ::1"])
    br = start_broker(args=["-c", str(conf), "-v"])
    port6 = int(br.wait_log(r"listening on \[::1\]:(\d+)").group(1))
    a = client(br, "mc1")
    b = client(br, "mc2")
    third = MqttConn(br.port)
    try:
        third.send(connect_pkt("mc3"))
        p = third.read_packet(TIMEOUT)
    except (Closed, OSError):
        p = None
    else:
        assert p is not None, "third connection neither answered nor closed"
        assert p.type == CONNACK and p.body[1] != 0, \
            f"third connection on a max_connections 2 listener was accepted: {p!r}"
        third.expect_closed()
    for i in range(3):
        mqtt_ok("::1", port6, f"v6-{i}")
    a.ping()
    b.ping()


# --------------------------------------------------------------------------------------
# start-up errors
# --------------------------------------------------------------------------------------

def test_websockets_over_tls_never_served_unencrypted(tmp_path):
    """protocol websockets with TLS options (wss, tests in test_wss.py) whose certificate
    cannot be loaded: exit 1 with a line naming the file, never served unencrypted."""
    conf = write(tmp_path / "wss.conf", ["listener 0 127.0.0.1", "allow_anonymous true",
                                         "listener 0 127.0.0.1", "protocol websockets",
                                         f"certfile {tmp_path}/cert.pem",
                                         f"keyfile {tmp_path}/key.pem"])
    rc, out, err = run(conf)
    assert rc == 1, err
    assert re.search(rf"error: listener 0: certfile {re.escape(str(tmp_path))}/cert\.pem: "
                     r"No such file or directory", err), err
    assert "(websockets" not in err + out, (out, err)  # no listening line for it


@pytest.mark.parametrize("host,name", [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
def test_port_in_use_fails_startup(tmp_path, host, name):
    """A listener whose port is taken: exit 1 with "cannot listen on ADDR:PORT: address
    already in use", even when an earlier listener was bound (nothing stays listening)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    busy = socket.socket(fam)
    busy.bind((host, 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        conf = write(tmp_path / "busy.conf", ["listener 0 127.0.0.1", f"listener {port} {host}",
                                              "allow_anonymous true"])
        rc, out, err = run(conf)
        assert rc == 1, err
        assert re.search(rf"error: cannot listen on {re.escape(name)}:{port}: address already "
                         r"in use$", err, re.M), err
        assert "start-up failed" in err
        assert "AddressSanitizer" not in err and "runtime error:" not in err, err
    finally:
        busy.close()
