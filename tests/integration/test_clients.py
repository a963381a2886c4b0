"""clients_*: real clients against the real binary - mosquitto_pub / mosquitto_sub, Python
paho-mqtt, a umqtt.simple-style raw client - and the course scenarios (LED feed,
retained state, ThingSpeak-style channel publish)."""
import subprocess

import pytest

from midge_harness import (MOSQUITTO_PUB, MqttConn, PahoClient, SubProc, client,
                           connect_pkt, publish_pkt, run_pub, scaled, subscribe_pkt)

LED_TOPIC = "hueyanchen2014/feeds/lights"


def test_clients_quickstart_sensors(broker):
    """[MQTT-3.3.2-3] README quick start: mosquitto_sub -t 'sensors/#' -v prints
    "sensors/livingroom/temp 21" after mosquitto_pub -t sensors/livingroom/temp -m 21."""
    sub = SubProc(broker.port, "-t", "sensors/#", "-v", "-C", "1")
    run_pub(broker.port, "-t", "sensors/livingroom/temp", "-m", "21")
    assert sub.finish() == 0
    assert sub.messages == ["sensors/livingroom/temp 21"]


def test_clients_led_on_off_paho(broker):
    """[MQTT-4.6.0-6] LED scenario: a paho subscriber on the feed gets "ON" then "OFF"
    published by another client, in that order."""
    led = PahoClient(broker.port, "esp32-led")
    assert led.subscribe(LED_TOPIC, 1) == (1,)
    phone = PahoClient(broker.port, "phone")
    phone.publish(LED_TOPIC, "ON", qos=1)
    phone.publish(LED_TOPIC, "OFF", qos=1)
    got = [led.get(), led.get()]
    assert [(m.topic, m.payload) for m in got] == [(LED_TOPIC, b"ON"), (LED_TOPIC, b"OFF")]
    led.expect_nothing()
    led.close()
    phone.close()


def test_clients_led_umqtt_style(broker):
    """[MQTT-3.1.4-4] [MQTT-3.8.4-1] umqtt.simple's conversation: CONNECT with keepalive 0,
    SUBSCRIBE QoS 0, then blocking reads - it must see exactly CONNACK, SUBACK, then one
    PUBLISH per message (no unrequested packets), even from mosquitto_pub."""
    c = MqttConn(broker.port)
    c.send(connect_pkt("esp32-ab12", keepalive=0, clean=True))
    c.expect_bytes(b"\x20\x02\x00\x00")
    c.send(subscribe_pkt(1, [(LED_TOPIC, 0)]))
    c.expect_bytes(b"\x90\x03\x00\x01\x00")
    c.expect_no_packet()
    run_pub(broker.port, "-t", LED_TOPIC, "-m", "ON")
    c.expect_bytes(publish_pkt(LED_TOPIC, b"ON"))
    run_pub(broker.port, "-t", LED_TOPIC, "-m", "OFF", "-q", "1")
    c.expect_bytes(publish_pkt(LED_TOPIC, b"OFF"))
    c.expect_no_packet()


def test_clients_late_subscriber_gets_retained_on(broker):
    """[MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] a late subscriber gets the retained
    "ON" (mosquitto_sub, and paho sees the retain flag)."""
    run_pub(broker.port, "-t", LED_TOPIC, "-m", "ON", "-r", "-q", "1")
    sub = SubProc(broker.port, "-t", LED_TOPIC, "-C", "1")
    assert sub.finish() == 0
    assert sub.messages == ["ON"]
    p = PahoClient(broker.port, "late-led")
    p.subscribe(LED_TOPIC, 0)
    m = p.get()
    assert (m.payload, m.retain) == (b"ON", 1)
    p.close()


def test_clients_thingspeak_channel(broker):
    """[MQTT-3.3.2-3] "field1=23.5&field2=60" published to channels/12345/publish/ABCDEF is
    received by a channels/+/publish/# subscriber."""
    sub = SubProc(broker.port, "-t", "channels/+/publish/#", "-v", "-C", "1")
    run_pub(broker.port, "-t", "channels/12345/publish/ABCDEF", "-m", "field1=23.5&field2=60")
    assert sub.finish() == 0
    assert sub.messages == ["channels/12345/publish/ABCDEF field1=23.5&field2=60"]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_clients_paho_roundtrip(broker, qos):
    """[MQTT-3.3.4-1] [MQTT-4.3.1-1] [MQTT-4.3.2-1] [MQTT-4.3.3-1] paho publishes and
    receives at QoS 0, 1 and 2."""
    sub = PahoClient(broker.port, f"psub{qos}")
    assert sub.subscribe("paho/t", qos) == (qos,)
    pub = PahoClient(broker.port, f"ppub{qos}")
    pub.publish("paho/t", b"payload-%d" % qos, qos=qos)
    m = sub.get()
    assert (m.topic, m.payload, m.qos, m.retain) == ("paho/t", b"payload-%d" % qos, qos, 0)
    sub.expect_nothing()
    sub.close()
    pub.close()


