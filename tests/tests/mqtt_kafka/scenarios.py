"""MQTT scenarios against the mqtt-kafka gateway, with confluent-kafka on the Kafka side.

argv: scenario name, MQTT port, Kafka bootstrap address, then scenario arguments. Each exits
non-zero with FAIL: ... on stderr when the gateway does not behave.
"""
import json
import os
import queue
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mqtt"))

from common import Client, fail, WAIT  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def consume(bootstrap, topic, key, count=1):
    """The records of `topic` whose key is `key`: [{"value", "headers": [[name, bytes]]}]."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4()),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    records = []
    deadline = time.time() + 30
    while len(records) < count and time.time() < deadline:
        message = consumer.poll(1)
        if message is None or message.error():
            continue
        if message.key() == key.encode():
            records.append({"value": message.value(), "headers": message.headers() or []})
    consumer.close()
    if len(records) < count:
        fail("%d records keyed %s in %s, expected %d" % (len(records), key, topic, count))
    return records


def keys_in(bootstrap, topic, seconds):
    """The keys of the records `topic` holds, read for `seconds`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4()),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    keys = set()
    deadline = time.time() + seconds
    while time.time() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error() and message.key() is not None:
            keys.add(message.key().decode())
    consumer.close()
    return keys


def nothing_more(client, seconds, what):
    """Fails if `client` gets another message within `seconds`."""
    try:
        extra = client.messages.get(timeout=seconds)
    except queue.Empty:
        return
    fail("%s: %s %r" % (what, extra.topic, extra.payload))


def publish_headers(port, bootstrap):
    """A PUBLISH with every property becomes a record with Zilla's key and headers."""
    topic = unique("sensor") + "/one"
    client_id = unique("pub")
    publisher = Client(port, client_id, 5)
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = 300
    properties.ContentType = "text/plain"
    properties.PayloadFormatIndicator = 1
    properties.ResponseTopic = topic + "/reply"
    properties.CorrelationData = b"corr-1"
    properties.UserProperty = [("row", "7")]
    publisher.publish(topic, b"hello", 1, properties=properties)
    publisher.publish(topic, b"kept", 1, retain=True)
    publisher.disconnect()
    records = consume(bootstrap, "mqtt-messages", topic, 2)
    levels = topic.split("/")
    expected = [("zilla:filter", levels[0].encode()), ("zilla:filter", b"one"),
                ("zilla:local", client_id.encode()),
                ("zilla:expiry", (300).to_bytes(4, "big")),
                ("zilla:content-type", b"text/plain"), ("zilla:format", b"TEXT"),
                ("zilla:reply-to", b"mqtt-messages"),
                ("zilla:reply-key", (topic + "/reply").encode()),
                ("zilla:reply-filter", levels[0].encode()), ("zilla:reply-filter", b"one"),
                ("zilla:reply-filter", b"reply"),
                ("zilla:correlation-id", b"corr-1"), ("row", b"7"), ("zilla:qos", b"1")]
    if records[0]["value"] != b"hello" or records[0]["headers"] != expected:
        fail("record %r, expected headers %r" % (records[0], expected))
    plain = [("zilla:filter", levels[0].encode()), ("zilla:filter", b"one"),
             ("zilla:local", client_id.encode()), ("zilla:qos", b"1")]
    if records[1]["value"] != b"kept" or records[1]["headers"] != plain:
        fail("second record %r" % records[1])
    retained = consume(bootstrap, "mqtt-retained", topic, 1)
    if retained[0]["value"] != b"kept" or retained[0]["headers"] != plain:
        fail("retained record %r" % retained[0])


def from_kafka(port, bootstrap):
    """A record produced by another Kafka client reaches the MQTT subscribers it matches."""
    root = unique("plant")
    subscriber = Client(port, unique("sub"), 5)
    subscriber.subscribe(root + "/+/temp", 1)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for line, value in (("l1", b"20.5"), ("l2", b"21.0")):
        topic = "%s/%s/temp" % (root, line)
        headers = [("zilla:filter", level.encode()) for level in topic.split("/")]
        headers += [("zilla:qos", b"1"), ("source", b"kafka")]
        producer.produce("mqtt-messages", key=topic, value=value, headers=headers)
    # Not matched by the filter: another level.
    producer.produce("mqtt-messages", key=root + "/l3/humidity", value=b"x",
                     headers=[("zilla:filter", level.encode())
                              for level in (root, "l3", "humidity")])
    producer.flush(20)
    for line, value in (("l1", b"20.5"), ("l2", b"21.0")):
        message = subscriber.expect("%s/%s/temp" % (root, line), value)
        if message.qos != 1:
            fail("delivered at QoS %d" % message.qos)
        user = dict(message.properties.UserProperty)
        if user.get("source") != "kafka":
            fail("user properties %r" % user)
    nothing_more(subscriber, 1, "unmatched record delivered")
    subscriber.disconnect()


