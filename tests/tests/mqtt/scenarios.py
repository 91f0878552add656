"""MQTT scenarios run against the gateway (itself in front of mosquitto); one per argv[1].

Each exits non-zero with FAIL: ... on stderr when the gateway does not behave.
"""
import io
import queue
import socket
import struct
import sys
import threading
import time
import uuid

from common import (
    HOST, Client, fail, raw_connect, read_disconnect, read_packet, send_connect, string, varint, WAIT
)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def pubsub(port, version):
    root = unique("ps")
    subscriber = Client(port, unique("sub"), version)
    publisher = Client(port, unique("pub"), version)
    for qos in (0, 1, 2):
        codes = subscriber.subscribe("%s/q%d/+/x" % (root, qos), qos)
        if codes[0].value != qos:
            fail("granted %s for QoS %d" % (codes, qos))
        payload = ("qos %d v%d" % (qos, version)).encode()
        publisher.publish("%s/q%d/a/x" % (root, qos), payload, qos)
        message = subscriber.expect("%s/q%d/a/x" % (root, qos), payload)
        if message.qos != qos:
            fail("delivered at QoS %d, expected %d" % (message.qos, qos))
    subscriber.subscribe(root + "/multi/#", 1)
    publisher.publish(root + "/multi/a/b/c", b"deep", 1)
    subscriber.expect(root + "/multi/a/b/c", b"deep")
    # Unsubscribed filters deliver no more: the next message seen is on a filter still held.
    subscriber.client.unsubscribe(root + "/multi/#")
    kind, _, _ = subscriber.acks.get(timeout=WAIT)
    if kind != "unsub":
        fail("no UNSUBACK")
    publisher.publish(root + "/multi/a", b"gone", 1)
    publisher.publish(root + "/q1/b/x", b"still", 1)
    subscriber.expect(root + "/q1/b/x", b"still")
    subscriber.disconnect()
    publisher.disconnect()


def retained(port, version):
    topic = unique("ret") + "/state"
    publisher = Client(port, unique("pub"), version)
    publisher.publish(topic, b"on", 1, retain=True)
    first = Client(port, unique("late"), version)
    first.subscribe(topic, 1)
    message = first.expect(topic, b"on")
    if not message.retain:
        fail("replayed retained message without the retain flag")
    first.disconnect()
    # An empty retained message clears it: a new subscriber sees the next live message first.
    publisher.publish(topic, b"", 1, retain=True)
    second = Client(port, unique("later"), version)
    second.subscribe(topic, 1)
    publisher.publish(topic, b"live", 1)
    message = second.expect(topic)
    if message.payload != b"live" or message.retain:
        fail("cleared retained message was replayed: %r" % message.payload)
    second.disconnect()
    publisher.disconnect()


def will(port, version):
    topic = unique("will") + "/gone"
    watcher = Client(port, unique("watch"), version)
    watcher.subscribe(topic, 1)
    dying = Client(port, unique("dying"), version, will=(topic, b"bye", 1, False))
    # A normal DISCONNECT discards the will...
    leaving = Client(port, unique("leaving"), version, will=(topic, b"not sent", 1, False))
    leaving.disconnect()
    # ...an abnormal end publishes it.
    dying.drop()
    watcher.expect(topic, b"bye")
    watcher.disconnect()


def will_delay(port, version):
    """MQTT 5: a delayed will waits, and a reconnection within the delay cancels it."""
    topic = unique("delayed") + "/gone"
    watcher = Client(port, unique("watch"), 5)
    watcher.subscribe(topic, 1)
    client_id = unique("delayed")

    def connect_with_delayed_will(payload):
        return Client(port, client_id, 5, clean=False, expiry=60,
                      will=(topic, payload, 1, False), will_delay=2)

    first = connect_with_delayed_will(b"cancelled")
    first.drop()
    again = connect_with_delayed_will(b"published")
    # Past the first will's delay: it was cancelled by the reconnection.
    time.sleep(3)
    watcher.publish(topic, b"marker", 1)
    watcher.expect(topic, b"marker")
    again.drop()
    watcher.expect(topic, b"published")
    watcher.disconnect()


