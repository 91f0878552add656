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
    try:
        extra = subscriber.messages.get(timeout=1)
    except queue.Empty:
        extra = None
    if extra is not None:
        fail("unmatched record delivered: %s" % extra.topic)
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


SCENARIOS = {
    "sticky_partitions": sticky_partitions,
    "qos_max": qos_max,
    "publish_headers": publish_headers,
    "from_kafka": from_kafka,
    "no_local": no_local,
    "publish_blocked": publish_blocked,
    "takeover_other": takeover_other,
}

if __name__ == "__main__":
    name, port, bootstrap = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    extra = sys.argv[4:]
    if name == "takeover_other":
        extra = [int(extra[0])]
    SCENARIOS[name](port, bootstrap, *extra)
    print("ok " + name, flush=True)