def no_local(port, bootstrap):
    """A no-local subscriber does not get its own publications; others do."""
    topic = unique("chat") + "/room"
    talker = Client(port, unique("talker"), 5)
    talker.subscribe(topic, 1, noLocal=True)
    listener = Client(port, unique("listener"), 5)
    listener.subscribe(topic, 1)
    talker.publish(topic, b"mine", 1)
    listener.publish(topic, b"theirs", 1)
    listener.expect(topic, b"mine")
    listener.expect(topic, b"theirs")
    talker.expect(topic, b"theirs")
    talker.disconnect()
    listener.disconnect()


def publish_blocked(port, bootstrap, topic, go_file):
    """Connects, waits for `go_file`, publishes one QoS 1 message and prints `acked` with
    the reason code once the PUBACK arrives."""
    client = Client(port, unique("blocked"), 5)
    print("connected", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.05)
    info = client.client.publish(topic, b"kept through the outage", qos=1)
    info.wait_for_publish(timeout=120)
    if not info.is_published():
        fail("never acknowledged")
    kind, mid, code = client.acks.get(timeout=WAIT)
    print("acked %d" % code.value, flush=True)
    client.disconnect()


def takeover_other(port, bootstrap, other_port):
    """A client id connecting to another gateway takes the session over from this one, and
    the first connection's will is published (its delay is 0)."""
    client_id = unique("twin")
    will_topic = unique("twin") + "/will"
    watcher = Client(other_port, unique("watch"), 5)
    watcher.subscribe(will_topic, 1)
    first = Client(port, client_id, 5, will=(will_topic, b"first gone", 1, False))
    second = Client(other_port, client_id, 5)
    try:
        code = first.disconnects.get(timeout=WAIT * 2)
    except queue.Empty:
        fail("the first connection was not ended by the takeover")
    if code.value != 0x8E:
        fail("first connection ended with %s, expected session taken over (0x8E)" % code)
    watcher.expect(will_topic, b"first gone")
    topic = unique("twin") + "/t"
    second.subscribe(topic, 1)
    second.publish(topic, b"alive", 1)
    second.expect(topic, b"alive")
    second.disconnect()
    watcher.disconnect()


def sticky_partitions(port, bootstrap):
    """Topics under devices/ go to mqtt-devices, every topic of one device to one partition
    (the clients pattern devices/{identity}/#)."""
    device = unique("d")
    publisher = Client(port, unique("pub"), 5)
    topics = ["devices/%s/%s" % (device, name) for name in ("a", "b", "c", "d", "e", "f")]
    for topic in topics:
        publisher.publish(topic, b"1", 1)
    publisher.disconnect()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4()),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["mqtt-devices"])
    partitions = {}
    deadline = time.time() + 30
    while len(partitions) < len(topics) and time.time() < deadline:
        message = consumer.poll(1)
        if message is None or message.error():
            continue
        key = message.key().decode()
        if key in topics:
            partitions[key] = message.partition()
    consumer.close()
    if len(partitions) != len(topics):
        fail("records found in mqtt-devices: %r" % partitions)
    if len(set(partitions.values())) != 1:
        fail("one device's topics spread over partitions: %r" % partitions)
    if set(topics) & keys_in(bootstrap, "mqtt-messages", 5):
        fail("a device topic went to mqtt-messages")


def qos_max(port, bootstrap):
    """With qosMax at_most_once, CONNACK announces maximum QoS 0 and SUBACK grants QoS 0."""
    client = Client(port, unique("capped"), 5)
    if getattr(client.connack_properties, "MaximumQoS", None) != 0:
        fail("CONNACK properties %r" % client.connack_properties)
    topic = unique("capped") + "/t"
    codes = client.subscribe(topic, 1)
    if codes[0].value != 0:
        fail("granted %s" % codes)
    client.publish(topic, b"zero", 0)
    message = client.expect(topic, b"zero")
    if message.qos != 0:
        fail("delivered at QoS %d" % message.qos)
    client.disconnect()


