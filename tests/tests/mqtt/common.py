"""Helpers shared by the MQTT end-to-end scripts: paho clients that record what they get."""
import queue
import socket
import struct
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
WAIT = 10


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


class Client:
    """A paho client whose callbacks feed queues, so a script can wait for what it expects."""

    def __init__(self, port, client_id="", version=5, clean=True, transport="tcp", will=None,
                 expiry=None, username=None, password=None, will_delay=None, keepalive=30):
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        kwargs = {"client_id": client_id, "protocol": protocol, "transport": transport}
        if version != 5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        self.version = version
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        self.connacks = queue.Queue()
        self.disconnects = queue.Queue()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.acks.put(("sub", mid, codes))
        self.client.on_unsubscribe = lambda c, u, mid, codes, p: self.acks.put(("unsub", mid, codes))
        self.client.on_publish = lambda c, u, mid, code, p: self.acks.put(("pub", mid, code))
        self.client.on_connect = lambda c, u, flags, code, p: self.connacks.put((flags, code, p))
        self.client.on_disconnect = lambda c, u, flags, code, p: self.disconnects.put(code)
        if will is not None:
            topic, payload, qos, retain = will
            will_properties = None
            if will_delay is not None:
                will_properties = Properties(PacketTypes.WILLMESSAGE)
                will_properties.WillDelayInterval = will_delay
            self.client.will_set(topic, payload, qos=qos, retain=retain,
                                 properties=will_properties)
        if username is not None:
            self.client.username_pw_set(username, password)
        properties = None
        if version == 5:
            properties = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                properties.SessionExpiryInterval = expiry
        if version == 5:
            self.client.connect(HOST, port, keepalive=keepalive, clean_start=clean,
                                properties=properties)
        else:
            self.client.connect(HOST, port, keepalive=keepalive)
        self.client.loop_start()
        flags, code, props = self.connacks.get(timeout=WAIT)
        self.session_present = flags.session_present
        self.reason = code
        self.connack_properties = props

    def subscribe(self, topic, qos=0, **options):
        if self.version == 5:
            opts = mqtt.SubscribeOptions(qos=qos, **options)
            result, mid = self.client.subscribe(topic, options=opts)
        else:
            result, mid = self.client.subscribe(topic, qos)
        kind, acked, codes = self.acks.get(timeout=WAIT)
        assert (kind, acked) == ("sub", mid), (kind, acked, mid)
        return codes

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=WAIT)
        if not info.is_published():
            fail("publish to %s not acknowledged" % topic)
        return info

    def expect(self, topic=None, payload=None):
        try:
            message = self.messages.get(timeout=WAIT)
        except queue.Empty:
            fail("no message (waiting for %s %s)" % (topic, payload))
        if topic is not None and message.topic != topic:
            fail("got %s, expected topic %s" % (message.topic, topic))
        if payload is not None and message.payload != payload:
            fail("got %r, expected payload %r" % (message.payload, payload))
        return message

    def disconnect(self):
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self):
        """Ends the connection without DISCONNECT."""
        self.client.loop_stop()
        self.client.socket().close()


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def string(text):
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def send_connect(port, client_id, version=5, keepalive=30):
    """A raw socket that has sent a clean-start CONNECT of protocol level `version`."""
    sock = socket.create_connection((HOST, port), timeout=WAIT)
    body = string("MQTT") + bytes([version, 0x02]) + struct.pack(">H", keepalive)
    if version == 5:
        body += b"\x00"
    body += string(client_id)
    sock.sendall(b"\x10" + varint(len(body)) + body)
    return sock


def raw_connect(port, client_id, version=5, keepalive=30):
    """A raw socket after CONNECT/CONNACK, to send what no client library would."""
    sock = send_connect(port, client_id, version, keepalive)
    connack = sock.recv(64)
    if not connack or connack[0] != 0x20:
        fail("no CONNACK on the raw connection: %r" % connack)
    return sock


def read_disconnect(sock):
    """The reason code of the DISCONNECT the server sends before closing."""
    data = b""
    deadline = time.time() + WAIT
    while time.time() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    if not data or data[0] != 0xE0:
        fail("expected DISCONNECT, got %r" % data[:16])
    return data[2] if data[1] > 0 else 0


def read_packet(sock):
    """One whole packet from a raw socket: (first byte, body), or None at the end."""
    def exactly(count):
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    first = exactly(1)
    if first is None:
        return None
    length, shift = 0, 0
    while True:
        byte = exactly(1)
        if byte is None:
            return None
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    body = exactly(length)
    return None if body is None else (first[0], body)
