"""test_auth.py - who may connect (issue 4, "Authentication"), through the real binary.

password_file made by the real mosquitto_passwd ($7$ PBKDF2-SHA512, and $6$ with
`-H sha512`) and by midge-passwd; the right password is accepted, a wrong one or an unknown
user gets CONNACK 0x05 (as with Mosquitto) and a log line naming the user, the reason and the client's address
but never the password; no user name with allow_anonymous false gets 0x05 and a line naming
allow_anonymous; allow_anonymous true next to a password_file; per_listener_settings; the
accept_any_password profile with `pattern readwrite %u/feeds/#` (the course scenario);
SIGHUP re-reads the password file (a missing one keeps the old users); bad lines are
skipped with a warning; a user name cannot forge log lines; an unauthenticated peer cannot
make the broker buffer a huge CONNECT.

Every test starts its own broker; synchronisation is on packets and log lines only.
"""
import fcntl
import os
import re
import select
import signal
import socket
import subprocess
import termios
import time

import pytest

import midge_harness as h
from midge_harness import (CONNACK, MqttConn, SubProc, client, connect_pkt, midge_only,
                           run_pub)

pytestmark = midge_only  # password_file reload, accept_any_password and log lines are midge's

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
MIDGE_PASSWD = os.path.join(os.path.dirname(h.MIDGE_BIN), "midge-passwd")
MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"

needs_mosquitto_passwd = h.needs(MOSQUITTO_PASSWD, reason="Debian package mosquitto")
needs_midge_passwd = h.needs(MIDGE_PASSWD, reason="midge-passwd not built")

# Distinctive passwords, so "never in the log" is a meaningful search.
PW_ALICE = "Alice-s3cret-PW-7d1f"
PW_BOB = "Bob-s3cret-PW-92aa"
PW_CAROL = "Carol-s3cret-PW-0c5e"
PW_WRONG = "Wr0ng-Guess-PW-55e1"


# --------------------------------------------------------------------------------------
# helpers

def mosquitto_passwd(path, user, password, sha512=False):
    """Add (or create the file with) user via the real mosquitto_passwd -b."""
    args = [MOSQUITTO_PASSWD]
    if not os.path.exists(path):
        args.append("-c")
    if sha512:
        args += ["-H", "sha512"]
    args += ["-b", str(path), user, password]
    r = subprocess.run(args, capture_output=True, text=True, timeout=h.scaled(30))
    assert r.returncode == 0, f"{args}: {r.stderr}"


def midge_passwd(path, *args):
    """Run midge-passwd with args (path inserted where '{}' stands); must exit 0."""
    full = [MIDGE_PASSWD] + [str(path) if a == "{}" else a for a in args]
    r = subprocess.run(full, capture_output=True, text=True, timeout=h.scaled(30))
    assert r.returncode == 0, f"{full}: rc {r.returncode} {r.stderr}"
    assert not any(m in r.stderr for m in h.SANITIZER_MARKERS), r.stderr


def hash_of(path, user):
    with open(path) as f:
        for line in f:
            if line.startswith(user + ":"):
                return line.rstrip("\n").split(":", 1)[1]
    raise AssertionError(f"{user} not in {path}")


def auth_broker(start_broker, *lines):
    """A broker on one loopback listener whose security options are exactly lines."""
    return start_broker(conf=list(lines), anonymous=False)


def connack(port, cid, **kw):
    """CONNECT and return the CONNACK return code; a refused connection must then be
    closed by the broker ([MQTT-3.2.2-5])."""
    c = MqttConn(port)
    c.send(connect_pkt(cid, **kw))
    p = c.expect(CONNACK, flags=0)
    assert len(p.body) == 2 and p.body[0] == 0, f"bad CONNACK {p!r}"
    rc = p.body[1]
    if rc:
        c.expect_closed()
        c.close()
    else:
        c.disconnect()
    return rc


def refused_line(br, cid, port_, why, code, since=0):
    """The refusal line: the client's address (with its port), its id, the reason, the
    CONNACK code."""
    return br.wait_log(rf"notice: connection from 127\.0\.0\.1:{port_} closed: client "
                       rf"{re.escape(cid)} refused: {why} \(CONNACK {code}\)$", since=since)


