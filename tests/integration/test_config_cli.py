"""test_config_cli.py - mosquitto.conf compatibility and the command line (issue 3):
--test-config, file:line errors and precise value messages, warnings for Mosquitto options
midge does not implement, include_dir order, paths relative to the working directory, the
allow_anonymous default, and a real mosquitto.conf written the way Mosquitto's
documentation shows (CRLF, comments, no final newline).
"""
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from midge_harness import (MIDGE_BIN, SANITIZER_MARKERS, TIMEOUT, MqttConn, PahoClient,
                           client, connect_pkt, midge_only, scaled)

pytestmark = midge_only

ANON = ["listener 0 127.0.0.1", "allow_anonymous true"]


def write(path, lines, eol="\n", final_eol=True):
    text = eol.join(lines) + (eol if final_eol else "")
    with open(path, "w", newline="") as f:
        f.write(text)
    return str(path)


def run(*args, cwd=None, timeout=10):
    r = subprocess.run([MIDGE_BIN] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       cwd=cwd, timeout=scaled(timeout))
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in err, f"sanitizer report:\n{err}"
    return r.returncode, out, err


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_file(path, regex, timeout=TIMEOUT):
    pat = re.compile(regex, re.M)
    deadline = time.monotonic() + timeout
    while True:
        m = pat.search(read(path))
        if m:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"no line matching {regex!r} in {path}:\n{read(path)}")
        time.sleep(0.02)


def err_lines(err):
    """stderr lines without the timestamp/level prefix: 'LEVEL: message'."""
    out = []
    for ln in err.splitlines():
        m = re.match(r"^(?:<\d>)?(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} )?(\w+): (.*)$", ln)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


@pytest.fixture
def spawn():
    """spawn(argv, cwd=...) -> Popen with stdout+stderr to a file (.log_path); stopped at
    teardown with one SIGTERM, which must give exit 0 and no sanitizer report."""
    procs = []

    def start(argv, cwd=None):
        d = tempfile.mkdtemp(prefix="midge-it-cfg-")
        log_path = os.path.join(d, "out")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        with open(log_path, "wb") as f:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                 cwd=cwd, env=env)
        p.log_path = log_path
        procs.append(p)
        return p
    yield start
    errors = []
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(scaled(10))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            errors.append(f"{p.args} did not exit on SIGTERM")
            continue
        text = read(p.log_path)
        if rc != 0 or any(m in text for m in SANITIZER_MARKERS):
            errors.append(f"{p.args} exited {rc}:\n{text}")
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


def listening_port(proc_or_path, host=r"127\.0\.0\.1"):
    m = wait_file(proc_or_path, rf"listening on {host}:(\d+) \(mqtt\)")
    return int(m.group(1))


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------

def test_help_lists_every_flag():
    rc, out, err = run("-h")
    assert rc == 0 and err == ""
    for flag in ("-c FILE", "-p PORT", "-v", "-d", "--test-config", "--version", "SIGHUP"):
        assert flag in out, f"{flag} missing from -h:\n{out}"


def test_version():
    rc, out, err = run("--version")
    assert rc == 0 and re.fullmatch(r"midge \d+\.\d+\.\d+\n", out), (out, err)


@pytest.mark.parametrize("args,msg", [
    (["-p", "70000"], r'-p: expected a port number from 0 to 65535, got "70000"'),
    (["-c"], r'unknown or incomplete option "-c"'),
    (["--frobnicate"], r'unknown or incomplete option "--frobnicate"'),
])
def test_bad_command_line(args, msg):
    rc, out, err = run(*args)
    assert rc == 1, (out, err)
    assert re.search(msg, err), err


# --------------------------------------------------------------------------------------
# --test-config
# --------------------------------------------------------------------------------------

def test_test_config_valid(tmp_path):
    """A good file: exit 0, "... is valid (N listeners)" on stdout, nothing on stderr."""
    conf = write(tmp_path / "ok.conf", ANON + ["listener 0 ::1", "max_inflight_messages 10"])
    rc, out, err = run("--test-config", "-c", conf)
    assert rc == 0, err
    assert out == f"midge: configuration {conf} is valid (2 listeners)\n", out
    assert err == "", err


def test_test_config_checks_without_binding(start_broker, tmp_path):
    """--test-config on the file of a running broker (whose port is therefore taken) is
    still valid: it checks, it does not bind (so it can run before a reload)."""
    port_probe = socket.socket()
    port_probe.bind(("127.0.0.1", 0))
    port = port_probe.getsockname()[1]
    port_probe.close()
    conf = write(tmp_path / "live.conf", [f"listener {port} 127.0.0.1", "allow_anonymous true"])
    br = start_broker(args=["-c", conf, "-v"])
    assert br.port == port
    rc, out, err = run("--test-config", "-c", conf)
    assert rc == 0 and "is valid" in out, (out, err)
    client(br, "still-served").ping()


