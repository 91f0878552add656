"""The Kafka side of the asyncapi end-to-end tests, through confluent-kafka.

  records BOOTSTRAP TOPIC COUNT SECONDS   print the topic's records (from the start) as a JSON
                                          list of {key, value, headers}, once COUNT are read or
                                          SECONDS passed
  produce BOOTSTRAP TOPIC KEY VALUE [NAME=VALUE...]   produce one record with headers
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer


def text(data):
    return None if data is None else data.decode("utf-8", "replace")


def records(bootstrap, topic, count, seconds):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4()),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found = []
    deadline = time.time() + seconds
    while len(found) < count and time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        found.append({"key": text(message.key()), "value": text(message.value()),
                      "headers": {name: text(value) for name, value in message.headers() or []}})
    consumer.close()
    print(json.dumps(found))


def produce(bootstrap, topic, key, value, headers):
    producer = Producer({"bootstrap.servers": bootstrap})
    pairs = [tuple(header.split("=", 1)) for header in headers]
    producer.produce(topic, key=key.encode(), value=value.encode(), headers=pairs)
    if producer.flush(30) != 0:
        sys.exit("FAIL: record not acknowledged")


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "records":
        records(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif command == "produce":
        produce(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:])
    else:
        sys.exit("unknown command " + command)