def unacknowledging_subscriber(port, client_id, topic):
    """A QoS 1 subscriber of `topic` with a persistent session that acknowledges only what
    the scenario acknowledges, and a publisher, both on `port`."""
    subscriber = Client(port, client_id, 5, clean=False, expiry=300)
    subscriber.client.manual_ack_set(True)
    subscriber.subscribe(topic, 1)
    return subscriber, Client(port, unique("pub"), 5)


def session_moves(port, bootstrap, other_port):
    """A persistent session left on one gateway resumes on the other: CONNACK says session
    present, its subscription is served again, the QoS 1 messages published while it was
    away arrive, and so does one it received but never acknowledged."""
    client_id = unique("mover")
    topic = unique("moving") + "/jobs"
    first, publisher = unacknowledging_subscriber(port, client_id, topic)
    publisher.publish(topic, b"unacked", 1)
    first.expect(topic, b"unacked")
    # Gone without acknowledging it, nor saying goodbye.
    first.drop()
    for index in range(3):
        publisher.publish(topic, b"queued %d" % index, 1)
    publisher.disconnect()
    back = Client(other_port, client_id, 5, clean=False, expiry=300)
    if not back.session_present:
        fail("session not present on the other gateway")
    got = []
    deadline = time.time() + 30
    while len(set(got)) < 4 and time.time() < deadline:
        try:
            got.append(back.messages.get(timeout=1).payload)
        except queue.Empty:
            pass
    expected = {b"unacked", b"queued 0", b"queued 1", b"queued 2"}
    if set(got) != expected:
        fail("resumed session got %r, expected %r" % (got, sorted(expected)))
    if got.index(b"queued 0") > got.index(b"queued 2"):
        fail("queued messages out of order: %r" % got)
    back.disconnect()
    # The DISCONNECT above kept the session; a clean start discards it.
    fresh = Client(port, client_id, 5, clean=True)
    if fresh.session_present:
        fail("session present after a clean start")
    fresh.disconnect()
    again = Client(other_port, client_id, 5, clean=False, expiry=300)
    if again.session_present:
        fail("the discarded session came back")
    again.disconnect()


def session_expires(port, bootstrap):
    """A session whose expiry interval passed is not resumed."""
    client_id = unique("brief")
    topic = unique("brief") + "/t"
    # Long enough for the reconnect on a loaded machine, short enough to wait out.
    expiry = 5
    first = Client(port, client_id, 5, clean=False, expiry=expiry)
    first.subscribe(topic, 1)
    first.disconnect()
    kept = Client(port, client_id, 5, clean=False, expiry=expiry)
    if not kept.session_present:
        fail("session not present within its expiry")
    kept.disconnect()
    time.sleep(expiry + 2)
    late = Client(port, client_id, 5, clean=False, expiry=expiry)
    if late.session_present:
        fail("session present after its expiry")
    late.disconnect()


def expired_messages(port, bootstrap):
    """A message whose expiry passed while its subscriber was away is not delivered when the
    session resumes; one still within its expiry is, with what is left of its expiry."""
    client_id = unique("away")
    topic = unique("away") + "/t"
    subscriber = Client(port, client_id, 5, clean=False, expiry=300)
    subscriber.subscribe(topic, 1)
    subscriber.disconnect()
    publisher = Client(port, unique("pub"), 5)
    brief = Properties(PacketTypes.PUBLISH)
    brief.MessageExpiryInterval = 1
    publisher.publish(topic, b"brief", 1, properties=brief)
    lasting = Properties(PacketTypes.PUBLISH)
    lasting.MessageExpiryInterval = 120
    publisher.publish(topic, b"lasting", 1, properties=lasting)
    publisher.disconnect()
    time.sleep(3)
    back = Client(port, client_id, 5, clean=False, expiry=300)
    if not back.session_present:
        fail("session not present")
    message = back.expect(topic, b"lasting")
    left = getattr(message.properties, "MessageExpiryInterval", None)
    if left is None or not 0 < left <= 118:
        fail("the lasting message came with %r seconds of expiry left" % left)
    try:
        extra = back.messages.get(timeout=2)
        fail("also delivered %r" % extra.payload)
    except queue.Empty:
        pass
    back.disconnect()


def will_of_killed(port, bootstrap, other_port, go_file):
    """Connects to the first gateway with a will, prints `connected`, waits for `go_file`
    (written once that gateway is killed) and expects the will exactly once through the
    other gateway."""
    will_topic = unique("orphan") + "/will"
    watcher = Client(other_port, unique("watch"), 5)
    watcher.subscribe(will_topic, 1)
    Client(port, unique("doomed"), 5, will=(will_topic, b"orphaned", 1, False))
    print("connected", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.05)
    try:
        message = watcher.messages.get(timeout=60)
    except queue.Empty:
        fail("the will of the killed gateway's client was not published")
    if message.payload != b"orphaned":
        fail("got %r" % message.payload)
    nothing_more(watcher, 5, "the will was published twice")
    watcher.disconnect()