def test_test_config_reports_every_problem_in_order(tmp_path):
    """A file with three errors and a warning: exit 1, every one reported with file:line
    in file order (not just the first), no "valid" on stdout."""
    conf = write(tmp_path / "bad.conf", [
        "listener 0 127.0.0.1",            # 1
        "alow_anonymous true",             # 2 unknown option
        "plugin /usr/lib/x.so",            # 3 warning
        "max_inflight_messages lots",      # 4 bad value
        "# comment",                       # 5
        "allow_anonymous maybe",           # 6 bad bool
    ])
    rc, out, err = run("--test-config", "-c", conf)
    assert rc == 1, (out, err)
    assert "valid" not in out, out
    got = [(lvl, msg) for lvl, msg in err_lines(err)
           if re.match(rf"{re.escape(conf)}:\d+: ", msg)]
    assert got == [
        ("error", f'{conf}:2: unknown option "alow_anonymous"'),
        ("warning", f"{conf}:3: plugin: not supported by midge, ignored"),
        ("error", f'{conf}:4: max_inflight_messages: expected a number from 0 to 65535, '
                  f'got "lots"'),
        ("error", f'{conf}:6: allow_anonymous: expected true or false, got "maybe"'),
    ], err


def test_test_config_warnings_only_is_valid(tmp_path):
    conf = write(tmp_path / "w.conf", ANON + ["mount_point site/", "set_tcp_nodelay true"])
    rc, out, err = run("--test-config", "-c", conf)
    assert rc == 0, err
    assert "is valid (1 listener)" in out, out
    assert f"{conf}:3: mount_point: not supported by midge, ignored" in err, err
    assert f"{conf}:4: set_tcp_nodelay: not supported by midge, ignored" in err, err


# --------------------------------------------------------------------------------------
# errors and warnings when starting
# --------------------------------------------------------------------------------------

def test_unknown_option_fails_startup(tmp_path):
    conf = write(tmp_path / "u.conf", ["listener 0 127.0.0.1", "# a comment", "",
                                       "alow_anonymous true"])
    rc, out, err = run("-c", conf)
    assert rc == 1
    assert ("error", f'{conf}:4: unknown option "alow_anonymous"') in err_lines(err), err
    assert "listening on" not in err


@pytest.mark.parametrize("line,msg", [
    ("max_inflight_messages x", 'max_inflight_messages: expected a number from 0 to 65535, '
                                'got "x"'),
    ("max_inflight_messages 65536", 'max_inflight_messages: expected a number from 0 to 65535, '
                                    'got "65536"'),
    ("max_queued_messages -1", 'max_queued_messages: expected a number from 0 to 2147483647, '
                               'got "-1"'),
    ("sys_interval 10s", 'sys_interval: expected a number from 0 to 65535, got "10s"'),
    ("allow_anonymous yes", 'allow_anonymous: expected true or false, got "yes"'),
    ("listener 70000", 'listener: expected a port number from 0 to 65535, got "70000"'),
    ("max_keepalive 60 # one minute", 'max_keepalive: unexpected extra value "#" (comments '
                                      'must be on a line of their own)'),
    ("socket_domain ipv5", 'socket_domain: expected ipv4 or ipv6, got "ipv5"'),
    ("protocol http", 'protocol: expected mqtt or websockets, got "http"'),
    ("log_dest printer", 'log_dest: expected stdout, stderr, syslog, file, topic or none, '
                         'got "printer"'),
    ("max_inflight_messages", "max_inflight_messages: missing value"),
    ("persistent_client_expiration 2 weeks", None),
], ids=lambda v: v if isinstance(v, str) and " " not in v else None)
def test_bad_value_precise_message(tmp_path, line, msg):
    """A bad value stops start-up with exit 1 and FILE:LINE: OPTION: what was expected,
    what was given."""
    conf = write(tmp_path / "v.conf", ANON + [line])
    rc, out, err = run("-c", conf)
    assert rc == 1, err
    if msg is None:  # only the location and the option are fixed
        assert re.search(rf"^error: {re.escape(conf)}:3: persistent_client_expiration: ",
                         "\n".join(f"{a}: {b}" for a, b in err_lines(err)), re.M), err
    else:
        assert ("error", f"{conf}:3: {msg}") in err_lines(err), err
    assert "listening on" not in err