def refuse_and_check_log(br, cid, code, why, **kw):
    c = MqttConn(br.port)
    mark = br.mark()
    c.send(connect_pkt(cid, **kw))
    c.expect_bytes(bytes([0x20, 0x02, 0x00, code]))
    c.expect_closed()
    refused_line(br, cid, c.local_port, why, code, since=mark)
    c.close()


def assert_never_logged(br, *secrets):
    text = br.log()
    for s in secrets:
        assert s not in text, f"password {s!r} appears in the broker log:\n{text}"


def reload(br):
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    br.wait_log(rf"SIGHUP received: reloading {re.escape(br.conf_path)}$", since=mark)
    return mark


def reload_ok(br):
    mark = reload(br)
    br.wait_log(rf"configuration reloaded from {re.escape(br.conf_path)}", since=mark)
    return mark


def reload_refused(br):
    mark = reload(br)
    br.wait_log(r"error: reload: the running configuration stays in force \(the password "
                r"file, ACL and log settings included\)$", since=mark)
    br.assert_no_log(r"configuration reloaded", since=mark)
    return mark


def two_ports(br):
    m = br.wait_log(r"serving 127\.0\.0\.1:(\d+), 127\.0\.0\.1:(\d+)")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------------------
# password files from each tool

def _make_file(tool, path):
    if tool == "mosquitto $7$":
        mosquitto_passwd(path, "alice", PW_ALICE)
        mosquitto_passwd(path, "bob", PW_BOB)
        prefix = "$7$101$"
    elif tool == "mosquitto -H sha512 $6$":
        mosquitto_passwd(path, "alice", PW_ALICE, sha512=True)
        mosquitto_passwd(path, "bob", PW_BOB, sha512=True)
        prefix = "$6$"
    else:
        midge_passwd(path, "-c", "-b", "{}", "alice", PW_ALICE)
        midge_passwd(path, "-b", "{}", "bob", PW_BOB)
        prefix = "$7$101$"
    assert hash_of(path, "alice").startswith(prefix)
    assert hash_of(path, "bob").startswith(prefix)


TOOLS = [pytest.param("mosquitto $7$", marks=needs_mosquitto_passwd),
         pytest.param("mosquitto -H sha512 $6$", marks=needs_mosquitto_passwd),
         pytest.param("midge-passwd", marks=needs_midge_passwd)]


@pytest.mark.parametrize("tool", TOOLS)
def test_password_file_right_wrong_unknown(start_broker, tmp_path, tool):
    """A file made by `tool`: each user's right password gets CONNACK 0; a wrong password
    (including the other user's) gets 20 02 00 05 and close, with a log line naming the user,
    "wrong password", the client's address and port; an unknown user gets 0x05 too ("unknown
    user name"); no password at all for a known user gets 0x05. No password ever reaches the
    log, though the broker runs with -v."""
    pw = tmp_path / "passwd"
    _make_file(tool, pw)
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")

    assert connack(br.port, "a-ok", username="alice", password=PW_ALICE) == 0
    assert connack(br.port, "b-ok", username="bob", password=PW_BOB) == 0
    refuse_and_check_log(br, "a-bad", 5, r"wrong password for user alice \(password_file\)",
                         username="alice", password=PW_WRONG)
    refuse_and_check_log(br, "a-swap", 5, r"wrong password for user alice \(password_file\)",
                         username="alice", password=PW_BOB)
    refuse_and_check_log(br, "a-case", 5, r"wrong password for user alice \(password_file\)",
                         username="alice", password=PW_ALICE.upper())
    refuse_and_check_log(br, "a-nopw", 5, r"wrong password for user alice \(password_file\)",
                         username="alice")
    refuse_and_check_log(br, "mallory", 5, r"unknown user name for user mallory "
                         r"\(password_file\)", username="mallory", password=PW_ALICE)
    refuse_and_check_log(br, "Alice", 5, r"unknown user name for user Alice \(password_file\)",
                         username="Alice", password=PW_ALICE)  # user names are case-sensitive
    # A session made under the right password is usable.
    c = client(br, "a-works", username="alice", password=PW_ALICE)
    c.subscribe("t/#")
    c.publish("t/x", b"hello", qos=1)
    assert c.recv_publish().payload == b"hello"
    c.disconnect()
    assert_never_logged(br, PW_ALICE, PW_BOB, PW_WRONG, PW_ALICE.upper())


