"""cli_*: midge's command line, signals, start-up log and configuration errors (the
binary's own contract, not MQTT conformance)."""
import re
import signal
import socket

import pytest

from midge_harness import MqttConn, client, connect_pkt, midge_only, run_midge

pytestmark = midge_only

TS = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \w+: "
ERR = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} error: "


def test_cli_version():
    """--version prints the version and exits 0."""
    r = run_midge("--version", rc=0)
    assert re.fullmatch(r"midge \d+\.\d+\.\d+\n", r.stdout), r.stdout


def test_cli_help():
    """-h prints usage naming -c and -p, exits 0."""
    r = run_midge("-h", rc=0)
    out = r.stdout
    assert re.search(r"(?i)usage", out) and "-c" in out and "-p" in out, out


def test_cli_unknown_flag():
    """an unknown flag: exit status 1, the flag named, then the usage on stderr."""
    r = run_midge("--no-such-flag", rc=1)
    assert r.stderr.startswith('midge: unknown or incomplete option "--no-such-flag"\n\n'), \
        r.stderr
    assert "\nusage: midge [-c FILE]" in r.stderr, r.stderr
    assert r.stdout == "", r.stdout


def test_cli_bad_port_value():
    """-p with a non-number: exit status 1 and one line saying what -p expects."""
    r = run_midge("-p", "notaport", rc=1)
    assert r.stderr == 'midge: -p: expected a port number from 0 to 65535, got "notaport"\n', \
        r.stderr


def test_cli_no_config_loopback_v4_and_v6(start_broker):
    """without -c: loopback only on 127.0.0.1 and [::1], anonymous allowed (-p 0)."""
    br = start_broker(args=["-p", "0", "-v"])
    m6 = br.wait_log(r"listening on \[::1\]:(\d+)")
    c4 = client(br, "v4")
    c4.ping()
    c6 = MqttConn(int(m6.group(1)), host="::1", family=socket.AF_INET6)
    c6.send(connect_pkt("v6"))
    c6.expect_bytes(b"\x20\x02\x00\x00")
    br.assert_no_log(r"listening on (0\.0\.0\.0|\[::\]):")


def test_cli_startup_log_says_where_and_how_to_open(start_broker):
    """the start-up log has timestamped lines, and one line names the served address and
    how to open the broker to the LAN."""
    br = start_broker(args=["-p", "0", "-v"])
    br.wait_log(r"127\.0\.0\.1.*(?i:LAN)|(?i:LAN).*127\.0\.0\.1")
    first = br.log().splitlines()[0]
    assert re.match(TS, first), first


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_signal_clean_exit_with_state(start_broker, sig):
    """SIGTERM / SIGINT exit 0 (no sanitizer report) while clients, a persistent session,
    retained messages and unacknowledged QoS 1/2 messages exist."""
    br = start_broker()
    a = client(br, "persist", clean=False)
    a.subscribe([("st/#", 2)])
    b = client(br, "pub", will=("st/will", b"w", 1, True))
    b.publish("st/r", b"kept", qos=1, retain=True)
    b.publish("st/q", b"inflight", qos=2)
    a.recv_publish(ack=False)
    a.recv_publish(ack=False)
    a.close()
    b.publish("st/q", b"queued", qos=1)
    assert br.stop(sig) == 0


def test_cli_bad_config_file_line(tmp_path):
    """a config with an unknown option on line 3: exit status 1, the error names file:3,
    then the configuration is said not loaded."""
    path = tmp_path / "bad.conf"
    path.write_text("listener 0 127.0.0.1\n# comment\nbogus_option 1\n")
    r = run_midge("-c", path, rc=1)
    assert re.search(ERR + re.escape(f'{path}:3: unknown option "bogus_option"') + "$",
                     r.stderr, re.M), r.stderr
    assert re.search(ERR + re.escape(f"{path}: configuration not loaded") + "$",
                     r.stderr, re.M), r.stderr


def test_cli_bad_config_value_line(tmp_path):
    """a config with a bad value (max_inflight_messages abc) on line 2: exit status 1,
    file:2, the option and what it expects in the message."""
    path = tmp_path / "bad.conf"
    path.write_text("listener 0 127.0.0.1\nmax_inflight_messages abc\n")
    r = run_midge("-c", path, rc=1)
    assert re.search(ERR + re.escape(f"{path}:2: max_inflight_messages: expected a number "
                                    'from 0 to 65535, got "abc"') + "$", r.stderr, re.M), r.stderr
    assert re.search(ERR + re.escape(f"{path}: configuration not loaded") + "$",
                     r.stderr, re.M), r.stderr


def test_cli_missing_config_file(tmp_path):
    """-c naming a missing file: exit status 1, the path and the system's reason."""
    path = tmp_path / "nope.conf"
    r = run_midge("-c", path, rc=1)
    assert re.search(ERR + re.escape(f"cannot open {path}: No such file or directory") + "$",
                     r.stderr, re.M), r.stderr
    assert re.search(ERR + re.escape(f"{path}: configuration not loaded") + "$",
                     r.stderr, re.M), r.stderr


def test_cli_p_overrides_config_port(start_broker, tmp_path):
    """-p overrides the first listener's port: config says a port that is busy, -p 0
    makes midge listen elsewhere."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    path = tmp_path / "p.conf"
    path.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    br = start_broker(args=["-c", str(path), "-p", "0", "-v"])
    assert br.port != port
    client(br, "over").ping()
    busy.close()


def test_cli_rebind_immediately_after_restart(start_broker, tmp_path):
    """SO_REUSEADDR: after a stop with a client connected, a new broker binds the same
    port at once."""
    br = start_broker()
    port = br.port
    conf = tmp_path / "again.conf"
    conf.write_text(open(br.conf_path).read())
    c = client(br, "tw")
    c.ping()
    assert br.stop() == 0
    c.expect_closed()
    br2 = start_broker(args=["-c", str(conf), "-p", str(port), "-v"])
    assert br2.port == port
    client(br2, "tw2").ping()


def test_cli_two_listeners(start_broker):
    """two `listener` lines give two listening sockets, both serving MQTT."""
    br = start_broker(["listener 0 127.0.0.1"])
    m = br.wait_log(r"listening on 127\.0\.0\.1:(?!%d\b)(\d+)" % br.port)
    for i, p in enumerate((br.port, int(m.group(1)))):
        client(p, f"l{i}").ping()


def test_cli_verbose_connection_log_has_timestamps(start_broker):
    """connect/disconnect lines carry the "YYYY-MM-DD HH:MM:SS.mmm level: " prefix."""
    br = start_broker()
    c = client(br, "stamp")
    br.wait_log(TS + r"client stamp connected from")
    c.disconnect()
    br.wait_log(TS + r"client stamp disconnected: DISCONNECT received")