def qos2_resent(port, bootstrap):
    """A QoS 2 PUBLISH sent again after a reconnection (its PUBREC came, its PUBREL did not)
    is acknowledged without being written to Kafka a second time."""
    import socket
    import struct
    from common import string, varint

    client_id = unique("exactly")
    topic = unique("exactly") + "/once"

    def connect():
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        # clean start 0, session expiry 300
        body = string("MQTT") + bytes([5, 0x00]) + struct.pack(">H", 30)
        body += bytes([5, 0x11]) + struct.pack(">I", 300)
        body += string(client_id)
        sock.sendall(b"\x10" + varint(len(body)) + body)
        return sock, read_packet(sock)

    def read_packet(sock):
        header = sock.recv(1)
        if not header:
            fail("connection closed")
        length, shift = 0, 0
        while True:
            byte = sock.recv(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = b""
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                fail("connection closed")
            body += chunk
        return header[0], body

    def publish(sock, dup):
        body = string(topic) + struct.pack(">H", 7) + b"\x00" + b"once"
        sock.sendall(bytes([0x34 | (0x08 if dup else 0)]) + varint(len(body)) + body)
        kind, reply = read_packet(sock)
        if kind != 0x50 or reply[:2] != struct.pack(">H", 7):
            fail("expected PUBREC for 7, got %#x %r" % (kind, reply))
        if len(reply) > 2 and reply[2] >= 0x80:
            fail("PUBREC reason %#x" % reply[2])

    sock, (kind, connack) = connect()
    if kind != 0x20 or connack[1] != 0:
        fail("CONNACK %#x %r" % (kind, connack))
    publish(sock, False)
    # Gone before PUBREL.
    sock.close()
    sock, (kind, connack) = connect()
    if kind != 0x20 or connack[0] & 1 != 1:
        fail("session not present: %r" % connack)
    publish(sock, True)
    sock.sendall(b"\x62\x02" + struct.pack(">H", 7))
    kind, reply = read_packet(sock)
    if kind != 0x70 or (len(reply) > 2 and reply[2] != 0):
        fail("expected PUBCOMP success, got %#x %r" % (kind, reply))
    sock.sendall(b"\xe0\x00")
    sock.close()
    records = keys_count(bootstrap, "mqtt-messages", topic, 8)
    if records != 1:
        fail("%d records of the QoS 2 message in Kafka, expected 1" % records)


def keys_count(bootstrap, topic, key, seconds):
    """How many records of `topic` have the key `key`, read for `seconds`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4()),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    count = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error() and message.key() == key.encode():
            count += 1
    consumer.close()
    return count


def overlapping(port, bootstrap):
    """Two subscriptions of one session matching a message deliver one copy each, with
    their subscription identifiers (MQTT 5 §4.8.1, as a broker that does not merge them)."""
    root = unique("overlap")
    client = Client(port, unique("both"), 5)
    for identifier, pattern in ((1, root + "/+"), (2, root + "/#")):
        properties = Properties(PacketTypes.SUBSCRIBE)
        properties.SubscriptionIdentifier = identifier
        result, mid = client.client.subscribe(pattern, qos=1, properties=properties)
        client.acks.get(timeout=WAIT)
    client.publish(root + "/x", b"one", 1)
    identifiers = set()
    for _ in range(2):
        message = client.expect(root + "/x", b"one")
        identifiers.update(message.properties.SubscriptionIdentifier)
    if identifiers != {1, 2}:
        fail("subscription identifiers %r" % identifiers)
    nothing_more(client, 1, "a third copy")
    client.disconnect()


def shared_refused(port, bootstrap):
    """Shared subscriptions are not offered: CONNACK says so (Shared Subscription Available
    0) and a `$share/` filter is refused with 0x9E, while a plain filter in the same SUBSCRIBE
    is granted and still delivers."""
    client = Client(port, unique("sharer"), 5)
    available = getattr(client.connack_properties, "SharedSubscriptionAvailable", None)
    if available != 0:
        fail("CONNACK Shared Subscription Available is %r, expected 0" % available)
    topic = unique("shared") + "/t"
    result, mid = client.client.subscribe([("$share/group/" + topic, mqtt_options(1)),
                                           (topic, mqtt_options(1))])
    kind, acked, codes = client.acks.get(timeout=WAIT)
    values = [code.value for code in codes]
    if values != [0x9E, 1]:
        fail("SUBACK reason codes %r, expected [0x9e, 1]" % values)
    client.publish(topic, b"plain", 1)
    client.expect(topic, b"plain")
    nothing_more(client, 1, "a copy for the refused shared subscription")
    client.disconnect()


def ack_of(client, kind):
    """The next acknowledgement of `kind` (`sub`, `unsub`), skipping PUBACKs before it."""
    while True:
        got, acked, codes = client.acks.get(timeout=WAIT)
        if got == kind:
            return [code if isinstance(code, int) else code.value for code in codes]


def subscription_quota(port, bootstrap):
    """With `zilla.binding.mqtt.kafka.subscriptions.maximum` at 3, a fourth distinct filter
    is refused with 0x97 (0x80 in 3.1.1) while the first three are granted and deliver; the
    same filter again replaces its subscription and is granted; once one is unsubscribed, a
    new filter fits again; SUBSCRIBEs sent without waiting for their SUBACKs share the quota."""
    topics = [unique("quota") + "/" + str(index) for index in range(5)]
    client = Client(port, unique("quota"), 5)
    client.client.subscribe([(topic, mqtt_options(1)) for topic in topics[:4]])
    values = ack_of(client, "sub")
    if values != [1, 1, 1, 0x97]:
        fail("SUBACK reason codes %r, expected [1, 1, 1, 0x97]" % values)
    client.client.subscribe([(topics[0], mqtt_options(0))])
    values = ack_of(client, "sub")
    if values != [0]:
        fail("a filter subscribed again got %r, expected [0]" % values)
    client.publish(topics[2], b"third", 1)
    client.expect(topics[2], b"third")
    client.publish(topics[3], b"refused", 1)
    nothing_more(client, 1, "a message on the refused filter")
    client.client.unsubscribe(topics[1])
    ack_of(client, "unsub")
    client.client.subscribe([(topics[4], mqtt_options(1))])
    values = ack_of(client, "sub")
    if values != [1]:
        fail("a filter within the quota again got %r, expected [1]" % values)
    client.disconnect()

    old = Client(port, unique("quota311"), 4)
    old.client.subscribe([(topic, 1) for topic in topics[:4]])
    values = ack_of(old, "sub")
    if values != [1, 1, 1, 0x80]:
        fail("3.1.1 SUBACK return codes %r, expected [1, 1, 1, 0x80]" % values)
    old.disconnect()

    # SUBSCRIBEs sent back to back are answered concurrently: they still share one quota.
    burst = Client(port, unique("quota_burst"), 5)
    for topic in topics[:5]:
        burst.client.subscribe([(topic, mqtt_options(1))])
    values = sorted(ack_of(burst, "sub")[0] for _ in range(5))
    if values != [1, 1, 1, 0x97, 0x97]:
        fail("pipelined SUBACK reason codes %r, expected three 1 and two 0x97" % values)
    burst.disconnect()


def mqtt_options(qos):
    import paho.mqtt.client as mqtt
    return mqtt.SubscribeOptions(qos=qos)


def connect_persistent(client, connacks, port):
    """Connects the paho v5 `client` (whose on_connect feeds `connacks`) to `port` without
    clean start, with a session expiry of 300 s; whether the session was present."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 300
    client.connect("127.0.0.1", port, keepalive=30, clean_start=False, properties=properties)
    client.loop_start()
    flags, code = connacks.get(timeout=WAIT)
    if code != 0:
        fail("CONNACK %r" % code)
    return flags.session_present


def qos2_across_a_kill(port, bootstrap, other_port, go_file):
    """QoS 2 publications in flight when their gateway is killed reach Kafka exactly once:
    a paho v5 client with a persistent session publishes a stream of QoS 2 messages, prints
    `publishing` once some are complete, waits for `go_file` (written once the gateway is
    killed), resumes its session on the other gateway, where it sends again what had no
    PUBREC (PUBLISH with DUP) or no PUBCOMP (PUBREL), and then every message is in the
    messages topic once."""
    import paho.mqtt.client as mqtt

    total = 400
    client_id = unique("exactly")
    topic = unique("exactly") + "/killed"
    completed = set()
    gone = queue.Queue()
    connacks = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(32)
    client.max_queued_messages_set(0)
    client.on_publish = lambda c, u, mid, code, p: completed.add(mid)
    client.on_disconnect = lambda c, u, flags, code, p: gone.put(code)
    client.on_connect = lambda c, u, flags, code, p: connacks.put((flags, code))

    def connect(to):
        return connect_persistent(client, connacks, to)

    connect(port)
    mids = []
    for index in range(total):
        info = client.publish(topic, b"m-%d" % index, qos=2)
        mids.append(info.mid)
    deadline = time.time() + 60
    while len(completed) < total // 4 and time.time() < deadline:
        time.sleep(0.001)
    print("publishing", flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.01)
    gone.get(timeout=30)
    client.loop_stop()
    at_kill = len(completed)
    if at_kill >= total:
        fail("every message was complete before the kill: nothing was in flight")
    if not connect(other_port):
        fail("the session is not present on the other gateway")
    deadline = time.time() + 90
    while len(completed) < total and time.time() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    if len(completed) < total:
        fail("%d of %d QoS 2 publications complete" % (len(completed), total))
    counts = {}
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4()),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["mqtt-messages"])
    deadline = time.time() + 15
    while time.time() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error() and message.key() == topic.encode():
            counts[message.value()] = counts.get(message.value(), 0) + 1
    consumer.close()
    missing = [i for i in range(total) if b"m-%d" % i not in counts]
    twice = sorted(value for value, count in counts.items() if count > 1)
    if missing or twice:
        fail("%d complete at the kill; missing %r, written more than once %r"
             % (at_kill, missing, twice))
    print("complete at the kill: %d of %d" % (at_kill, total), flush=True)