@needs_mosquitto_passwd
def test_wrong_password_with_real_clients(start_broker, tmp_path):
    """The same through mosquitto_pub and mosquitto_sub: the right password publishes and
    subscribes; a wrong one makes mosquitto_pub fail with "not authorised" (CONNACK 5, as
    Mosquitto answers a wrong password) and deliver nothing."""
    pw = tmp_path / "passwd"
    mosquitto_passwd(pw, "alice", PW_ALICE)
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")
    sub = SubProc(br.port, "-u", "alice", "-P", PW_ALICE, "-t", "room/#", "-v")
    try:
        r = subprocess.run([MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(br.port), "-u", "alice",
                            "-P", PW_WRONG, "-t", "room/1", "-m", "intruder"],
                           capture_output=True, text=True, timeout=h.scaled(10))
        assert r.returncode != 0, "mosquitto_pub with a wrong password succeeded"
        assert "not authorised" in (r.stderr + r.stdout).lower(), r.stderr
        run_pub(br.port, "-u", "alice", "-P", PW_ALICE, "-t", "room/1", "-m", "welcome", "-q", "1")
        assert sub.wait_messages(1) == ["room/1 welcome"]
    finally:
        sub.stop()
    assert_never_logged(br, PW_ALICE, PW_WRONG)


@needs_midge_passwd
def test_password_never_logged_even_when_long_or_binary(start_broker, tmp_path):
    """Refusals for a long password, one that is the user name itself, and bytes that are not
    UTF-8: none of the password bytes' text reaches the log; the log still says why."""
    pw = tmp_path / "passwd"
    midge_passwd(pw, "-c", "-b", "{}", "alice", PW_ALICE)
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")
    long_pw = "L0ng-" + "x9" * 2000
    refuse_and_check_log(br, "long", 5, r"wrong password for user alice \(password_file\)",
                         username="alice", password=long_pw)
    refuse_and_check_log(br, "bin", 5, r"wrong password for user alice \(password_file\)",
                         username="alice", password=b"\xff\xfePW-bin\x00ary-77")
    assert connack(br.port, "ok", username="alice", password=PW_ALICE) == 0
    assert_never_logged(br, PW_ALICE, "x9x9x9x9", "PW-bin", "ary-77")


# --------------------------------------------------------------------------------------
# anonymous access

def test_anonymous_refused_names_allow_anonymous(start_broker, tmp_path):
    """allow_anonymous false + password_file: a client without a user name gets 20 02 00 05
    and close; the log line names the client's address, its id and allow_anonymous."""
    pw = tmp_path / "passwd"
    pw.write_text("")
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")
    refuse_and_check_log(br, "nobody", 5, r"anonymous access is not allowed on this listener "
                         r"\(set allow_anonymous true, or give the client a user name and "
                         r"password\)")


@needs_midge_passwd
def test_allow_anonymous_true_with_password_file(start_broker, tmp_path):
    """allow_anonymous true next to a password_file (Mosquitto's semantics): a client
    without a user name is let in, but a known user with a wrong password is still refused
    with 0x05, and so is an unknown user name: the password file is not bypassed by simply
    sending a user name."""
    pw = tmp_path / "passwd"
    midge_passwd(pw, "-c", "-b", "{}", "alice", PW_ALICE)
    br = auth_broker(start_broker, "allow_anonymous true", f"password_file {pw}")
    anon = client(br, "anon")
    anon.ping()
    refuse_and_check_log(br, "a-bad", 5, r"wrong password for user alice \(password_file\)",
                         username="alice", password=PW_WRONG)
    refuse_and_check_log(br, "eve", 5, r"unknown user name for user eve \(password_file\)",
                         username="eve", password="whatever")
    assert connack(br.port, "a-ok", username="alice", password=PW_ALICE) == 0
    anon.ping()
    assert_never_logged(br, PW_ALICE, PW_WRONG)


