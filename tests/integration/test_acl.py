"""test_acl.py - what a client may do (issue 4, "Authorisation"), through the real binary.

acl_file in Mosquitto's format: `topic deny` gives SUBACK 0x80 (other filters of the same
SUBSCRIBE granted); write-only patterns (`pattern write channels/+/publish/#`); a denied
QoS 1/2 PUBLISH is still acknowledged (PUBACK / PUBREC..PUBCOMP, [MQTT-3.3.5-2]), dropped
and logged; every delivery is a READ check, retained messages and '#' subscribers
included; the anonymous section at the top; %u and %c patterns; a will to a topic the
client may not write is not published; SIGHUP changes the rules for connected clients; a
bad file keeps the old rules on reload and stops start-up, with file:line; messages held for
a persistent session (queued or in flight) are checked again when it resumes, possibly
under another user name or newer rules; per_listener_settings with an ACL on one listener.

Synchronisation without sleeps: a QoS 1 PUBLISH is routed before its PUBACK is sent, and a
client's output keeps its order, so after `pub.publish(..., qos=1)` returns, a PINGREQ from
the subscriber is answered after every message routed to it ("barrier" below).
"""
import re
import signal
import subprocess

import pytest

import midge_harness as h
from midge_harness import (PINGRESP, PUBLISH, MqttConn, client, midge_only, parse_publish,
                           pingreq_pkt, puback_pkt, pubcomp_pkt, publish_pkt, pubrec_pkt,
                           pubrel_pkt)

pytestmark = midge_only  # SUBACK 0x80 on SUBSCRIBE, acl reload and log lines are midge's


# --------------------------------------------------------------------------------------
# helpers

def acl_broker(start_broker, tmp_path, acl_lines, extra=(), name="acl"):
    """Broker on one loopback listener, any user name accepted (allow_anonymous true and no
    password_file: user names are taken as given), with acl_file tmp_path/name holding
    acl_lines."""
    acl = tmp_path / name
    acl.write_text("\n".join(acl_lines) + "\n")
    br = start_broker(conf=[f"acl_file {acl}"] + list(extra))
    br.acl_path = acl
    return br


def barrier(conn):
    """Send PINGREQ and return the PUBLISHes that arrive before the PINGRESP (acked)."""
    conn.send(pingreq_pkt())
    got = []
    while True:
        p = conn.recv()
        if p.type == PINGRESP:
            return got
        assert p.type == PUBLISH, f"unexpected {p!r}"
        m = parse_publish(p)
        if m.qos == 1:
            conn.send(puback_pkt(m.pid))
        elif m.qos == 2:
            conn.send(pubrec_pkt(m.pid))
        got.append(m)


def topics(msgs):
    return [(m.topic, m.payload) for m in msgs]


def reload(br, acl_lines=None):
    if acl_lines is not None:
        br.acl_path.write_text("\n".join(acl_lines) + "\n")
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    br.wait_log(rf"SIGHUP received: reloading {re.escape(br.conf_path)}$", since=mark)
    return mark


def reload_ok(br, acl_lines=None):
    mark = reload(br, acl_lines)
    br.wait_log(rf"configuration reloaded from {re.escape(br.conf_path)}", since=mark)
    return mark