def redelivered_with_dup(port, bootstrap, other_port):
    """QoS 1 messages delivered and not acknowledged come again with DUP once the session
    resumes on the other gateway, messages never delivered come without it, and once
    acknowledged nothing comes a second time (back on the first gateway)."""
    client_id = unique("dupped")
    topic = unique("dupped") + "/jobs"
    first, publisher = unacknowledging_subscriber(port, client_id, topic)
    publisher.publish(topic, b"acked", 1)
    publisher.publish(topic, b"unacked", 1)
    acked = first.expect(topic, b"acked")
    unacked = first.expect(topic, b"unacked")
    if acked.dup or unacked.dup:
        fail("first deliveries carry DUP")
    first.client.ack(acked.mid, acked.qos)
    # Gone a moment after acknowledging the first only, without DISCONNECT.
    time.sleep(1)
    first.drop()
    publisher.publish(topic, b"new", 1)
    publisher.disconnect()
    back = Client(other_port, client_id, 5, clean=False, expiry=300)
    if not back.session_present:
        fail("session not present on the other gateway")
    again = back.expect(topic, b"unacked")
    if not again.dup:
        fail("the unacknowledged message came again without DUP")
    fresh = back.expect(topic, b"new")
    if fresh.dup:
        fail("a message delivered for the first time carries DUP")
    nothing_more(back, 2, "delivered again after its acknowledgement")
    back.disconnect()
    last = Client(port, client_id, 5, clean=False, expiry=300)
    if not last.session_present:
        fail("session not present back on the first gateway")
    nothing_more(last, 3, "acknowledged message delivered a second time")
    last.disconnect()


