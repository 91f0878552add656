// MQTT.js (the MQTT client of Node.js and browser applications) over WebSocket through the
// gateway, usage: node mqttjs.js <ws port>. A 5 subscriber gets what a 3.1.1 publisher sends at
// QoS 0, 1 and 2, with the QoS it was sent at; what a 5 publisher sends arrives with its
// properties; a retained message reaches a later subscriber with the retain flag, and clearing
// it leaves nothing for the next. Prints `ok mqttjs`; fails with a message otherwise.
'use strict';

const mqtt = require('mqtt');

const port = process.argv[2];
const url = `ws://127.0.0.1:${port}/mqtt`;
const WAIT = 10000;
let counter = 0;

function unique(name) {
  counter += 1;
  return `${name}-${process.pid}-${Date.now()}-${counter}`;
}

function connect(version, name) {
  return mqtt.connectAsync(url, {
    protocolVersion: version,
    clientId: unique(name),
    reconnectPeriod: 0,
    connectTimeout: WAIT,
  });
}

// The next message on `topic`, listened for from now on; rejected after `wait` ms.
function nextMessage(client, topic, wait = WAIT) {
  return new Promise((resolve, reject) => {
    const listener = (got, payload, packet) => {
      if (got !== topic) {
        return;
      }
      clearTimeout(timer);
      client.removeListener('message', listener);
      resolve({ payload: payload.toString(), packet });
    };
    const timer = setTimeout(() => {
      client.removeListener('message', listener);
      reject(new Error(`nothing on ${topic} within ${wait} ms`));
    }, wait);
    client.on('message', listener);
  });
}

function check(condition, what) {
  if (!condition) {
    throw new Error(what);
  }
}

async function main() {
  const topic = `${unique('mqttjs')}/t`;
  const subscriber = await connect(5, 'sub');
  const publisher = await connect(4, 'pub311');
  const publisher5 = await connect(5, 'pub5');

  const granted = await subscriber.subscribeAsync(topic, { qos: 2 });
  check(granted.length === 1 && granted[0].qos === 2, `SUBACK ${JSON.stringify(granted)}`);
  for (const qos of [0, 1, 2]) {
    const next = nextMessage(subscriber, topic);
    await publisher.publishAsync(topic, `at qos ${qos}`, { qos });
    const { payload, packet } = await next;
    check(payload === `at qos ${qos}`, `got ${JSON.stringify(payload)} for qos ${qos}`);
    check(packet.qos === qos, `sent at qos ${qos}, delivered at ${packet.qos}`);
  }

  const next = nextMessage(subscriber, topic);
  await publisher5.publishAsync(topic, 'with properties', {
    qos: 1,
    properties: {
      userProperties: { row: '7' },
      responseTopic: `${topic}/reply`,
      correlationData: Buffer.from([1, 2, 3]),
      contentType: 'text/plain',
      payloadFormatIndicator: true,
    },
  });
  const { payload, packet } = await next;
  const properties = packet.properties || {};
  check(payload === 'with properties', `got ${JSON.stringify(payload)}`);
  check(
    properties.userProperties && properties.userProperties.row === '7',
    `user properties ${JSON.stringify(properties.userProperties)}`,
  );
  check(properties.responseTopic === `${topic}/reply`, `response topic ${properties.responseTopic}`);
  check(
    Buffer.isBuffer(properties.correlationData) &&
      properties.correlationData.equals(Buffer.from([1, 2, 3])),
    `correlation data ${JSON.stringify(properties.correlationData)}`,
  );
  check(properties.contentType === 'text/plain', `content type ${properties.contentType}`);
  check(properties.payloadFormatIndicator === true, 'payload format indicator lost');

  const retained = `${unique('mqttjs')}/retained`;
  await publisher.publishAsync(retained, 'kept', { qos: 1, retain: true });
  const late = await connect(5, 'late');
  const replayed = nextMessage(late, retained);
  await late.subscribeAsync(retained, { qos: 1 });
  const got = await replayed;
  check(got.payload === 'kept', `retained ${JSON.stringify(got.payload)}`);
  check(got.packet.retain === true, 'a retained message came without the retain flag');

  await publisher.publishAsync(retained, '', { qos: 1, retain: true });
  const later = await connect(4, 'later');
  const nothing = nextMessage(later, retained, 2000).then(
    (message) => {
      throw new Error(`a cleared retained message came: ${JSON.stringify(message.payload)}`);
    },
    () => undefined,
  );
  await later.subscribeAsync(retained, { qos: 1 });
  await nothing;

  await Promise.all([subscriber, publisher, publisher5, late, later].map((c) => c.endAsync()));
  console.log('ok mqttjs');
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