def run_broker_to_exit(tmp_path, lines):
    conf = tmp_path / "midge.conf"
    conf.write_text("\n".join(lines) + "\n")
    r = subprocess.run([h.MIDGE_BIN, "-c", str(conf), "-v"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=h.scaled(20))
    for marker in h.SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r.returncode, r.stderr


# --------------------------------------------------------------------------------------
# SUBSCRIBE

def test_topic_deny_gives_suback_0x80_others_granted(start_broker, tmp_path):
    """`topic deny test/nosubscribe` in a section that may read test/#: one SUBSCRIBE with
    three filters gets 0x80 for test/nosubscribe only, the others their QoS; a log line
    names the client and the filter. The '#'-style filter test/# is granted but never
    delivers test/nosubscribe (the read check at delivery)."""
    br = acl_broker(start_broker, tmp_path, ["topic readwrite test/#",
                                             "topic deny test/nosubscribe"])
    sub = client(br, "subber")
    assert sub.subscribe([("test/nosubscribe", 1), ("test/ok", 2), ("test/#", 0)]) \
        == [0x80, 2, 0]
    br.wait_log(r"notice: client subber: SUBSCRIBE to test/nosubscribe denied by acl_file "
                r"\(SUBACK 0x80\)$")
    br.assert_no_log(r"SUBSCRIBE to test/(ok|#) denied")
    pub = client(br, "pub")
    mark = br.mark()
    pub.publish("test/nosubscribe", b"hidden", qos=1)  # also denied as a write
    br.wait_log(r"client pub: PUBLISH to test/nosubscribe denied by acl_file, dropped$",
                since=mark)
    pub.publish("test/ok", b"seen", qos=1)
    # test/ok matches test/ok (QoS 2) and test/# (QoS 0): one copy at the higher QoS.
    got = barrier(sub)
    assert topics(got) == [("test/ok", b"seen")]
    assert got[0].qos == 1


def test_deny_with_wildcard_and_subscription_semantics(start_broker, tmp_path):
    """docs/acl.md's SUBSCRIBE rules: a deny refuses a filter only when it covers every topic
    the filter can match (hidden/+ and hidden/a refused, but not '#'); a read entry allows a
    filter overlapping it (sensors/+/temp, '+/kitchen/temp'); write-only entries never allow
    a subscription."""
    br = acl_broker(start_broker, tmp_path, ["topic read sensors/#", "topic read #",
                                             "topic deny hidden/+", "topic write out/#"])
    c = client(br, "c")
    assert c.subscribe([("hidden/+", 0), ("hidden/a", 0), ("#", 0), ("sensors/+/temp", 0),
                        ("+/kitchen/temp", 0), ("hidden/a/b", 0)]) == [0x80, 0x80, 0, 0, 0, 0]
    br2 = acl_broker(start_broker, tmp_path, ["topic write out/#"], name="acl2")
    d = client(br2, "d")
    assert d.subscribe([("out/#", 0), ("out/x", 1), ("#", 0)]) == [0x80, 0x80, 0x80]


def test_write_only_channels_pattern(start_broker, tmp_path):
    """`pattern write channels/+/publish/#` (ThingSpeak-style sensors): anyone may publish
    field1=..&field2=.. there, named or anonymous; a subscriber without read access gets
    SUBACK 0x80 for channels/# and a '#' subscription that delivers none of it; a user
    with `topic read channels/#` receives every message."""
    br = acl_broker(start_broker, tmp_path, [
        "pattern write channels/+/publish/#",
        "pattern readwrite %u/feeds/#",
        "user dashboard",
        "topic read channels/#"])
    br.wait_log(r'warning: .*acl:1: pattern "channels/\+/publish/#" contains neither %u nor '
                r"%c: it applies to every client$")
    dash = client(br, "dash", username="dashboard")
    assert dash.subscribe([("channels/#", 0)]) == [0]
    nosy = client(br, "nosy", username="nosy")
    assert nosy.subscribe([("channels/#", 0), ("channels/123/publish/KEY", 0), ("#", 1)]) \
        == [0x80, 0x80, 1]
    sensor = client(br, "esp-dht", username="sensor1", keepalive=0)
    anon = client(br, "anon-sensor")
    sensor.publish("channels/123/publish/WRITEKEY", b"field1=23.4&field2=55", qos=1)
    anon.publish("channels/456/publish/KEY2", b"field1=19.0&field2=61")
    anon.publish("channels/456/publish/KEY2", b"sync", qos=1)
    assert topics(barrier(dash)) == [
        ("channels/123/publish/WRITEKEY", b"field1=23.4&field2=55"),
        ("channels/456/publish/KEY2", b"field1=19.0&field2=61"),
        ("channels/456/publish/KEY2", b"sync")]
    assert barrier(nosy) == []
    # channels/1/other is outside the pattern: not writable.
    mark = br.mark()
    sensor.publish("channels/1/other", b"x", qos=1)
    br.wait_log(r"client esp-dht: PUBLISH to channels/1/other denied by acl_file", since=mark)
    assert barrier(dash) == []


# --------------------------------------------------------------------------------------
# PUBLISH

PUB_ACL = ["user writer", "topic write ok/#", "topic read secret/#",
           "user reader", "topic read ok/#", "topic read secret/#"]


def test_denied_qos1_publish_acknowledged_dropped_logged(start_broker, tmp_path):
    """[MQTT-3.3.5-2] A QoS 1 PUBLISH to a topic the client may not write gets its PUBACK
    (byte-exact, same packet id), is not delivered to a subscriber that may read it, and the
    log says denied; the connection stays open and the next allowed message arrives first."""
    br = acl_broker(start_broker, tmp_path, PUB_ACL)
    reader = client(br, "reader", username="reader")
    assert reader.subscribe([("secret/#", 1), ("ok/#", 1)]) == [1, 1]
    writer = client(br, "writer", username="writer")
    mark = br.mark()
    writer.send(publish_pkt("secret/plans", b"leak", qos=1, pid=77))
    writer.expect_bytes(puback_pkt(77))
    br.wait_log(r"notice: client writer: PUBLISH to secret/plans denied by acl_file, "
                r"dropped$", since=mark)
    writer.publish("ok/1", b"fine", qos=1)
    m = reader.recv_publish()
    assert (m.topic, m.payload) == ("ok/1", b"fine")
    assert barrier(reader) == []
    writer.ping()


def test_denied_qos2_publish_full_flow_not_delivered(start_broker, tmp_path):
    """A denied QoS 2 PUBLISH completes its flow (PUBREC, then PUBCOMP for the PUBREL), a
    retransmission with DUP before PUBREL gets PUBREC again, nothing is delivered; the
    packet id is free afterwards (an allowed QoS 2 message with the same id is
    delivered)."""
    br = acl_broker(start_broker, tmp_path, PUB_ACL)
    reader = client(br, "reader", username="reader")
    reader.subscribe([("secret/#", 2), ("ok/#", 2)])
    writer = client(br, "writer", username="writer")
    writer.send(publish_pkt("secret/x", b"leak", qos=2, pid=9))
    writer.expect_bytes(pubrec_pkt(9))
    writer.send(publish_pkt("secret/x", b"leak", qos=2, pid=9, dup=True))
    writer.expect_bytes(pubrec_pkt(9))
    writer.send(pubrel_pkt(9))
    writer.expect_bytes(pubcomp_pkt(9))
    br.wait_log(r"client writer: PUBLISH to secret/x denied by acl_file, dropped$")
    assert barrier(reader) == []
    writer.publish("ok/q2", b"allowed", qos=2, pid=9)
    m = reader.recv_publish()
    assert (m.topic, m.payload, m.qos) == ("ok/q2", b"allowed", 2)


def test_denied_retained_publish_not_stored(start_broker, tmp_path):
    """A denied retained PUBLISH (QoS 0 and 1) does not replace or create the retained
    message: a later subscriber that may read the topic gets the old one."""
    br = acl_broker(start_broker, tmp_path, ["user owner", "topic readwrite state/#",
                                             "user other", "topic read state/#"])
    owner = client(br, "owner", username="owner")
    owner.publish("state/lamp", b"ON", qos=1, retain=True)
    other = client(br, "other", username="other")
    other.publish("state/lamp", b"HACKED", qos=1, retain=True)
    other.publish("state/new", b"HACKED", retain=True)
    other.publish("state/new", b"HACKED", qos=1, retain=True)
    late = client(br, "late", username="other")
    assert late.subscribe([("state/#", 1)]) == [1]
    got = barrier(late)
    assert topics(got) == [("state/lamp", b"ON")] and got[0].retain


# --------------------------------------------------------------------------------------
# READ at delivery

def test_retained_filtered_by_read_on_subscribe(start_broker, tmp_path):
    """Retained messages are deliveries too: a subscriber to r/# with read on r/public/#
    only gets the retained r/public and r/public/a, not r/private or r/private/x."""
    br = acl_broker(start_broker, tmp_path, ["user admin", "topic readwrite r/#",
                                             "user guest", "topic read r/public/#"])
    admin = client(br, "admin", username="admin")
    for t in ("r/public", "r/public/a", "r/private", "r/private/x"):
        admin.publish(t, t.encode(), qos=1, retain=True)
    guest = client(br, "guest", username="guest")
    assert guest.subscribe([("r/#", 1)]) == [1]
    got = barrier(guest)
    assert sorted(topics(got)) == [("r/public", b"r/public"), ("r/public/a", b"r/public/a")]
    assert all(m.retain for m in got)
    # A '#' subscription (granted: it overlaps r/public/#) sees the same.
    guest2 = client(br, "guest2", username="guest")
    assert guest2.subscribe([("#", 0)]) == [0]
    assert sorted(topics(barrier(guest2))) == sorted(topics(got))
    # And admin sees all four.
    a2 = client(br, "admin2", username="admin")
    a2.subscribe([("r/#", 0)])
    assert len(barrier(a2)) == 4


def test_hash_subscriber_gets_only_what_it_may_read(start_broker, tmp_path):
    """A '#' subscriber receives exactly the live messages it may read: a/... and its own
    feed, not b/... nor another user's feed; the publisher may write everything."""
    br = acl_broker(start_broker, tmp_path, ["pattern readwrite %u/feeds/#",
                                             "user pub", "topic write #",
                                             "user watcher", "topic read a/#"])
    w = client(br, "w", username="watcher")
    assert w.subscribe([("#", 2)]) == [2]
    pub = client(br, "p", username="pub")
    for t in ("a/1", "b/1", "watcher/feeds/x", "alice/feeds/x", "a/2/deep", "a"):
        pub.publish(t, t.encode(), qos=1)
    assert topics(barrier(w)) == [("a/1", b"a/1"), ("watcher/feeds/x", b"watcher/feeds/x"),
                                  ("a/2/deep", b"a/2/deep"), ("a", b"a")]


def test_anonymous_section_at_top(start_broker, tmp_path):
    """topic lines before the first `user` line form the anonymous section: they apply to
    clients without a user name only; a named user has its own section instead (and a user
    name without a section gets nothing from it)."""
    br = acl_broker(start_broker, tmp_path, [
        "# anonymous clients: public only",
        "topic read public/#",
        "topic write public/in",
        "",
        "user alice",
        "topic readwrite alice/#",
        "topic read public/#"])
    anon = client(br, "anon")
    assert anon.subscribe([("public/#", 0), ("alice/#", 0)]) == [0, 0x80]
    alice = client(br, "alice", username="alice")
    assert alice.subscribe([("alice/#", 0), ("public/#", 0)]) == [0, 0]
    stranger = client(br, "stranger", username="stranger")
    assert stranger.subscribe([("public/#", 0), ("alice/#", 0)]) == [0x80, 0x80]
    mark = br.mark()
    anon.publish("public/in", b"from-anon", qos=1)
    anon.publish("public/other", b"no", qos=1)  # anon may not write it
    alice.publish("public/other", b"no", qos=1)  # alice neither (read only)
    stranger.publish("public/in", b"no", qos=1)  # the anonymous section is not stranger's
    alice.publish("alice/x", b"hers", qos=1)
    br.wait_log(r"client anon: PUBLISH to public/other denied", since=mark)
    br.wait_log(r"client alice: PUBLISH to public/other denied", since=mark)
    br.wait_log(r"client stranger: PUBLISH to public/in denied", since=mark)
    assert topics(barrier(anon)) == [("public/in", b"from-anon")]
    assert topics(barrier(alice)) == [("public/in", b"from-anon"), ("alice/x", b"hers")]


def test_client_id_patterns(start_broker, tmp_path):
    """`pattern readwrite devices/%c/#` and `pattern read status/dev_%c`: each client id
    reaches its own subtree only, %c also inside a level; a client id with '+' is refused
    every pattern (it could widen one)."""
    br = acl_broker(start_broker, tmp_path, ["pattern readwrite devices/%c/#",
                                             "pattern read status/dev_%c",
                                             "user ops", "topic readwrite #"])
    d1 = client(br, "dev1")
    d2 = client(br, "dev2")
    assert d1.subscribe([("devices/dev1/#", 1), ("devices/dev2/#", 1), ("status/dev_dev1", 0),
                         ("status/dev_dev2", 0)]) == [1, 0x80, 0, 0x80]
    assert d2.subscribe([("devices/dev2/#", 1)]) == [1]
    ops = client(br, "ops-console", username="ops")
    mark = br.mark()
    d1.publish("devices/dev2/cmd", b"from-dev1", qos=1)
    br.wait_log(r"client dev1: PUBLISH to devices/dev2/cmd denied", since=mark)
    d1.publish("devices/dev1/temp", b"20", qos=1)
    ops.publish("devices/dev2/cmd", b"reboot", qos=1)
    ops.publish("status/dev_dev1", b"online", qos=1)
    assert topics(barrier(d2)) == [("devices/dev2/cmd", b"reboot")]
    assert topics(barrier(d1)) == [("devices/dev1/temp", b"20"), ("status/dev_dev1", b"online")]
    # A client id that would turn devices/%c/# into devices/+/# gets nothing.
    wild = client(br, "+")
    assert wild.subscribe([("devices/+/#", 0), ("devices/dev1/temp", 0)]) == [0x80, 0x80]


def test_dangerous_user_name_refused_by_patterns(start_broker, tmp_path):
    """A user named '+' must not turn `%u/feeds/#` into `+/feeds/#` (everyone's feeds): it
    gets SUBACK 0x80 and its publishes are denied (Mosquitto's "dangerous username")."""
    br = acl_broker(start_broker, tmp_path, ["pattern readwrite %u/feeds/#"],
                    extra=["accept_any_password true"])
    victim = client(br, "victim", username="alice")
    victim.subscribe("alice/feeds/#")
    evil = client(br, "evil", username="+")
    assert evil.subscribe([("alice/feeds/lights", 0), ("+/feeds/#", 0)]) == [0x80, 0x80]
    evil.publish("alice/feeds/lights", b"pwned", qos=1)
    victim.publish("alice/feeds/lights", b"mine", qos=1)
    assert topics(barrier(victim)) == [("alice/feeds/lights", b"mine")]


def test_sys_topics_not_readable_through_hash_entries(start_broker, tmp_path):
    """`topic read #` does not give $SYS access (only an entry starting with $SYS does):
    a $SYS/# subscription is refused for the first user and granted to the second, which
    then receives the broker's $SYS messages."""
    br = acl_broker(start_broker, tmp_path, ["user a", "topic read #",
                                             "user mon", "topic read $SYS/#"],
                    extra=["sys_interval 1"])
    a = client(br, "a", username="a")
    assert a.subscribe([("$SYS/#", 0)]) == [0x80]
    mon = client(br, "mon", username="mon")
    assert mon.subscribe([("$SYS/broker/uptime", 0)]) == [0]
    m = mon.recv_publish(timeout=h.scaled(5))
    assert m.topic == "$SYS/broker/uptime"


# --------------------------------------------------------------------------------------
# the will

def test_will_to_unwritable_topic_not_published(start_broker, tmp_path):
    """A client whose will topic it may not write connects fine, but when it vanishes the
    will is not published (a watcher that may read the topic gets nothing) and the log
    says so; a will to a writable topic is published."""
    br = acl_broker(start_broker, tmp_path, ["user dev", "topic write dev/#",
                                             "user watch", "topic read #"])
    watch = client(br, "watch", username="watch")
    watch.subscribe([("#", 1)])
    bad = client(br, "dev-bad", username="dev", will=("alarm/all", b"fake alarm", 1, False))
    bad.close()
    br.wait_log(r"notice: client dev-bad: will on alarm/all not published: acl_file denies "
                r"write$")
    good = client(br, "dev-good", username="dev", will=("dev/status", b"offline", 1, True))
    good.close()
    m = watch.recv_publish()
    assert (m.topic, m.payload) == ("dev/status", b"offline")
    assert barrier(watch) == []


def test_will_checked_when_published_not_at_connect(start_broker, tmp_path):
    """The will is checked as a WRITE when it would be published: a will allowed at CONNECT
    is not published after a reload removed the client's write access."""
    acl = ["user dev", "topic write dev/#", "user watch", "topic read #"]
    br = acl_broker(start_broker, tmp_path, acl)
    watch = client(br, "watch", username="watch")
    watch.subscribe([("#", 1)])
    dev = client(br, "dev", username="dev", will=("dev/status", b"offline", 1, False))
    reload_ok(br, ["user dev", "topic write dev/other", "user watch", "topic read #"])
    dev.close()
    br.wait_log(r"client dev: will on dev/status not published: acl_file denies write$")
    assert barrier(watch) == []


# --------------------------------------------------------------------------------------
# SIGHUP and bad files

def test_reload_changes_rules_for_connected_clients(start_broker, tmp_path):
    """SIGHUP with a changed acl_file: the connected subscriber's existing subscription
    stops delivering once read is removed, and starts again when it is given back; the
    connected publisher's next PUBLISH is denied once write is removed. Nobody
    reconnects."""
    v1 = ["user pub", "topic write x/#", "user sub", "topic read x/#"]
    br = acl_broker(start_broker, tmp_path, v1)
    sub = client(br, "sub", username="sub")
    assert sub.subscribe([("x/#", 1)]) == [1]
    pub = client(br, "pub", username="pub")
    pub.publish("x/1", b"before", qos=1)
    assert topics(barrier(sub)) == [("x/1", b"before")]

    reload_ok(br, ["user pub", "topic write x/#", "user sub", "topic read y/#"])
    pub.publish("x/2", b"no-longer-readable", qos=1)
    assert barrier(sub) == []

    reload_ok(br, ["user pub", "topic write y/#", "user sub", "topic read x/#"])
    mark = br.mark()
    pub.publish("x/3", b"no-longer-writable", qos=1)
    br.wait_log(r"client pub: PUBLISH to x/3 denied by acl_file, dropped$", since=mark)
    assert barrier(sub) == []

    reload_ok(br, v1)
    pub.publish("x/4", b"again", qos=1)
    assert topics(barrier(sub)) == [("x/4", b"again")]


def test_reload_adds_acl_file_and_removes_it(start_broker, tmp_path):
    """Adding acl_file to a running broker's configuration applies to connected clients;
    removing it opens everything again."""
    acl = tmp_path / "acl"
    acl.write_text("user sub\ntopic read allowed/#\n")
    br = start_broker()
    sub = client(br, "sub", username="sub")
    sub.subscribe([("#", 1)])
    pub = client(br, "pub")
    pub.publish("other/1", b"open", qos=1)
    assert topics(barrier(sub)) == [("other/1", b"open")]
    with open(br.conf_path, "a") as f:
        f.write(f"acl_file {acl}\n")
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    br.wait_log(r"configuration reloaded", since=mark)
    pub.publish("other/2", b"closed", qos=1)  # anonymous pub may not write anything now
    assert barrier(sub) == []
    br.wait_log(r"client pub: PUBLISH to other/2 denied", since=mark)
    with open(br.conf_path) as f:
        lines = [ln for ln in f.read().splitlines() if not ln.startswith("acl_file")]
    with open(br.conf_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    mark = br.mark()
    br.proc.send_signal(signal.SIGHUP)
    br.wait_log(r"configuration reloaded", since=mark)
    pub.publish("other/3", b"open-again", qos=1)
    assert topics(barrier(sub)) == [("other/3", b"open-again")]


def test_reload_bad_acl_keeps_old_rules(start_broker, tmp_path):
    """A reload whose ACL file has an error: every error is logged as file:line: message,
    the reload is refused and the old rules stay in force for connected and new clients;
    fixing the file and reloading again applies the new rules."""
    v1 = ["user pub", "topic write x/#", "user sub", "topic read x/#"]
    br = acl_broker(start_broker, tmp_path, v1)
    sub = client(br, "sub", username="sub")
    sub.subscribe([("#", 1)])
    pub = client(br, "pub", username="pub")
    mark = reload(br, ["user pub", "topic write x/#", "topic frobnicate y/#", "user sub",
                       "topic read y/#", "pattern read a/#/b"])
    p = re.escape(str(br.acl_path))
    br.wait_log(rf'error: {p}:3: invalid access "frobnicate" \(expected read, write, readwrite '
                r"or deny\)$", since=mark)
    br.wait_log(rf'error: {p}:6: invalid topic filter "a/#/b": ', since=mark)
    br.wait_log(r"error: reload: the running configuration stays in force \(the password "
                r"file, ACL and log settings included\)$", since=mark)
    br.assert_no_log(r"configuration reloaded", since=mark)
    pub.publish("x/1", b"old-rules", qos=1)
    pub.publish("y/1", b"new-rules", qos=1)
    assert topics(barrier(sub)) == [("x/1", b"old-rules")]
    newcomer = client(br, "sub2", username="sub")
    assert newcomer.subscribe([("x/#", 0), ("y/#", 0)]) == [0, 0x80]

    reload_ok(br, ["user pub", "topic write y/#", "user sub", "topic read y/#"])
    pub.publish("y/2", b"fixed", qos=1)
    assert topics(barrier(sub)) == [("y/2", b"fixed")]


def test_reload_missing_acl_file_keeps_old_rules(start_broker, tmp_path):
    """The ACL file vanishes before SIGHUP: refused with the path and the OS error; the old
    rules stay (it does not fall open)."""
    br = acl_broker(start_broker, tmp_path, ["user sub", "topic read x/#"])
    sub = client(br, "sub", username="sub")
    br.acl_path.unlink()
    mark = reload(br)
    br.wait_log(rf"error: {re.escape(str(br.acl_path))}: cannot open ACL file: No such file or "
                r"directory$", since=mark)
    br.wait_log(r"error: reload: the running configuration stays in force", since=mark)
    assert sub.subscribe([("x/#", 0), ("z/#", 0)]) == [0, 0x80]


@pytest.mark.parametrize("content, line, message", [
    ("topic read ok/#\nuser\n", 2, r"user line has no user name"),
    ("# c\n\nTopic read x\n", 3, r'unknown keyword "Topic" \(expected user, topic, pattern or '
                                 r"a # comment\)"),
    ("user a\ntopic some filter\n", 2, r'invalid access "some" \(expected read, write, '
                                       r"readwrite or deny\)"),
    ("pattern\n", 1, r"pattern line has no topic filter"),
    ("topic read x/#/y\n", 1, r'invalid topic filter "x/#/y": '),
])
def test_startup_bad_acl_exits_1_with_file_line(tmp_path, content, line, message):
    """Start-up with an invalid ACL file: exit status 1, the error as file:line: message,
    and the broker never listens."""
    acl = tmp_path / "acl"
    acl.write_text(content)
    rc, err = run_broker_to_exit(tmp_path, ["listener 0 127.0.0.1", "allow_anonymous true",
                                            f"acl_file {acl}"])
    assert rc == 1, f"exit status {rc}: {err}"
    assert re.search(rf"error: {re.escape(str(acl))}:{line}: {message}", err), err
    assert "start-up failed: a password or ACL file could not be loaded" in err, err
    assert "listening on" not in err, err


def test_startup_missing_acl_file_exits_1(tmp_path):
    acl = tmp_path / "missing-acl"
    rc, err = run_broker_to_exit(tmp_path, ["listener 0 127.0.0.1", "allow_anonymous true",
                                            f"acl_file {acl}"])
    assert rc == 1, err
    assert re.search(rf"error: {re.escape(str(acl))}: cannot open ACL file: No such file or "
                     r"directory", err), err
    assert "listening on" not in err, err


def test_empty_acl_file_refuses_everything(start_broker, tmp_path):
    """An empty acl_file grants nothing: subscriptions get 0x80, publishes are acknowledged
    and dropped."""
    br = acl_broker(start_broker, tmp_path, ["# nothing granted"])
    c = client(br, "c", username="anyone")
    assert c.subscribe([("#", 0), ("a", 1)]) == [0x80, 0x80]
    c.send(publish_pkt("a", b"x", qos=2, pid=5))
    c.expect_bytes(pubrec_pkt(5))
    c.send(pubrel_pkt(5))
    c.expect_bytes(pubcomp_pkt(5))
    br.wait_log(r"client c: PUBLISH to a denied by acl_file, dropped$")


# --------------------------------------------------------------------------------------
# persistent sessions: messages held for an offline client are deliveries too

def test_resumed_session_queued_messages_checked_for_new_user(start_broker, tmp_path):
    """A persistent session resumed under another user name (same client id, clean
    session 0) must not hand over the messages queued for the previous user: delivering
    them is a READ by the new user, and Mosquitto 2.0 drops such queued and in-flight
    messages on CONNECT (handle_connect.c connection_check_acl). The same user resuming
    gets them (control)."""
    br = acl_broker(start_broker, tmp_path, ["user alice", "topic readwrite alice/#",
                                             "user bob", "topic readwrite bob/#",
                                             "user admin", "topic readwrite #"])
    alice = client(br, "gw-01", clean=False, username="alice")
    assert alice.subscribe([("alice/#", 1)]) == [1]
    alice.disconnect()
    br.wait_log(r"client gw-01 disconnected: DISCONNECT received$")
    admin = client(br, "admin", username="admin")
    admin.publish("alice/secret", b"alice's data", qos=1)
    admin.publish("alice/secret2", b"more of alice's data", qos=0)  # dropped offline (QoS 0)

    bob = MqttConn(br.port)
    mark = br.mark()
    assert bob.connect("gw-01", clean=False, username="bob") is True  # session present
    got = barrier(bob)
    assert topics(got) == [], f"bob received alice's queued messages: {topics(got)}"
    bob.disconnect()
    br.wait_log(r"client gw-01 disconnected: DISCONNECT received$", since=mark)

    # Control: alice's own resumption gets what is queued for her meanwhile.
    alice = MqttConn(br.port)
    alice.connect("gw-01", clean=False, username="alice")
    admin.publish("alice/later", b"for alice", qos=1)
    assert topics(barrier(alice)) == [("alice/later", b"for alice")]


def test_resumed_session_inflight_message_checked_for_new_user(start_broker, tmp_path):
    """A QoS 1 message sent to alice but not acknowledged when she vanished is resent on
    resumption ([MQTT-4.4.0-1]) - but not to bob resuming her client id."""
    br = acl_broker(start_broker, tmp_path, ["user alice", "topic readwrite alice/#",
                                             "user bob", "topic readwrite bob/#",
                                             "user admin", "topic readwrite #"])
    alice = client(br, "gw-02", clean=False, username="alice")
    alice.subscribe([("alice/#", 1)])
    admin = client(br, "admin", username="admin")
    admin.publish("alice/inflight", b"unacked", qos=1)
    m = alice.recv_publish(ack=False)
    assert m.topic == "alice/inflight"
    alice.close()  # no PUBACK
    br.wait_log(r"client gw-02 disconnected")
    bob = MqttConn(br.port)
    assert bob.connect("gw-02", clean=False, username="bob") is True
    got = barrier(bob)
    assert topics(got) == [], f"bob received alice's in-flight message: {topics(got)}"


def test_reload_revoking_read_applies_to_queued_messages(start_broker, tmp_path):
    """Messages queued for an offline persistent client are delivered only if the client may
    still read them when it comes back: a reload that removed its read access in between
    means they are not delivered ("every delivery" is a READ check)."""
    v1 = ["user pub", "topic write x/#", "user sub", "topic read x/#"]
    br = acl_broker(start_broker, tmp_path, v1)
    sub = client(br, "sub", clean=False, username="sub")
    assert sub.subscribe([("x/#", 1)]) == [1]
    sub.disconnect()
    br.wait_log(r"client sub disconnected: DISCONNECT received$")
    pub = client(br, "pub", username="pub")
    pub.publish("x/queued", b"while away", qos=1)
    reload_ok(br, ["user pub", "topic write x/#", "user sub", "topic read y/#"])
    sub = MqttConn(br.port)
    assert sub.connect("sub", clean=False, username="sub") is True
    got = barrier(sub)
    assert topics(got) == [], f"queued message delivered after read was revoked: {topics(got)}"


def test_per_listener_acl_files(start_broker, tmp_path):
    """per_listener_settings true: the acl_file of the first listener binds only clients
    that came in through it; the second listener has none (everything allowed there). A
    message crossing from the open listener to a restricted subscriber is checked with the
    subscriber's rules."""
    acl = tmp_path / "acl"
    acl.write_text("user kiosk\ntopic read lobby/#\n")
    br = start_broker(anonymous=False, listener=False, conf=[
        "per_listener_settings true",
        "listener 0 127.0.0.1", "allow_anonymous true", f"acl_file {acl}",
        "listener 0 127.0.0.1", "allow_anonymous true"])
    m = br.wait_log(r"serving 127\.0\.0\.1:(\d+), 127\.0\.0\.1:(\d+)")
    restricted, open_ = int(m.group(1)), int(m.group(2))
    kiosk = client(restricted, "kiosk", username="kiosk")
    assert kiosk.subscribe([("lobby/#", 0), ("office/#", 0), ("#", 0)]) == [0, 0x80, 0]
    staff = client(open_, "staff", username="kiosk")  # same name, other listener
    assert staff.subscribe([("office/#", 0)]) == [0]
    staff.publish("lobby/screen", b"welcome", qos=1)
    staff.publish("office/door", b"locked", qos=1)
    assert topics(barrier(kiosk)) == [("lobby/screen", b"welcome")]
    assert topics(barrier(staff)) == [("office/door", b"locked")]
    mark = br.mark()
    kiosk.publish("lobby/screen", b"graffiti", qos=1)
    br.wait_log(r"client kiosk: PUBLISH to lobby/screen denied by acl_file", since=mark)
    assert barrier(kiosk) == []
