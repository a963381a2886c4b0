"""test_tls_records.py - MQTT over TLS packets packed into the broker's TLS records
(src/net/tls_rec.c tls_rec_writev, transport_tls.c outputv): the packets a subscriber gets
in one loop turn share records of at most 16,384 bytes of plaintext; a packet that does
not fit in what is left of a partly filled record continues in the next one; a packet
that fills a record to exactly 16,384 bytes (into an empty one, or after others) seals
it; a payload over 16 KiB spans records. Each message is checked byte for byte and in
order, and the records themselves are read off the wire: the subscriber is Python's ssl
on memory BIOs, so the test sees every record header the broker sent and the plaintext
each carried (the record's length less the AEAD overhead).

Which turn a packet reaches the broker in is fixed where the layout is asserted: the
broker opens a client's TLS record whole and hands its plaintext to proto in one call,
so packets in one client record are handled in one turn; and one SUBSCRIBE brings its
SUBACK and the retained messages of its filters (in filter order) in one turn.

Clients: TLS 1.3 (midge's record layer after the hand-over), TLS 1.2 AES-GCM (the same,
TLS 1.2 records) and TLS 1.2 AES-CBC (OpenSSL keeps the record layer: outputv's path
without tls_rec; the payloads are checked, the record sizes are OpenSSL's and are not).
"""
import os
import ssl
import struct
import time

import pytest

from midge_harness import (PUBACK, SUBACK, TIMEOUT, Closed, MqttConn, midge_only, packet,
                           publish_pkt, puback_pkt, scaled)
from test_tls import certs, client_ctx, tls_client, tls_conf  # noqa: F401 (certs: a fixture)

pytestmark = midge_only

REC_MAX_PLAIN = 16384

# (TLS 1.2 cipher for set_ciphers, or None for TLS 1.3; plaintext overhead of a record
# the broker seals: TLS 1.3 inner content type + tag, TLS 1.2 GCM explicit nonce + tag;
# None: OpenSSL's CBC records, whose sizes are not checked)
VARIANTS = {
    "tls13": (None, 1 + 16),
    "tls12_gcm": ("ECDHE-ECDSA-AES128-GCM-SHA256", 8 + 16),
    "tls12_cbc": ("ECDHE-ECDSA-AES128-SHA256", None),
}


@pytest.fixture(params=sorted(VARIANTS))
def variant(request):
    return request.param


