"""test_bridge_recipes.py - the bridge recipes of docs/bridge.md, each run against a local
stand-in with the remote's settings: Adafruit IO (TLS on 8883's role, a user name and an AIO
key, QoS at most 1, publishing only under USER/feeds/, no $SYS) and HiveMQ Cloud (TLS with SNI,
a user and password, MQTT 5, the CA found in a CA directory as in the system store). The
broker-cluster recipe is test_bridge_cluster.py.

The recipe lines are the documented ones; only the address and the CA location change.
"""
import os
import subprocess

from midge_harness import Mosquitto, PahoClient, midge_only, needs, scaled
from test_bridge import OPENSSL, drain, make_certs

pytestmark = [midge_only, needs(OPENSSL, reason="the tests make their certificates with openssl")]


def passwd(path, user, password):
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), user, password], check=True,
                   capture_output=True)
    os.chmod(path, 0o644)


def capath_of(d, ca):
    """A directory of CA certificates under their hash names, as /etc/ssl/certs is."""
    d.mkdir()
    h = subprocess.run([OPENSSL, "x509", "-hash", "-noout", "-in", ca], capture_output=True,
                       text=True, check=True).stdout.strip()
    os.symlink(ca, d / f"{h}.0")
    return str(d)


def test_adafruit_io_recipe(start_broker, tmp_path):
    """docs/bridge.md, Adafruit IO: the classroom's feeds go up, nothing else, QoS 1 at most;
    the remote refuses $SYS and any topic outside USER/feeds/ (its ACL), so the recipe keeps
    notifications local; restart_timeout keeps failed attempts far apart."""
    c = make_certs(tmp_path)
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    passwd(pw, "teacher", "aio_KEY123")
    acl.write_text("user teacher\ntopic readwrite teacher/feeds/#\ntopic readwrite "
                   "teacher/groups/#\n")
    os.chmod(acl, 0o644)
    aio = Mosquitto([f"cafile {c['ca']}", f"certfile {c['server'][0]}",
                     f"keyfile {c['server'][1]}", f"password_file {pw}", f"acl_file {acl}",
                     "max_qos 1"], anonymous=False)
    try:
        a = start_broker([
            "connection adafruit",
            f"address localhost:{aio.port}",           # io.adafruit.com:8883
            f"bridge_capath {capath_of(tmp_path / 'certs', c['ca'])}",  # /etc/ssl/certs
            "remote_username teacher",
            "remote_password aio_KEY123",
            "remote_clientid classroom-midge",
            "try_private false",
            "cleansession true",
            "local_cleansession false",
            "notifications_local_only true",
            "bridge_outgoing_retain false",
            "restart_timeout 60 600",
            "topic teacher/feeds/# out 1",
        ])
        a.wait_log(r"bridge adafruit: connected to localhost:\d+ \(MQTT 3\.1\.1, new session\)")
        a.wait_log(r"client local\.classroom-midge connected from bridge:adafruit \(MQTT 3\.1\.1 "
                   r"bridge, clean session 0")
        aio.wait_log(r"New client connected from 127\.0\.0\.1:\d+ as classroom-midge")
        # The dashboard's view: a subscriber on the remote with the key.
        sub = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", str(aio.port),
                                "--cafile", c["ca"], "-u", "teacher", "-P", "aio_KEY123",
                                "-t", "teacher/feeds/#", "-v", "-C", "2", "-W", "10"],
                               stdout=subprocess.PIPE, text=True)
        aio.wait_log(r"Sending SUBACK to auto-")
        p = PahoClient(a.port, "esp32")
        p.publish("teacher/feeds/temperature", b"21.5", qos=1)
        p.publish("teacher/feeds/humidity", b"40", qos=2)  # arrives at QoS 1
        p.publish("student/private", b"stays", qos=1)       # no topic line: stays local
        out, _ = sub.communicate(timeout=scaled(15))
        assert out.splitlines() == ["teacher/feeds/temperature 21.5",
                                    "teacher/feeds/humidity 40"], aio.log() + a.log()
        a.assert_no_log(r"bridge adafruit: .*dropped")
    finally:
        aio.stop()


def test_hivemq_cloud_recipe(start_broker, tmp_path):
    """docs/bridge.md, HiveMQ Cloud: TLS to a host name (sent as SNI, checked against the
    certificate), the CA from a directory like the system store, user and password, MQTT 5;
    sensor data up, commands down."""
    c = make_certs(tmp_path)
    pw = tmp_path / "passwd"
    passwd(pw, "home", "s3cret")
    hive = Mosquitto([f"cafile {c['ca']}", f"certfile {c['server'][0]}",
                      f"keyfile {c['server'][1]}", f"password_file {pw}"], anonymous=False)
    try:
        a = start_broker([
            "connection hivemq",
            f"address localhost:{hive.port}",       # xxxxxxxx.s1.eu.hivemq.cloud:8883
            f"bridge_capath {capath_of(tmp_path / 'certs', c['ca'])}",  # /etc/ssl/certs
            "bridge_protocol_version mqttv50",
            "remote_username home",
            "remote_password s3cret",
            "remote_clientid home-midge",
            "try_private false",
            "notification_topic home/bridge/state",
            "topic sensors/# out 1 \"\" home/",
            "topic commands/# in 1 \"\" home/",
        ])
        a.wait_log(r"bridge hivemq: connected to localhost:\d+ \(MQTT 5\.0, new session\)")
        hive.wait_log(r"as home-midge")
        sa = PahoClient(a.port, "sa")
        sa.subscribe("commands/#", 1)
        sub = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", str(hive.port),
                                "--cafile", c["ca"], "-u", "home", "-P", "s3cret", "-t",
                                "home/#", "-v", "-C", "2", "-W", "10"],
                               stdout=subprocess.PIPE, text=True)
        hive.wait_log(r"Sending SUBACK to auto-")
        PahoClient(a.port, "p").publish("sensors/kitchen", b"22", qos=1)
        subprocess.run(["mosquitto_pub", "-h", "localhost", "-p", str(hive.port), "--cafile",
                        c["ca"], "-u", "home", "-P", "s3cret", "-t", "home/commands/heat", "-m",
                        "on", "-q", "1"], check=True, timeout=scaled(10))
        out, _ = sub.communicate(timeout=scaled(15))
        lines = out.splitlines()
        assert "home/sensors/kitchen 22" in lines
        assert ("commands/heat", b"on") in drain(sa, 1.0)
    finally:
        hive.stop()