def qos2_released_again(port, bootstrap, other_port):
    """A QoS 2 delivery the subscriber answered with PUBREC and never saw released (its
    connection went away before PUBREL) is released again by the other gateway when the
    session resumes there: paho hands the message to the application then, once."""
    import paho.mqtt.client as mqtt

    client_id = unique("released")
    topic = unique("released") + "/t"
    got = queue.Queue()
    connacks = queue.Queue()
    subacks = queue.Queue()
    swallowed = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: got.put(m)
    client.on_connect = lambda c, u, flags, code, p: connacks.put((flags, code))
    client.on_subscribe = lambda c, u, mid, codes, p: subacks.put(codes)
    handle_pubrel = client._handle_pubrel

    def swallow_pubrel():
        # The first connection never sees PUBREL: paho keeps the message unreleased.
        swallowed.put(True)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def connect(to):
        return connect_persistent(client, connacks, to)

    client._handle_pubrel = swallow_pubrel
    connect(port)
    client.subscribe(topic, options=mqtt.SubscribeOptions(qos=2))
    codes = subacks.get(timeout=WAIT)
    if [code.value for code in codes] != [2]:
        fail("SUBACK %r" % codes)
    publisher = Client(port, unique("pub"), 5)
    publisher.publish(topic, b"exactly", 2)
    publisher.disconnect()
    swallowed.get(timeout=WAIT)
    if not got.empty():
        fail("delivered before PUBREL")
    # Gone without DISCONNECT, the message received and not released.
    client.loop_stop()
    client.socket().close()
    client._handle_pubrel = handle_pubrel
    if not connect(other_port):
        fail("session not present on the other gateway")
    try:
        message = got.get(timeout=WAIT)
    except queue.Empty:
        fail("the received QoS 2 message was never released")
    if message.payload != b"exactly":
        fail("got %r" % message.payload)
    try:
        extra = got.get(timeout=3)
        fail("delivered twice: %r" % extra.payload)
    except queue.Empty:
        pass
    client.disconnect()
    client.loop_stop()