def test_no_password_file_allow_anonymous_false_refuses_users(start_broker):
    """Without password_file and without accept_any_password, allow_anonymous false lets
    nobody in: a client with a user name and password gets 0x05 (nothing to check it
    against), and the log line names the options that would let it in."""
    br = auth_broker(start_broker, "allow_anonymous false")
    refuse_and_check_log(br, "u1", 5, r"no password_file is configured to check the user name "
                         r"against \(set password_file, accept_any_password true or "
                         r"allow_anonymous true\)", username="alice", password=PW_ALICE)
    assert_never_logged(br, PW_ALICE)


@needs_midge_passwd
def test_per_listener_settings_two_listeners(start_broker, tmp_path):
    """per_listener_settings true: the first listener has a password_file and no anonymous
    access, the second allows anonymous access and has no password file. Each listener
    applies only its own rules; one broker routes between them."""
    pw = tmp_path / "passwd"
    midge_passwd(pw, "-c", "-b", "{}", "alice", PW_ALICE)
    br = start_broker(anonymous=False, listener=False, conf=[
        "per_listener_settings true",
        "listener 0 127.0.0.1", f"password_file {pw}", "allow_anonymous false",
        "listener 0 127.0.0.1", "allow_anonymous true"])
    locked, open_ = two_ports(br)
    assert locked != open_

    # Locked listener: passwords checked, anonymous refused.
    assert connack(locked, "l-anon") == 5
    assert connack(locked, "l-bad", username="alice", password=PW_WRONG) == 5
    assert connack(locked, "l-unknown", username="zed", password="x") == 5
    # Open listener: anonymous fine; no password file here, so user names are not checked.
    assert connack(open_, "o-anon") == 0
    assert connack(open_, "o-user", username="alice", password=PW_WRONG) == 0
    br.wait_log(r"client l-anon refused: anonymous access is not allowed on this listener")
    br.wait_log(r"client l-bad refused: wrong password for user alice")

    # Both kinds of client share one broker.
    inside = client(locked, "inside", username="alice", password=PW_ALICE)
    inside.subscribe("lan/#")
    outside = client(open_, "outside")
    outside.publish("lan/temp", b"21", qos=1)
    assert inside.recv_publish().payload == b"21"
    assert_never_logged(br, PW_ALICE, PW_WRONG)


# --------------------------------------------------------------------------------------
# accept_any_password: the course-firmware profile

COURSE = ["allow_anonymous false", "accept_any_password true"]
HUEY = "hueyanchen2014"
LIGHTS = f"{HUEY}/feeds/lights"