def test_known_unsupported_options_warn_and_start(start_broker, tmp_path):
    """Plugin options are Mosquitto's, not midge's: each is a warning naming file:line and
    the option; the broker starts and serves. (Bridge options are implemented: see
    test_bridge.py, which also checks that the ones midge's bridges lack are refused.)"""
    conf = write(tmp_path / "b.conf", ANON + [
        "mount_point site/",             # 3
        "plugin /usr/lib/mosquitto_dynamic_security.so",  # 4
        "plugin_opt_config_file /etc/mosquitto/dynsec.json",  # 5
    ])
    br = start_broker(args=["-c", conf, "-v"])
    for n, opt in [(3, "mount_point"), (4, "plugin"), (5, "plugin_opt_config_file")]:
        br.wait_log(rf"warning: {re.escape(conf)}:{n}: {opt}: not supported by midge, ignored$")
    client(br, "after-warnings").ping()


def test_missing_config_file_names_os_error(tmp_path):
    path = tmp_path / "nope.conf"
    rc, out, err = run("-c", str(path))
    assert rc == 1
    assert f"cannot open {path}: No such file or directory" in err, err


def test_missing_include_dir_names_os_error(tmp_path):
    conf = write(tmp_path / "i.conf", ANON + [f"include_dir {tmp_path}/absent.d"])
    rc, out, err = run("-c", conf)
    assert rc == 1
    assert (f"{conf}:3: include_dir: cannot open directory {tmp_path}/absent.d: "
            "No such file or directory") in err, err


# --------------------------------------------------------------------------------------
# include_dir
# --------------------------------------------------------------------------------------

def test_include_dir_byte_order_and_own_line_numbers(tmp_path):
    """include_dir reads the *.conf files in byte order of their names (Z before a before
    b); other names (x.txt, a bare ".conf") are skipped; messages name the included file
    and its own line numbers, and the main file's later lines come after."""
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d / "b.conf", ["bogus_b 1"])
    write(d / "a.conf", ["# first line", "bogus_a 1"])
    write(d / "Z.conf", ["bogus_Z 1"])
    write(d / "x.txt", ["bogus_txt 1"])
    write(d / ".conf", ["bogus_dot 1"])
    conf = write(tmp_path / "main.conf", ANON + [f"include_dir {d}", "bogus_main 1"])
    rc, out, err = run("--test-config", "-c", conf)
    assert rc == 1
    unknown = [m for lvl, m in err_lines(err) if "unknown option" in m]
    assert unknown == [
        f'{d}/Z.conf:1: unknown option "bogus_Z"',
        f'{d}/a.conf:2: unknown option "bogus_a"',
        f'{d}/b.conf:1: unknown option "bogus_b"',
        f'{conf}:4: unknown option "bogus_main"',
    ], err


def test_include_dir_settings_apply(start_broker, tmp_path):
    """Listeners and settings from included files are in force: the main file has only
    include_dir; conf.d adds an IPv4 and an IPv6 listener with anonymous access."""
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d / "10-listeners.conf", ["listener 0 127.0.0.1", "listener 0 ::1"])
    write(d / "20-security.conf", ["allow_anonymous true"])
    conf = write(tmp_path / "main.conf", ["# main", f"include_dir {d}"])
    br = start_broker(args=["-c", conf, "-v"])
    port6 = int(br.wait_log(r"listening on \[::1\]:(\d+)").group(1))
    client(br, "inc4").ping()
    c6 = MqttConn(port6, host="::1", family=socket.AF_INET6)
    c6.send(connect_pkt("inc6"))
    c6.expect_bytes(b"\x20\x02\x00\x00")


def test_paths_relative_to_working_directory(spawn, tmp_path):
    """Relative paths (include_dir, log_dest file, pid_file) are relative to the working
    directory, not to the config file's directory, as in Mosquitto."""
    work = tmp_path / "work"
    etc = tmp_path / "etc"
    (work / "conf.d").mkdir(parents=True)
    (etc / "conf.d").mkdir(parents=True)
    write(work / "conf.d" / "l.conf", ["listener 0 127.0.0.1", "allow_anonymous true"])
    write(etc / "conf.d" / "l.conf", ["this_is_the_wrong_directory 1"])
    conf = write(etc / "midge.conf", ["include_dir conf.d", "log_dest file rel.log",
                                      "pid_file rel.pid"])
    p = spawn([MIDGE_BIN, "-c", conf], cwd=work)
    port = listening_port(work / "rel.log")
    assert read(work / "rel.pid").strip() == str(p.pid)
    client(port, "rel").ping()
    assert not (etc / "rel.log").exists()