class RawSession:
    """A subscriber on a raw socket with a persistent session (MQTT `version` 5 or 4, i.e.
    3.1.1), which sees the bytes of every packet and answers only what the scenario says."""

    def __init__(self, port, client_id, version):
        import socket
        import struct
        from common import string, varint
        self.version = version
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        # clean start / clean session 0; v5: session expiry 300
        body = string("MQTT") + bytes([version, 0x00]) + struct.pack(">H", 30)
        if version == 5:
            body += bytes([5, 0x11]) + struct.pack(">I", 300)
        body += string(client_id)
        self.sock.sendall(b"\x10" + varint(len(body)) + body)
        kind, connack = self.read()
        if kind != 0x20 or connack[1] != 0:
            fail("CONNACK %#x %r" % (kind, connack))
        self.session_present = connack[0] & 1 == 1

    def read(self, timeout=WAIT):
        """The next packet: (first byte, body); None when nothing comes within `timeout`."""
        import socket
        self.sock.settimeout(timeout)
        try:
            header = self.sock.recv(1)
        except socket.timeout:
            return None
        finally:
            self.sock.settimeout(WAIT)
        if not header:
            fail("connection closed")
        length, shift = 0, 0
        while True:
            byte = self.sock.recv(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = b""
        while len(body) < length:
            chunk = self.sock.recv(length - len(body))
            if not chunk:
                fail("connection closed")
            body += chunk
        return header[0], body

    def publish_of(self, first, body):
        """(packet id, DUP, QoS, payload) of a PUBLISH."""
        import struct
        (length,) = struct.unpack(">H", body[:2])
        at = 2 + length
        (packet_id,) = struct.unpack(">H", body[at:at + 2])
        at += 2
        if self.version == 5:
            size, shift = 0, 0
            while True:
                byte = body[at]
                at += 1
                size |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            at += size
        return packet_id, bool(first & 0x08), (first >> 1) & 3, body[at:]

    def subscribe(self, topic, qos):
        import struct
        from common import string, varint
        body = struct.pack(">H", 1) + (b"\x00" if self.version == 5 else b"")
        body += string(topic) + bytes([qos])
        self.sock.sendall(b"\x82" + varint(len(body)) + body)
        kind, suback = self.read()
        if kind != 0x90 or suback[-1] != qos:
            fail("SUBACK %#x %r" % (kind, suback))

    def ack(self, kind, packet_id):
        import struct
        self.sock.sendall(bytes([kind, 2]) + struct.pack(">H", packet_id))

    def expect_publish(self):
        got = self.read()
        if got is None or got[0] & 0xF0 != 0x30:
            fail("expected PUBLISH, got %r" % (got,))
        return self.publish_of(*got)

    def expect_pubrel(self, packet_id):
        import struct
        got = self.read()
        if got is None or got[0] != 0x62 or got[1][:2] != struct.pack(">H", packet_id):
            fail("expected PUBREL %d, got %r" % (packet_id, got))

    def close(self):
        self.sock.close()


def qos2_outstanding_across_a_kill(port, bootstrap, other_port, go_file, version):
    """QoS 2 deliveries outstanding when their gateway is killed go on, on the other gateway,
    with their packet identifiers: a raw subscriber with a persistent session completes two
    messages, then gets three and answers the first with nothing, the second with PUBREC only
    (it gets PUBREL and withholds PUBCOMP), the third completely. Prints `outstanding`; once
    `go_file` says the gateway was killed, it resumes on the other gateway and must get
    exactly PUBREL for the second with its identifier and the first again with its
    identifier and DUP, then nothing more, also on a later connection."""
    client_id = unique("outstanding")
    topic = unique("outstanding") + "/q2"
    subscriber = RawSession(port, client_id, version)
    subscriber.subscribe(topic, 2)
    publisher = Client(port, unique("pub"), 5)

    def complete(packet_id):
        subscriber.ack(0x50, packet_id)
        subscriber.expect_pubrel(packet_id)
        subscriber.ack(0x70, packet_id)

    # Completed deliveries first, so the outstanding ones do not hold identifiers a new
    # connection would pick first.
    for index in range(2):
        publisher.publish(topic, b"warm-%d" % index, 2)
        packet_id, dup, qos, payload = subscriber.expect_publish()
        if payload != b"warm-%d" % index or dup or qos != 2:
            fail("got %r dup %r qos %d" % (payload, dup, qos))
        complete(packet_id)
    for payload in (b"unreceived", b"received", b"completed"):
        publisher.publish(topic, payload, 2)
    publisher.disconnect()
    sent = {}
    for _ in range(3):
        packet_id, dup, qos, payload = subscriber.expect_publish()
        if dup or qos != 2:
            fail("first delivery of %r: dup %r qos %d" % (payload, dup, qos))
        sent[payload] = packet_id
    if sorted(sent) != [b"completed", b"received", b"unreceived"]:
        fail("delivered %r" % sent)
    subscriber.ack(0x50, sent[b"received"])
    subscriber.expect_pubrel(sent[b"received"])
    complete(sent[b"completed"])
    # What the gateway keeps is written within moments.
    time.sleep(1.5)
    print("outstanding %r" % sent, flush=True)
    while not os.path.exists(go_file):
        time.sleep(0.01)
    subscriber.close()
    back = RawSession(other_port, client_id, version)
    if not back.session_present:
        fail("session not present on the other gateway")
    subscriber = back
    got = []
    while True:
        packet = back.read(timeout=3)
        if packet is None:
            break
        got.append(packet)
    pubrels = [p for p in got if p[0] == 0x62]
    publishes = [back.publish_of(*p) for p in got if p[0] & 0xF0 == 0x30]
    others = [p for p in got if p[0] != 0x62 and p[0] & 0xF0 != 0x30]
    import struct
    if pubrels != [(0x62, struct.pack(">H", sent[b"received"]))]:
        fail("PUBRELs after the resume %r, expected one for %d" % (pubrels, sent[b"received"]))
    if publishes != [(sent[b"unreceived"], True, 2, b"unreceived")]:
        fail("PUBLISHes after the resume %r, expected the unreceived one again with id %d and "
             "DUP" % (publishes, sent[b"unreceived"]))
    if others:
        fail("unexpected packets %r" % others)
    back.ack(0x70, sent[b"received"])
    complete(sent[b"unreceived"])
    time.sleep(1)
    back.sock.sendall(b"\xe0\x00")
    back.close()
    last = RawSession(other_port, client_id, version)
    if not last.session_present:
        fail("session not present after the resume")
    extra = last.read(timeout=3)
    if extra is not None:
        fail("after every delivery completed, got %r" % (extra,))
    last.sock.sendall(b"\xe0\x00")
    last.close()


SCENARIOS = {
    "subscription_quota": subscription_quota,
    "sticky_partitions": sticky_partitions,
    "qos_max": qos_max,
    "publish_headers": publish_headers,
    "from_kafka": from_kafka,
    "no_local": no_local,
    "publish_blocked": publish_blocked,
    "takeover_other": takeover_other,
    "session_moves": session_moves,
    "session_expires": session_expires,
    "expired_messages": expired_messages,
    "will_of_killed": will_of_killed,
    "qos2_resent": qos2_resent,
    "overlapping": overlapping,
    "shared_refused": shared_refused,
    "qos2_across_a_kill": qos2_across_a_kill,
    "redelivered_with_dup": redelivered_with_dup,
    "qos2_released_again": qos2_released_again,
    "qos2_outstanding_v5": lambda *a: qos2_outstanding_across_a_kill(*a, version=5),
    "qos2_outstanding_v311": lambda *a: qos2_outstanding_across_a_kill(*a, version=4),
}

if __name__ == "__main__":
    name, port, bootstrap = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    extra = sys.argv[4:]
    if name in ("takeover_other", "session_moves", "redelivered_with_dup",
                "qos2_released_again"):
        extra = [int(extra[0])]
    if name in ("will_of_killed", "qos2_across_a_kill", "qos2_outstanding_v5",
                "qos2_outstanding_v311"):
        extra = [int(extra[0]), extra[1]]
    SCENARIOS[name](port, bootstrap, *extra)
    print("ok " + name, flush=True)