def course_acl(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("# Each user owns <username>/feeds/...; anyone may publish channel keys.\n"
                   "pattern readwrite %u/feeds/#\n"
                   "pattern write channels/+/publish/#\n")
    return acl


def test_course_scenario_accept_any_password_with_feeds_acl(start_broker, tmp_path):
    """The course: an ESP32 running umqtt.simple (keepalive 0, client id from the chip,
    user = Adafruit IO user name, password = an AIO key the broker does not check)
    subscribes hueyanchen2014/feeds/lights; a dashboard (mosquitto_pub, same user, another
    key) switches it ON then OFF and the board gets both. User bob (any password accepted)
    can neither read that feed (SUBACK 0x80; a '#' subscription gets nothing of it) nor
    write it (his QoS 1 PUBLISH is acknowledged, dropped and logged)."""
    acl = course_acl(tmp_path)
    br = auth_broker(start_broker, *COURSE, f"acl_file {acl}")
    esp = client(br, "esp32-a1b2c3", keepalive=0, username=HUEY,
                 password="aio_AbCd12EfGh34IjKl56MnOp78")
    assert esp.subscribe(LIGHTS) == [0]

    run_pub(br.port, "-i", "dashboard", "-u", HUEY, "-P", "aio_dashboard_key_999",
            "-t", LIGHTS, "-m", "ON", "-q", "1")
    run_pub(br.port, "-i", "dashboard", "-u", HUEY, "-P", "aio_dashboard_key_999",
            "-t", LIGHTS, "-m", "OFF", "-q", "1")
    got = esp.collect(2)
    assert [(m.topic, m.payload) for m in got] == [(LIGHTS, b"ON"), (LIGHTS, b"OFF")]

    bob = client(br, "bob-laptop", username="bob", password="anything at all")
    assert bob.subscribe([(LIGHTS, 1), (f"{HUEY}/feeds/#", 0), ("bob/feeds/lights", 0)]) \
        == [0x80, 0x80, 0]
    br.wait_log(rf"client bob-laptop: SUBSCRIBE to {LIGHTS} denied by acl_file \(SUBACK 0x80\)")
    assert bob.subscribe([("#", 0)]) == [0]  # allowed: bob may read bob/feeds/...
    mark = br.mark()
    bob.publish(LIGHTS, b"ON", qos=1)  # PUBACK arrives (checked by publish)
    br.wait_log(rf"client bob-laptop: PUBLISH to {LIGHTS} denied by acl_file, dropped$",
                since=mark)
    # hueyanchen2014 publishes OFF again: the board gets it (and nothing from bob before
    # it); bob's '#' subscription gets nothing of the feed.
    dash = client(br, "dash2", username=HUEY, password="k")
    dash.publish(LIGHTS, b"OFF-again", qos=1)
    m = esp.recv_publish()
    assert (m.topic, m.payload) == (LIGHTS, b"OFF-again")
    dash.publish("bob/feeds/lights", b"not-bobs-to-write", qos=1)  # huey may not write bob's
    bob.publish("bob/feeds/lights", b"bobs-own", qos=1)
    m = bob.recv_publish()
    assert (m.topic, m.payload) == ("bob/feeds/lights", b"bobs-own"), \
        "bob's '#' got something he may not read, or huey wrote bob's feed"
    esp.expect_no_packet()

    # The ThingSpeak-style channel: anyone writes, nobody reads.
    assert esp.subscribe("channels/#") == [0x80]
    bob.publish("channels/123/publish/KEY", b"field1=21.5&field2=40", qos=1)
    bob.ping()
    bob.expect_no_packet(0)
    assert_never_logged(br, "aio_AbCd12EfGh34IjKl56MnOp78", "aio_dashboard_key_999",
                        "anything at all")


def test_accept_any_password_anonymous_governed_by_allow_anonymous(start_broker, tmp_path):
    """accept_any_password lets any user name in with any (or no) password, but not a client
    without a user name while allow_anonymous is false (0x05); with allow_anonymous true such
    a client connects, and the %u patterns give it nothing (they never apply without a user
    name)."""
    acl = course_acl(tmp_path)
    br = auth_broker(start_broker, *COURSE, f"acl_file {acl}")
    assert connack(br.port, "u-any", username="whoever", password="x") == 0
    assert connack(br.port, "u-nopw", username="whoever") == 0
    assert connack(br.port, "u-empty-pw", username="whoever", password="") == 0
    refuse_and_check_log(br, "anon", 5, r"anonymous access is not allowed on this listener "
                         r"\(set allow_anonymous true.*")

    br2 = auth_broker(start_broker, "allow_anonymous true", "accept_any_password true",
                      f"acl_file {acl}")
    anon = client(br2, "anon")
    assert anon.subscribe([(LIGHTS, 0), ("/feeds/lights", 0), ("#", 0)]) == [0x80, 0x80, 0x80]
    owner = client(br2, "owner", username=HUEY, password="k")
    owner.subscribe(LIGHTS)
    anon.publish(LIGHTS, b"ON", qos=1)
    owner.publish(LIGHTS, b"mine", qos=1)
    assert owner.recv_publish().payload == b"mine"  # not the anonymous ON


@needs_midge_passwd
def test_accept_any_password_with_password_file_checks_passwords(start_broker, tmp_path):
    """accept_any_password is documented as applying only without a password_file: with
    one, passwords are checked as usual (wrong → 0x05)."""
    pw = tmp_path / "passwd"
    midge_passwd(pw, "-c", "-b", "{}", "alice", PW_ALICE)
    br = auth_broker(start_broker, *COURSE, f"password_file {pw}")
    assert connack(br.port, "ok", username="alice", password=PW_ALICE) == 0
    refuse_and_check_log(br, "bad", 5, r"wrong password for user alice \(password_file\)",
                         username="alice", password=PW_WRONG)
    refuse_and_check_log(br, "other", 5, r"unknown user name for user bob \(password_file\)",
                         username="bob", password="anything")


# --------------------------------------------------------------------------------------
# SIGHUP and damaged files

@needs_midge_passwd
@needs_mosquitto_passwd
def test_reload_changed_password_file(start_broker, tmp_path):
    """SIGHUP re-reads the password file: a user added since start-up can connect, a
    removed one is refused (0x05, "unknown user name"), a changed password takes effect;
    clients connected before keep their connection and keep exchanging messages."""
    pw = tmp_path / "passwd"
    midge_passwd(pw, "-c", "-b", "{}", "alice", PW_ALICE)
    midge_passwd(pw, "-b", "{}", "bob", PW_BOB)
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")
    alice = client(br, "alice-1", username="alice", password=PW_ALICE)
    alice.subscribe("home/#")
    bob = client(br, "bob-1", username="bob", password=PW_BOB)
    assert connack(br.port, "carol-early", username="carol", password=PW_CAROL) == 5

    midge_passwd(pw, "-D", "{}", "alice")
    mosquitto_passwd(pw, "carol", PW_CAROL)  # the other tool edits the same file
    midge_passwd(pw, "-b", "{}", "bob", PW_BOB + "-v2")
    reload_ok(br)

    assert connack(br.port, "carol-1", username="carol", password=PW_CAROL) == 0
    refuse_and_check_log(br, "alice-2", 5, r"unknown user name for user alice "
                         r"\(password_file\)", username="alice", password=PW_ALICE)
    assert connack(br.port, "bob-old", username="bob", password=PW_BOB) == 5
    assert connack(br.port, "bob-new", username="bob", password=PW_BOB + "-v2") == 0
    # Already connected clients stay, and still work.
    alice.ping()
    bob.publish("home/door", b"open", qos=1)
    assert alice.recv_publish().payload == b"open"
    assert_never_logged(br, PW_ALICE, PW_BOB, PW_CAROL)


@needs_midge_passwd
def test_reload_missing_password_file_keeps_old_users(start_broker, tmp_path):
    """The password file disappears, then SIGHUP: the reload is refused with the file's
    name and the OS error, the old users stay in force (right password in, wrong password
    still refused: no fail-open), and a later SIGHUP with the file back applies it."""
    pw = tmp_path / "passwd"
    midge_passwd(pw, "-c", "-b", "{}", "alice", PW_ALICE)
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")
    kept = client(br, "kept", username="alice", password=PW_ALICE)
    os.rename(pw, tmp_path / "passwd.away")
    mark = reload_refused(br)
    br.wait_log(rf"error: {re.escape(str(pw))}: cannot open password file: No such file or "
                r"directory$", since=mark)
    assert connack(br.port, "still-in", username="alice", password=PW_ALICE) == 0
    assert connack(br.port, "still-out", username="alice", password=PW_WRONG) == 5
    assert connack(br.port, "anon", ) == 5
    kept.ping()

    os.rename(tmp_path / "passwd.away", pw)
    midge_passwd(pw, "-b", "{}", "bob", PW_BOB)
    reload_ok(br)
    assert connack(br.port, "bob", username="bob", password=PW_BOB) == 0


def run_broker_to_exit(tmp_path, lines):
    """Run the broker on a file expected to stop start-up; return (status, stderr)."""
    conf = tmp_path / "midge.conf"
    conf.write_text("\n".join(lines) + "\n")
    r = subprocess.run([h.MIDGE_BIN, "-c", str(conf), "-v"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=h.scaled(20))
    for marker in h.SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r.returncode, r.stderr


def test_startup_missing_password_file_exits_1(tmp_path):
    """A password_file that cannot be read stops start-up (exit 1) with the path and the
    reason; the broker never listens (it must not serve without the file)."""
    pw = tmp_path / "nope"
    rc, err = run_broker_to_exit(tmp_path, ["listener 0 127.0.0.1", "allow_anonymous false",
                                            f"password_file {pw}"])
    assert rc == 1, f"exit status {rc}: {err}"
    assert re.search(rf"error: {re.escape(str(pw))}: cannot open password file: No such file "
                     r"or directory$", err, re.M), err
    assert "start-up failed: a password or ACL file could not be loaded" in err, err
    assert "listening on" not in err, err


@needs_midge_passwd
@needs_mosquitto_passwd
def test_bad_password_lines_skipped_with_warning(start_broker, tmp_path):
    """Damaged lines are skipped with a file:line warning (which shows neither the hash nor
    the plain-text password), and the valid users around them still log in; the user of a
    damaged line is refused."""
    pw = tmp_path / "passwd"
    midge_passwd(pw, "-c", "-b", "{}", "alice", PW_ALICE)
    mosquitto_passwd(pw, "carol", PW_CAROL, sha512=True)
    good = pw.read_text().splitlines()
    alice_hash = hash_of(pw, "alice")
    lines = ["# users", good[0],
             "eve:Plain-Text-PW-31c",                        # 3: plain text
             "mallory:$5$rounds=5000$abc$def",               # 4: unknown hash type
             "trent:$7$101$c2hvcnQ=$" + alice_hash.split("$")[4],  # 5: salt not 12 bytes
             "no colon here",                                # 6
             good[1]]                                         # 7: carol ($6$)
    pw.write_text("\r\n".join(lines) + "\r\n")  # CRLF too
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")
    p = re.escape(str(pw))
    br.wait_log(rf"warning: {p}:3: plain-text password, not a hash \(convert the file with "
                r"midge-passwd -U\); line skipped$")
    br.wait_log(rf"warning: {p}:4: unknown password hash type \(only \$6\$ and \$7\$ are "
                r"supported\); line skipped$")
    br.wait_log(rf"warning: {p}:5: salt is not 12 bytes of base64; line skipped$")
    br.wait_log(rf"warning: {p}:6: no ':' between user name and password hash; line skipped$")
    assert connack(br.port, "a", username="alice", password=PW_ALICE) == 0
    assert connack(br.port, "c", username="carol", password=PW_CAROL) == 0
    assert connack(br.port, "e", username="eve", password="Plain-Text-PW-31c") == 5
    assert connack(br.port, "m", username="mallory", password="x") == 5
    assert connack(br.port, "t", username="trent", password=PW_ALICE) == 5
    assert_never_logged(br, "Plain-Text-PW-31c", alice_hash, PW_ALICE, PW_CAROL, "$5$rounds")


@needs_midge_passwd
def test_reload_with_bad_lines_applies_the_valid_ones(start_broker, tmp_path):
    """A reload whose file has a damaged line is not refused (a bad line is a warning, as
    at start-up): the warning is logged and the valid users of the new file apply."""
    pw = tmp_path / "passwd"
    midge_passwd(pw, "-c", "-b", "{}", "alice", PW_ALICE)
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")
    midge_passwd(pw, "-b", "{}", "bob", PW_BOB)
    with open(pw, "a") as f:
        f.write("broken line\n")
    mark = reload_ok(br)
    br.wait_log(rf"warning: {re.escape(str(pw))}:3: no ':' between user name and password "
                r"hash; line skipped$", since=mark)
    assert connack(br.port, "b", username="bob", password=PW_BOB) == 0
    assert connack(br.port, "a", username="alice", password=PW_ALICE) == 0


def test_refused_client_on_ipv6_logs_its_address(start_broker, tmp_path):
    """The refusal line carries the client's address also for IPv6 ([::1]:port)."""
    pw = tmp_path / "passwd"
    pw.write_text("")
    br = start_broker(anonymous=False, conf=["listener 0 ::1", "allow_anonymous false",
                                             f"password_file {pw}"])
    port6 = int(br.wait_log(r"listening on \[::1\]:(\d+)").group(1))
    c = MqttConn(port6, host="::1", family=socket.AF_INET6)
    c.send(connect_pkt("v6", username="ghost", password=PW_WRONG))
    c.expect_bytes(b"\x20\x02\x00\x05")
    c.expect_closed()
    br.wait_log(rf"connection from \[::1\]:{c.local_port} closed: client v6 refused: unknown "
                r"user name for user ghost \(password_file\) \(CONNACK 5\)$")
    assert_never_logged(br, PW_WRONG)


def test_user_name_cannot_forge_log_lines(start_broker, tmp_path):
    """A user name with a newline in it (valid UTF-8) is refused and logged on one line:
    the control characters are replaced, so no forged "connected" line appears."""
    pw = tmp_path / "passwd"
    pw.write_text("")
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")
    forged = "eve\n2030-01-01 00:00:00.000 notice: client admin connected from 10.0.0.1:1"
    assert connack(br.port, "forger", username=forged, password="x") == 5
    br.wait_log(r"client forger refused: unknown user name for user eve\?2030-01-01")
    br.assert_no_log(r"^2030-01-01")


def test_unauthenticated_client_cannot_make_the_broker_buffer_a_huge_connect(start_broker,
                                                                             tmp_path):
    """Before authentication a peer must not be able to make the broker hold much memory
    (issue 4: memory stays within its bounds; a password file is no use if an anonymous
    peer can exhaust the host first). The largest possible CONNECT is 12 bytes of variable
    header (MQTT 3.1's "MQIsdp"; 10 for 3.1.1) plus five length-prefixed fields (client id,
    will topic, will message, user name, password) of at most 65,537 bytes each: 327,697
    bytes. So a CONNECT announcing
    268,435,455 bytes is malformed from its fixed header on. A peer that announces one and
    then streams 64 MiB of it at full speed (well inside connect_timeout) must not grow the
    broker's resident memory by more than 16 MiB, with the default max_packet_size, on a
    broker with allow_anonymous false and a password_file."""
    pw = tmp_path / "passwd"
    pw.write_text("")
    br = auth_broker(start_broker, "allow_anonymous false", f"password_file {pw}")

    def rss_kib():
        with open(f"/proc/{br.proc.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))

    before = rss_kib()
    c = MqttConn(br.port)
    c.send(bytes([0x10]) + h.enc_len(268435455) + b"\x00\x04MQTT\x04\xc2\x00\x3c")
    chunk = b"\x00" * (1 << 20)
    sent = 0
    c.sock.settimeout(h.scaled(2))
    try:
        for _ in range(64):
            c.sock.sendall(chunk)
            sent += len(chunk)
        # Wait (bounded) until the broker's kernel has acknowledged every byte, then let
        # its event loop turn once more (a PINGREQ on another connection).
        deadline = time.monotonic() + h.TIMEOUT
        while fcntl.ioctl(c.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0") != b"\0\0\0\0" \
                and time.monotonic() < deadline:
            select.select([], [], [], 0.01)
    except OSError:
        pass  # closed by the broker, or it stopped reading: both fine
    probe = MqttConn(br.port)
    probe.send(connect_pkt("probe", username="x", password="y"))
    probe.expect_closed(allow=(CONNACK,))
    grown = rss_kib() - before
    still_open = c.is_open()
    c.close()
    assert grown < 16 * 1024, (
        f"an unauthenticated peer announced a 268 MB CONNECT and sent {sent >> 20} MiB of "
        f"it: the broker's RSS grew by {grown >> 10} MiB and the connection is "
        f"{'still open' if still_open else 'closed'} (a CONNECT cannot exceed 327,697 "
        f"bytes, so it can be refused from its fixed header)")