def variant_ctx(c, variant):
    cipher, _ = VARIANTS[variant]
    if cipher is None:
        ctx = client_ctx(c)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx
    ctx = client_ctx(c, max_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers(cipher)
    return ctx


class RecordConn(MqttConn):
    """The harness's raw MQTT client over TLS on memory BIOs: every record the broker sends
    is noted (content type, length) as its bytes come off the socket."""

    def __init__(self, port, c, variant):
        super().__init__(port)
        self.inc, self.outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = variant_ctx(c, variant).wrap_bio(self.inc, self.outg,
                                                     server_hostname="localhost")
        self.overhead = VARIANTS[variant][1]
        self.raw = b""  # the start of a record not complete yet
        self.records = []  # (content type, length) of each complete record received
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._push()
                assert self._pull(deadline), "TLS handshake timed out"
        self._push()
        cipher = VARIANTS[variant][0]
        if cipher is None:
            assert self.tls.version() == "TLSv1.3"
        else:
            assert (self.tls.version(), self.tls.cipher()[0]) == ("TLSv1.2", cipher)

    def _push(self):
        out = self.outg.read()
        if out:
            self.sock.sendall(out)

    def _pull(self, deadline):
        data = self._recv_socket(deadline)  # the encrypted bytes, as they came
        if data is None:
            return False
        self.inc.write(data)
        self.raw += data
        while len(self.raw) >= 5:
            n = struct.unpack("!H", self.raw[3:5])[0]
            if len(self.raw) < 5 + n:
                break
            self.records.append((self.raw[0], n))
            self.raw = self.raw[5 + n:]
        return True

    def send(self, data):
        view = memoryview(data)
        while view:
            view = view[self.tls.write(view):]
        self._push()

    def _fill(self, deadline):
        while True:
            try:
                data = self.tls.read(1 << 20)
            except ssl.SSLWantReadError:
                self._push()
                if not self._pull(deadline):
                    return False
                continue
            except ssl.SSLError:
                data = b""
            if not data:
                self.closed = True
                raise Closed()
            self._push()
            self.buf += data
            return True

    def mark(self):
        """Where the next output starts: everything sent so far has been read."""
        assert not self.raw and not self.buf and not self.pending, "output still arriving"
        return len(self.records)

    def plain_since(self, mark):
        """The plaintext size of each record received since mark (None: not checked)."""
        recs = self.records[mark:]
        assert all(t == 23 for t, _ in recs), f"not application data: {recs!r}"
        if self.overhead is None:
            return None
        return [n - self.overhead for _, n in recs]


def full_records(total):
    """The records total bytes of one turn's output fill: full ones, then the rest."""
    return [REC_MAX_PLAIN] * (total // REC_MAX_PLAIN) + ([total % REC_MAX_PLAIN]
                                                         if total % REC_MAX_PLAIN else [])


def pub_len(topic, n, qos):
    return len(publish_pkt(topic, bytes(n), qos, pid=1 if qos else None))


def payload_len_for(topic, size, qos):
    """The payload length that makes a PUBLISH to topic at qos exactly size bytes."""
    n = size - pub_len(topic, 0, qos)
    while n > 0 and pub_len(topic, n, qos) > size:
        n -= 1
    assert pub_len(topic, n, qos) == size, f"no PUBLISH of exactly {size} bytes on {topic}"
    return n


def suback_len(k):
    return len(packet(SUBACK, 0, b"\x00\x01" + bytes(k)))


def broker(start_broker, c):
    # No inflight window: a turn's QoS 1 deliveries all go out at once.
    return start_broker(conf=tls_conf(c, "max_inflight_messages 0"))


def subscriber(br, c, variant, client_id, filters=(), qos=0):
    sub = RecordConn(br.port, c, variant)
    sub.connect(client_id)
    if filters:
        assert sub.subscribe([(f, qos) for f in filters]) == [qos] * len(filters)
    return sub


def retain(br, c, msgs):
    """Store retained messages [(topic, payload)] (QoS 1, each acknowledged)."""
    p = tls_client(br.port, client_ctx(c), "retainer")
    for topic, payload in msgs:
        p.publish(topic, payload, qos=1, retain=True)
    p.disconnect()


def check_msgs(got, want, qos, retained=False):
    """got (harness Publishes) are want [(topic, payload)], in order, byte for byte."""
    assert len(got) == len(want)
    for i, (m, (topic, payload)) in enumerate(zip(got, want)):
        assert m.topic == topic, f"message {i}: topic {m.topic!r}, expected {topic!r}"
        assert len(m.payload) == len(payload), \
            f"message {i} ({topic}): {len(m.payload)} bytes, expected {len(payload)}"
        if m.payload != payload:
            at = next(k for k in range(len(payload)) if m.payload[k] != payload[k])
            raise AssertionError(f"message {i} ({topic}): payload differs from byte {at}")
        assert (m.qos, m.retain) == (qos, retained), f"message {i}: {m!r}"
    if qos:
        pids = [m.pid for m in got]
        assert len(set(pids)) == len(pids), f"packet ids reused: {pids}"


def read_pubacks(conn, pids):
    for pid in pids:
        p = conn.expect(PUBACK)
        assert p.raw() == puback_pkt(pid)


@pytest.mark.parametrize("qos", [0, 1])
def test_small_packets_of_one_turn_share_a_record(start_broker, certs, variant, qos):
    """60 small PUBLISHes in one record of the publisher (so one turn of the broker) reach
    the subscriber in order, all in one record."""
    br = broker(start_broker, certs)
    sub = subscriber(br, certs, variant, "small-sub", ["small/#"], qos)
    pub = tls_client(br.port, client_ctx(certs), "small-pub")
    want = [(f"small/{i}", b"m%03d-" % i + bytes([i]) * (i % 7)) for i in range(60)]
    pkts = [publish_pkt(t, p, qos, pid=i + 1 if qos else None) for i, (t, p) in enumerate(want)]
    data = b"".join(pkts)
    assert len(data) < REC_MAX_PLAIN  # one record of the publisher
    mark = sub.mark()
    pub.send(data)
    check_msgs(sub.collect(len(want)), want, qos)
    if qos:
        read_pubacks(pub, range(1, len(want) + 1))
    plain = sub.plain_since(mark)
    if plain is not None:
        assert plain == [len(data)], f"records {plain}, expected one of {len(data)} bytes"
    sub.ping()
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("qos", [0, 1])
def test_mid_size_packets_cross_partly_filled_records(start_broker, certs, variant, qos):
    """Ten 5,000-byte messages in one turn (one SUBSCRIBE's retained messages, after its
    SUBACK): the fourth does not fit in what the first three left of the record and
    continues in the next, and so on; every record but the last is full. Then ten
    5,000-byte messages published back to back (as many turns as the broker makes of
    them): byte for byte, in order, in records of at most 16,384 bytes."""
    br = broker(start_broker, certs)
    want = [(f"mid/{i}", os.urandom(5000)) for i in range(10)]
    retain(br, certs, want)
    sub = subscriber(br, certs, variant, "mid-sub")
    mark = sub.mark()
    assert sub.subscribe([(t, qos) for t, _ in want]) == [qos] * len(want)
    check_msgs(sub.collect(len(want)), want, qos, retained=True)
    total = suback_len(len(want)) + sum(pub_len(t, len(p), qos) for t, p in want)
    plain = sub.plain_since(mark)
    if plain is not None:
        assert plain == full_records(total), f"records {plain} for {total} bytes"

    assert sub.subscribe([("live/#", qos)]) == [qos]
    pub = tls_client(br.port, client_ctx(certs), "mid-pub")
    live = [(f"live/{i}", os.urandom(5000)) for i in range(10)]
    mark = sub.mark()
    pub.send(b"".join(publish_pkt(t, p, qos, pid=i + 1 if qos else None)
                      for i, (t, p) in enumerate(live)))
    check_msgs(sub.collect(len(live), timeout=scaled(10)), live, qos)
    if qos:
        read_pubacks(pub, range(1, len(live) + 1))
    plain = sub.plain_since(mark)
    if plain is not None:
        total = sum(pub_len(t, len(p), qos) for t, p in live)
        assert sum(plain) == total and max(plain) <= REC_MAX_PLAIN, \
            f"records {plain} for {total} bytes"
    sub.ping()
    pub.disconnect()
    sub.disconnect()


def test_packet_filling_a_record_exactly(start_broker, certs, variant):
    """A PUBLISH of exactly 16,384 bytes into an empty record (QoS 0 and 1) is one full
    record. After a SUBACK and a first message, a message that brings the record to
    exactly 16,384 bytes seals it and the next starts a record of its own; one byte more
    and it continues in the next record."""
    br = broker(start_broker, certs)
    sub = subscriber(br, certs, variant, "exact-sub", ["exact/#"], 1)
    pub = tls_client(br.port, client_ctx(certs), "exact-pub")
    for qos in (0, 1):
        topic = f"exact/q{qos}"
        payload = os.urandom(payload_len_for(topic, REC_MAX_PLAIN, qos))
        mark = sub.mark()
        pub.publish(topic, payload, qos=qos)
        check_msgs([sub.recv_publish()], [(topic, payload)], qos)
        plain = sub.plain_since(mark)
        if plain is not None:
            assert plain == [REC_MAX_PLAIN], f"QoS {qos}: records {plain}"

    for extra in (0, 1):
        a, b, c = f"fill{extra}/a", f"fill{extra}/b", f"fill{extra}/c"
        first = os.urandom(3000)
        head = suback_len(3) + pub_len(a, len(first), 0)
        second = os.urandom(payload_len_for(b, REC_MAX_PLAIN - head + extra, 0))
        third = os.urandom(100)
        retain(br, certs, [(a, first), (b, second), (c, third)])
        mark = sub.mark()
        assert sub.subscribe([(a, 0), (b, 0), (c, 0)]) == [0, 0, 0]
        check_msgs(sub.collect(3), [(a, first), (b, second), (c, third)], 0, retained=True)
        plain = sub.plain_since(mark)
        if plain is not None:
            assert plain == [REC_MAX_PLAIN, extra + pub_len(c, len(third), 0)], \
                f"{'one byte over' if extra else 'exactly'} a record: records {plain}"
    sub.ping()
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("qos", [0, 1])
def test_payload_over_16k(start_broker, certs, variant, qos):
    """A 40,000-byte payload to an idle subscriber: two full records and the rest. Then in
    one turn a small message, a 40,000-byte one and a small one: every record full but
    the last, the messages intact and in order."""
    br = broker(start_broker, certs)
    sub = subscriber(br, certs, variant, "big-sub", ["big/#"], qos)
    pub = tls_client(br.port, client_ctx(certs), "big-pub")
    payload = os.urandom(40000)
    mark = sub.mark()
    pub.publish("big/one", payload, qos=qos)
    check_msgs([sub.recv_publish(scaled(10))], [("big/one", payload)], qos)
    plain = sub.plain_since(mark)
    if plain is not None:
        assert plain == full_records(pub_len("big/one", len(payload), qos)), f"records {plain}"

    want = [("mix/a", os.urandom(700)), ("mix/b", os.urandom(40000)), ("mix/c", os.urandom(9))]
    retain(br, certs, want)
    mark = sub.mark()
    assert sub.subscribe([(t, qos) for t, _ in want]) == [qos] * 3
    check_msgs(sub.collect(3, timeout=scaled(10)), want, qos, retained=True)
    total = suback_len(3) + sum(pub_len(t, len(p), qos) for t, p in want)
    plain = sub.plain_since(mark)
    if plain is not None:
        assert plain == full_records(total), f"records {plain} for {total} bytes"
    sub.ping()
    pub.disconnect()
    sub.disconnect()