# --------------------------------------------------------------------------------------
# allow_anonymous default
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("lines", [["listener 0 127.0.0.1"],
                                   ["port 0", "bind_address 127.0.0.1"]],
                         ids=["listener", "port+bind_address"])
def test_listener_without_allow_anonymous_refuses_anonymous(start_broker, tmp_path, lines):
    """Mosquitto 2.0: a file that defines a listener and does not set allow_anonymous
    refuses anonymous clients with CONNACK 5, and the log line names the option."""
    conf = write(tmp_path / "a.conf", lines)
    br = start_broker(args=["-c", conf, "-v"])
    c = MqttConn(br.port)
    c.send(connect_pkt("anon"))
    c.expect_bytes(b"\x20\x02\x00\x05")
    c.expect_closed()
    br.wait_log(r"client anon refused: .*allow_anonymous true.*\(CONNACK 5\)$")


# --------------------------------------------------------------------------------------
# a real mosquitto.conf
# --------------------------------------------------------------------------------------

def test_real_mosquitto_conf(start_broker, tmp_path):
    """The Debian-packaged /etc/mosquitto/mosquitto.conf (pid_file, persistence,
    persistence_location, log_dest file, include_dir) plus a conf.d file written from
    mosquitto.conf(5) and the 2.0 migration guide ("listener 1883" - 0 here -,
    allow_anonymous true, general options with their documented values, commented-out
    defaults), with CRLF line ends and no final newline: midge runs it, logs where it was
    told, writes and removes the pid file, and serves a paho client over loopback."""
    root = tmp_path
    for sub in ("run", "lib", "log", "conf.d"):
        (root / sub).mkdir()
    crlf = dict(eol="\r\n", final_eol=False)
    main = write(root / "mosquitto.conf", [
        "# Place your local configuration in /etc/mosquitto/conf.d/",
        "#",
        "# A full description of the configuration file is at",
        "# /usr/share/doc/mosquitto/examples/mosquitto.conf.example",
        "",
        f"pid_file {root}/run/mosquitto.pid",
        "",
        "persistence true",
        f"persistence_location {root}/lib/",
        "",
        f"log_dest file {root}/log/mosquitto.log",
        "",
        f"include_dir {root}/conf.d",
    ], **crlf)
    write(root / "conf.d" / "default.conf", [
        "# =================================================================",
        "# General configuration",
        "# =================================================================",
        "",
        "# Time in seconds between updates of the $SYS tree.",
        "#sys_interval 10",
        "sys_interval 10",
        "",
        "#max_inflight_messages 20",
        "max_inflight_messages 20",
        "max_queued_messages 1000",
        "#max_queued_bytes 0",
        "#message_size_limit 0",
        "persistent_client_expiration 2w",
        "retain_available true",
        "#upgrade_outgoing_qos false",
        "queue_qos0_messages false",
        "allow_zero_length_clientid true",
        "auto_id_prefix auto-",
        "autosave_interval 1800",
        "persistence_file mosquitto.db",
        "",
        "# =================================================================",
        "# Listeners",
        "# =================================================================",
        "",
        "listener 0",
        "#bind_interface",
        "#max_connections -1",
        "protocol mqtt",
        "",
        "# =================================================================",
        "# Security",
        "# =================================================================",
        "",
        "#per_listener_settings false",
        "allow_anonymous true",
        "",
        "# =================================================================",
        "# Logging",
        "# =================================================================",
        "",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ], **crlf)
    log = root / "log" / "mosquitto.log"
    pid_path = root / "run" / "mosquitto.pid"
    br = start_broker(args=["-c", main], expect_listen=False)
    m4 = wait_file(log, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d notice: listening on "
                        r"0\.0\.0\.0:(\d+) \(mqtt\)$")
    port = int(m4.group(1))
    wait_file(log, rf"notice: listening on \[::\]:{port} \(mqtt\)$")
    assert read(pid_path).strip() == str(br.proc.pid)
    sub = PahoClient(port, "mosq-sub")
    sub.subscribe("home/+/temperature", qos=1)
    pub = PahoClient(port, "mosq-pub")
    pub.publish("home/kitchen/temperature", b"21.5", qos=1)
    m = sub.get()
    assert (m.topic, m.payload) == ("home/kitchen/temperature", b"21.5")
    wait_file(log, r"client mosq-sub connected from 127\.0\.0\.1:\d+")
    sub.close()
    pub.close()
    assert br.stop() == 0
    assert not pid_path.exists(), "pid_file not removed"
    text = read(log)
    assert not [ln for ln in text.splitlines()
                if re.search(r"\b(warning|error):", ln)], f"warnings/errors:\n{text}"
    for marker in SANITIZER_MARKERS:
        assert marker not in text