def test_clients_paho_mqtt31(broker):
    """[MQTT-3.1.4-4] paho speaking MQTT 3.1 (MQIsdp, level 3) connects and round-trips."""
    import paho.mqtt.client as mqtt
    c = PahoClient(broker.port, "old-paho", protocol=mqtt.MQTTv31)
    c.subscribe("v31/#", 2)
    c.publish("v31/x", b"hi", qos=2)
    m = c.get()
    assert (m.topic, m.payload, m.qos) == ("v31/x", b"hi", 2)
    c.close()


def test_clients_mosquitto_v31(broker):
    """[MQTT-3.1.4-4] mosquitto_sub / mosquitto_pub with -V mqttv31."""
    sub = SubProc(broker.port, "-V", "mqttv31", "-t", "m31/t", "-C", "1", "-q", "1")
    run_pub(broker.port, "-V", "mqttv31", "-t", "m31/t", "-m", "old", "-q", "1")
    assert sub.finish() == 0
    assert sub.messages == ["old"]


def test_clients_mosquitto_qos2_lines_in_order(broker):
    """[MQTT-4.6.0-6] [MQTT-4.3.3-1] mosquitto_pub -l -q 2 sends each stdin line as a QoS 2
    message; mosquitto_sub -q 2 prints them in order."""
    lines = [f"line {i}" for i in range(20)]
    sub = SubProc(broker.port, "-t", "lines/t", "-q", "2", "-C", str(len(lines)))
    cmd = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(broker.port), "-t", "lines/t",
           "-q", "2", "-l"]
    r = subprocess.run(cmd, input="\n".join(lines).encode() + b"\n", capture_output=True,
                       timeout=scaled(10))
    assert r.returncode == 0, r.stderr
    assert sub.finish() == 0
    assert sub.messages == lines


def test_clients_mosquitto_sub_offline_queue(broker):
    """[MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-4.6.0-6] a persistent mosquitto_sub (-c -i lamp
    -q 1) that is offline gets the QoS 1 messages published meanwhile when it returns."""
    first = SubProc(broker.port, "-c", "-i", "lamp", "-q", "1", "-t", "lamp/cmd", "-E")
    assert first.finish() == 0
    broker.wait_log(r"client lamp disconnected")
    for word in ("ON", "OFF", "ON"):
        run_pub(broker.port, "-t", "lamp/cmd", "-m", word, "-q", "1")
    again = subprocess.run(["/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
                            "-c", "-i", "lamp", "-q", "1", "-t", "lamp/cmd", "-C", "3",
                            "-W", str(int(scaled(10)))],
                           capture_output=True, timeout=scaled(15))
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode().splitlines() == ["ON", "OFF", "ON"]


def test_clients_many_paho_publishers(broker):
    """[MQTT-4.5.0-1] 20 paho clients each publish once; one mosquitto_sub gets all 20."""
    sub = SubProc(broker.port, "-t", "many/+", "-v", "-q", "1", "-C", "20")
    pubs = [PahoClient(broker.port, f"many{i}") for i in range(20)]
    for i, p in enumerate(pubs):
        p.publish(f"many/{i}", f"v{i}", qos=1)
    assert sub.finish(timeout=scaled(15)) == 0
    assert sorted(sub.messages) == sorted(f"many/{i} v{i}" for i in range(20))
    for p in pubs:
        p.close()


def test_clients_paho_empty_client_id(broker):
    """[MQTT-3.1.3-6] paho with an empty client id and clean session gets an assigned id
    and works."""
    c = PahoClient(broker.port, "", clean_session=True)
    c.subscribe("anon/+", 1)
    c.publish("anon/x", b"1", qos=1)
    assert c.get().payload == b"1"
    c.close()


def test_clients_username_empty_password_mosquitto_pub(broker):
    """[MQTT-3.1.2-19] [MQTT-3.1.2-21] mosquitto_pub with a user name and empty password is
    accepted when anonymous access is on."""
    sub = client(broker, "w")
    sub.subscribe([("auth/t", 0)])
    run_pub(broker.port, "-u", "student", "-P", "", "-t", "auth/t", "-m", "ok")
    assert sub.recv_publish().payload == b"ok"