def resume(port, version):
    client_id = unique("durable")
    topic = unique("queue") + "/jobs"
    durable = Client(port, client_id, version, clean=False, expiry=300)
    durable.subscribe(topic, 1)
    durable.disconnect()
    publisher = Client(port, unique("pub"), version)
    for index in range(3):
        publisher.publish(topic, b"job %d" % index, 1)
    publisher.disconnect()
    back = Client(port, client_id, version, clean=False, expiry=300)
    if not back.session_present:
        fail("session not present on resume")
    for index in range(3):
        back.expect(topic, b"job %d" % index)
    back.disconnect()
    # A clean start discards it.
    fresh = Client(port, client_id, version, clean=True)
    if fresh.session_present:
        fail("session present after clean start")
    fresh.disconnect()


def takeover(port, version):
    client_id = unique("twin")
    first = Client(port, client_id, version)
    second = Client(port, client_id, version)
    code = first.disconnects.get(timeout=WAIT)
    if version == 5 and code.value != 0x8E:
        fail("first connection ended with %s, expected session taken over (0x8E)" % code)
    topic = unique("twin") + "/t"
    second.subscribe(topic, 1)
    second.publish(topic, b"alive", 1)
    second.expect(topic, b"alive")
    second.disconnect()


def takeover_after_reload(port, version, config, reloaded, new_port):
    """A client on one mqtt server, then a reload that rebuilds another server naming the same
    store: the rebuilt server's connection with the same client id takes the first over, as it
    did before the reload (the store is the running one, not a new empty one)."""
    new_port = int(new_port)
    client_id = unique("kept")
    first = Client(port, client_id, version)
    with open(reloaded) as source, open(config, "w") as target:
        target.write(source.read())
    # The new listener accepting means the reload is in place.
    deadline = time.time() + WAIT
    while True:
        try:
            socket.create_connection((HOST, new_port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                fail("the reloaded config's listener never opened")
            time.sleep(0.1)
    second = Client(new_port, client_id, version)
    try:
        code = first.disconnects.get(timeout=WAIT)
    except queue.Empty:
        fail("the first connection was not taken over across the reload")
    if code.value != 0x8E:
        fail("first connection ended with %s, expected session taken over (0x8E)" % code)
    second.disconnect()


def alias(port, version):
    topic = unique("alias") + "/long/topic/name"
    subscriber = Client(port, unique("sub"), 5)
    subscriber.subscribe(topic, 1)
    publisher = Client(port, unique("pub"), 5)
    maximum = publisher.connack_properties.TopicAliasMaximum
    if maximum < 1:
        fail("no topic alias maximum in CONNACK")
    properties = Properties(PacketTypes.PUBLISH)
    properties.TopicAlias = 1
    publisher.publish(topic, b"named", 1, properties=properties)
    publisher.publish("", b"aliased", 1, properties=properties)
    subscriber.expect(topic, b"named")
    subscriber.expect(topic, b"aliased")
    publisher.disconnect()
    subscriber.disconnect()


def properties(port, version):
    topic = unique("props") + "/req"
    subscriber = Client(port, unique("sub"), 5)
    options_id = Properties(PacketTypes.SUBSCRIBE)
    options_id.SubscriptionIdentifier = 42
    result, mid = subscriber.client.subscribe(topic, qos=1, properties=options_id)
    subscriber.acks.get(timeout=WAIT)
    publisher = Client(port, unique("pub"), 5)
    # No-local: the publisher's own subscription does not see its publications.
    publisher.subscribe(topic, 1, noLocal=True)
    sent = Properties(PacketTypes.PUBLISH)
    sent.UserProperty = [("k", "v"), ("k", "w")]
    sent.ResponseTopic = topic + "/reply"
    sent.CorrelationData = b"\x01\x02"
    sent.ContentType = "text/plain"
    sent.MessageExpiryInterval = 60
    sent.PayloadFormatIndicator = 1
    publisher.publish(topic, b"hello", 1, properties=sent)
    message = subscriber.expect(topic, b"hello")
    got = message.properties
    if got.UserProperty != [("k", "v"), ("k", "w")]:
        fail("user properties %r" % got.UserProperty)
    if got.ResponseTopic != topic + "/reply" or got.CorrelationData != b"\x01\x02":
        fail("request/response properties lost")
    if got.ContentType != "text/plain" or got.PayloadFormatIndicator != 1:
        fail("content type or payload format lost")
    if not (0 < got.MessageExpiryInterval <= 60):
        fail("message expiry %r" % got.MessageExpiryInterval)
    if got.SubscriptionIdentifier != [42]:
        fail("subscription identifier %r" % got.SubscriptionIdentifier)
    publisher.publish(topic + "/marker", b"x", 1)
    if not publisher.messages.empty():
        fail("no-local subscription received its own publication")
    publisher.disconnect()
    subscriber.disconnect()


def malformed(port, version):
    topic = unique("bystander") + "/t"
    bystander = Client(port, unique("bystander"), 5)
    bystander.subscribe(topic, 1)
    # QoS 3 is malformed (0x81).
    bad = raw_connect(port, unique("bad"))
    body = string("a/b") + b"\x00"
    bad.sendall(bytes([0x36]) + varint(len(body) + 2) + body + b"\x00\x01")
    reason = read_disconnect(bad)
    if reason != 0x81:
        fail("QoS 3 answered with %#x, expected 0x81" % reason)
    # A wildcard in a topic name (0x90).
    bad = raw_connect(port, unique("bad"))
    body = string("a/#") + b"\x00"
    bad.sendall(b"\x30" + varint(len(body)) + body)
    reason = read_disconnect(bad)
    if reason != 0x90:
        fail("wildcard topic answered with %#x, expected 0x90" % reason)
    # Over the maximum packet size (0x95), refused from its header.
    bad = raw_connect(port, unique("big"))
    body = string("a/b") + b"\x00" + b"x" * 8192
    bad.sendall(b"\x30" + varint(len(body)) + body)
    reason = read_disconnect(bad)
    if reason != 0x95:
        fail("oversized packet answered with %#x, expected 0x95" % reason)
    # 3.1.1 has no DISCONNECT from a server: the connection just closes.
    bad = raw_connect(port, unique("old"), version=4)
    bad.sendall(b"\x36\x04" + string("a") + b"\x00")
    if bad.recv(16) != b"":
        fail("3.1.1 malformed packet not answered by closing")
    # Meanwhile the bystander still works.
    bystander.publish(topic, b"unharmed", 1)
    bystander.expect(topic, b"unharmed")
    bystander.disconnect()


def websocket(port, ws_port):
    topic = unique("ws") + "/t"
    over_ws = Client(ws_port, unique("ws"), 5, transport="websockets")
    over_tcp = Client(port, unique("tcp"), 311)
    over_ws.subscribe(topic, 1)
    over_tcp.subscribe(topic, 1)
    over_tcp.publish(topic, b"from tcp", 1)
    over_ws.expect(topic, b"from tcp")
    over_tcp.expect(topic, b"from tcp")
    over_ws.publish(topic, b"from ws", 2)
    over_tcp.expect(topic, b"from ws")
    over_ws.expect(topic, b"from ws")
    over_ws.disconnect()
    over_tcp.disconnect()


def refused(port, version):
    """Against examples/mqtt.proxy: only sensors/# is routed."""
    client = Client(port, unique("outsider"), version)
    codes = client.subscribe("private/#", 1)
    if codes[0].value != (0x87 if version == 5 else 0x80):
        fail("unrouted subscription answered %s" % codes)
    if version == 5:
        info = client.client.publish("private/x", b"no", qos=1)
        kind, mid, code = client.acks.get(timeout=WAIT)
        if kind != "pub" or code.value != 0x87:
            fail("unrouted publication answered %s %s" % (kind, code))
    topic = unique("sensors/s")
    client.subscribe("sensors/#", 1)
    client.publish(topic, b"21.5", 1)
    client.expect(topic, b"21.5")
    client.disconnect()


def quiet(port, seconds):
    """A subscriber with a 6 s keep-alive stays quiet for `seconds`, then still receives; paho
    reconnects by itself, so a cut connection shows as a disconnect and a second CONNACK."""
    topic = unique("quiet/t")
    subscriber = Client(port, unique("sub"), 5, keepalive=6)
    subscriber.subscribe(topic, 1)
    time.sleep(seconds)
    publisher = Client(port, unique("pub"), 5)
    publisher.publish(topic, b"after the quiet", 1)
    subscriber.expect(topic, b"after the quiet")
    if not subscriber.disconnects.empty() or not subscriber.connacks.empty():
        fail("the quiet subscriber was disconnected")
    subscriber.disconnect()
    publisher.disconnect()


def silent_subscriber(port, _):
    """A raw MQTT 5 subscriber with a 2 s keep-alive that receives a message every 0.3 s for
    12 s and never sends a packet of its own: deliveries do not keep it alive, so it is sent
    DISCONNECT with reason 0x8d (keep alive timeout) once 3 s pass without a word from it,
    long before the publishing stops."""
    topic = unique("silent/t")
    sock = raw_connect(port, unique("silent"), keepalive=2)
    connected = time.time()
    body = struct.pack(">H", 1) + b"\x00" + string(topic) + b"\x00"
    sock.sendall(b"\x82" + varint(len(body)) + body)
    publishing = threading.Event()
    publishing.set()

    def publish():
        publisher = Client(port, unique("pub"), 5)
        deadline = time.time() + 12
        while publishing.is_set() and time.time() < deadline:
            publisher.publish(topic, b"tick", 0)
            time.sleep(0.3)
        publisher.disconnect()

    thread = threading.Thread(target=publish)
    thread.start()
    deliveries, reason = 0, None
    sock.settimeout(20)
    try:
        while True:
            packet = read_packet(sock)
            if packet is None:
                break
            kind, body = packet
            if kind >> 4 == 3:
                deliveries += 1
            elif kind == 0xE0:
                reason = body[0] if body else 0
    finally:
        publishing.clear()
        thread.join()
    ended = time.time() - connected
    if deliveries == 0:
        fail("the silent subscriber received nothing")
    if reason != 0x8D:
        fail("the silent subscriber was not sent DISCONNECT 0x8d (got %r)" % reason)
    if ended > 8:
        fail("the silent subscriber was ended after %.1f s: deliveries kept it alive" % ended)


def silent_over_websocket(ws_port, _):
    """A raw MQTT 5 client over WebSocket with a 2 s keep-alive that says nothing after
    CONNECT: the WebSocket holds the tcp connection, so the MQTT connection's own timer sends
    DISCONNECT 0x8d once 3 s pass."""
    from websockets.sync.client import connect as ws_connect

    body = string("MQTT") + bytes([5, 0x02]) + struct.pack(">H", 2) + b"\x00"
    body += string(unique("ws-silent"))
    started = time.time()
    data = b""
    with ws_connect(
        "ws://%s:%d/mqtt" % (HOST, ws_port), subprotocols=["mqtt"], open_timeout=WAIT
    ) as ws:
        ws.send(b"\x10" + varint(len(body)) + body)
        deadline = started + 20
        while time.time() < deadline:
            try:
                data += ws.recv(timeout=max(deadline - time.time(), 0.1))
            except Exception:  # closed by the server, or the deadline passed
                break
    ended = time.time() - started
    received = io.BytesIO(data)
    received.recv = received.read  # read_packet reads as from a socket
    packets = list(iter(lambda: read_packet(received), None))
    kinds = [first for first, _ in packets]
    if kinds[:1] != [0x20]:
        fail("no CONNACK over the WebSocket: %r" % kinds)
    first, body = packets[-1]
    reason = body[0] if first == 0xE0 and body else None
    if reason != 0x8D:
        fail("the silent WebSocket client was not sent DISCONNECT 0x8d (got %r)" % kinds)
    if ended > 8:
        fail("the silent WebSocket client was ended after %.1f s" % ended)


def connack(port, version, client_id):
    """The bytes of the CONNACK answering a raw CONNECT of protocol level `version`."""
    sock = send_connect(port, client_id, version)
    data = b""
    while len(data) < 2 or len(data) < 2 + data[1]:
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    sock.close()
    return data


def versions(v5_port, v311_port):
    """Against a server taking only v5 and one taking only v3.1.1 (both routing north-*)."""
    answered = connack(v5_port, 4, unique("north"))
    if answered != b"\x20\x02\x00\x01":
        fail("v3.1.1 CONNECT to a v5-only server answered %r, expected return code 1" % answered)
    answered = connack(v311_port, 5, unique("north"))
    if answered[:1] != b"\x20" or answered[2:4] != b"\x00\x84":
        fail("v5 CONNECT to a v3.1.1-only server answered %r, expected reason 0x84" % answered)
    for port, version in [(v5_port, 5), (v311_port, 311)]:
        client = Client(port, unique("north"), version)
        if client.reason.value != 0:
            fail("v%s CONNECT to a server taking it answered %s" % (version, client.reason))
        client.disconnect()


def client_ids(port, _):
    """Sessions are routed by client id: north-* and south-* to different brokers. Each
    session's retained will, published when its connection drops, lands on its own broker; any
    other client id is not authorized (0x87)."""
    for prefix in ["north", "south"]:
        will = ("routing/will", ("%s will" % prefix).encode(), 1, True)
        Client(port, unique(prefix), 5, will=will).drop()
    outsider = Client(port, unique("west"), 5)
    outsider.client.loop_stop()
    if outsider.reason.value != 0x87:
        fail("an unrouted client id answered %s" % outsider.reason)
    answered = connack(port, 5, unique("west"))
    if answered[:1] != b"\x20" or answered[2:4] != b"\x00\x87":
        fail("an unrouted client id answered %r" % answered)


def responder(port, _extra, topic):
    """Answers one MQTT 5 request on `topic`: the reply goes to the request's response topic,
    with its correlation data, as `pong:` and the request's payload. Prints `ready` once
    subscribed."""
    client = Client(port, unique("responder"), 5)
    client.subscribe(topic, 1)
    print("ready", flush=True)
    request = client.expect(topic)
    asked = getattr(request.properties, "ResponseTopic", None)
    if not asked:
        fail("the request came without a response topic")
    reply = Properties(PacketTypes.PUBLISH)
    correlation = getattr(request.properties, "CorrelationData", None)
    if correlation is not None:
        reply.CorrelationData = correlation
    client.publish(asked, b"pong:" + request.payload, 1, properties=reply)
    client.disconnect()


SCENARIOS = {
    "versions": versions,
    "client_ids": client_ids,
    "quiet": quiet,
    "silent_subscriber": silent_subscriber,
    "silent_over_websocket": silent_over_websocket,
    "refused": refused,
    "pubsub": pubsub,
    "retained": retained,
    "will": will,
    "resume": resume,
    "will_delay": will_delay,
    "takeover": takeover,
    "takeover_after_reload": takeover_after_reload,
    "alias": alias,
    "properties": properties,
    "malformed": malformed,
    "websocket": websocket,
    "responder": responder,
}

if __name__ == "__main__":
    name, port, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    SCENARIOS[name](port, extra, *sys.argv[4:])
    print("ok " + name)
