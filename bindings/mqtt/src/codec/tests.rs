//! Round trips of every packet for both versions, and the reason codes of bad input.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::*;

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 é/_-]{0,12}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,3}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    option::of(0u8..=1)
}

fn user() -> impl Strategy<Value = Vec<(String, String)>> {
    vec((text(), text()), 0..3)
}

/// Properties allowed in `context`, each set or not.
fn properties(context: PropertyContext) -> BoxedStrategy<Properties> {
    use PropertyContext::*;
    match context {
        Connect => (
            option::of(any::<u32>()),
            option::of(1u16..),
            option::of(any::<u16>()),
            option::of(1u32..),
            flag(),
            flag(),
            option::of(text()),
            option::of(binary()),
            user(),
        )
            .prop_map(|(se, rm, tam, mps, rpi, rri, am, ad, user)| {
                let auth_data = am.as_ref().and(ad);
                Properties {
                    session_expiry: se,
                    receive_maximum: rm,
                    topic_alias_maximum: tam,
                    maximum_packet_size: mps,
                    request_problem_info: rpi,
                    request_response_info: rri,
                    auth_method: am,
                    auth_data,
                    user,
                    ..Properties::default()
                }
            })
            .boxed(),
        Will | Publish => (
            flag(),
            option::of(any::<u32>()),
            option::of(text()),
            option::of(name()),
            option::of(binary()),
            option::of(any::<u32>()),
            option::of(1u16..),
            vec(1u32..=MAX_VARINT, 0..3),
            user(),
        )
            .prop_map(move |(pf, me, ct, rt, cd, wd, ta, ids, user)| Properties {
                payload_format: pf.map(|_| 0),
                message_expiry: me,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                will_delay: if context == Will { wd } else { None },
                topic_alias: if context == Publish { ta } else { None },
                subscription_ids: if context == Publish { ids } else { Vec::new() },
                user,
                ..Properties::default()
            })
            .boxed(),
        ConnAck => (
            (
                option::of(any::<u32>()),
                option::of(text()),
                option::of(any::<u16>()),
                option::of(text()),
                option::of(binary()),
                option::of(text()),
                option::of(text()),
            ),
            (
                option::of(text()),
                option::of(1u16..),
                option::of(any::<u16>()),
                flag(),
                flag(),
                option::of(1u32..),
                flag(),
                flag(),
                flag(),
                user(),
            ),
        )
            .prop_map(
                |(
                    (se, aci, ska, am, ad, ri, sr),
                    (rs, rm, tam, mq, ra, mps, wa, sia, sa, user),
                )| {
                    Properties {
                        session_expiry: se,
                        assigned_client_id: aci,
                        server_keep_alive: ska,
                        auth_method: am,
                        auth_data: ad,
                        response_info: ri,
                        server_reference: sr,
                        reason_string: rs,
                        receive_maximum: rm,
                        topic_alias_maximum: tam,
                        maximum_qos: mq,
                        retain_available: ra,
                        maximum_packet_size: mps,
                        wildcard_available: wa,
                        subscription_ids_available: sia,
                        shared_available: sa,
                        user,
                        ..Properties::default()
                    }
                },
            )
            .boxed(),
        Subscribe => (option::of(1u32..=MAX_VARINT), user())
            .prop_map(|(id, user)| Properties {
                subscription_ids: id.into_iter().collect(),
                user,
                ..Properties::default()
            })
            .boxed(),
        Unsubscribe => user()
            .prop_map(|user| Properties {
                user,
                ..Properties::default()
            })
            .boxed(),
        Ack | SubAck | UnsubAck => (option::of(text()), user())
            .prop_map(|(rs, user)| Properties {
                reason_string: rs,
                user,
                ..Properties::default()
            })
            .boxed(),
        Disconnect => (
            option::of(any::<u32>()),
            option::of(text()),
            option::of(text()),
            user(),
        )
            .prop_map(|(se, rs, sr, user)| Properties {
                session_expiry: se,
                reason_string: rs,
                server_reference: sr,
                user,
                ..Properties::default()
            })
            .boxed(),
        Auth => (text(), option::of(binary()), option::of(text()), user())
            .prop_map(|(am, ad, rs, user)| Properties {
                auth_method: Some(am),
                auth_data: ad,
                reason_string: rs,
                user,
                ..Properties::default()
            })
            .boxed(),
    }
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V3_1_1), Just(Version::V5)]
}

fn reason() -> impl Strategy<Value = ReasonCode> {
    any::<u8>().prop_map(ReasonCode)
}

/// A packet valid for `version`, with what the version cannot carry left out.
fn packet(version: Version) -> BoxedStrategy<Packet> {
    let v5 = version == Version::V5;
    let props = move |context| {
        if v5 {
            properties(context)
        } else {
            Just(Properties::default()).boxed()
        }
    };
    let will = (
        props(PropertyContext::Will),
        name(),
        binary(),
        qos(),
        any::<bool>(),
    )
        .prop_map(|(properties, topic, payload, qos, retain)| Will {
            properties,
            topic,
            payload,
            qos,
            retain,
        });
    let connect = (
        any::<bool>(),
        any::<u16>(),
        props(PropertyContext::Connect),
        text(),
        option::of(will),
        option::of(text()),
        option::of(binary()),
    )
        .prop_map(
            move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    version,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        );
    let connack = (any::<bool>(), reason(), props(PropertyContext::ConnAck)).prop_map(
        move |(session_present, reason, properties)| {
            let reason = if v5 || connack::v3_round_trips(reason) {
                reason
            } else {
                ReasonCode::SUCCESS
            };
            Packet::ConnAck(ConnAck {
                session_present: session_present && !reason.is_error(),
                reason,
                properties,
            })
        },
    );
    let publish = (
        any::<bool>(),
        qos(),
        any::<bool>(),
        name(),
        1u16..,
        props(PropertyContext::Publish),
        binary(),
    )
        .prop_map(|(dup, qos, retain, topic, id, properties, payload)| {
            Packet::Publish(Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties,
                payload,
            })
        });
    let ack = (0u8..4, 1u16.., reason(), props(PropertyContext::Ack)).prop_map(
        move |(kind, packet_id, reason, properties)| {
            let ack = Ack {
                packet_id,
                reason: if v5 { reason } else { ReasonCode::SUCCESS },
                properties,
            };
            match kind {
                0 => Packet::PubAck(ack),
                1 => Packet::PubRec(ack),
                2 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        },
    );
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
            SubscriptionOptions {
                qos,
                no_local: nl && v5,
                retain_as_published: rap && v5,
                retain_handling: match rh {
                    _ if !v5 => RetainHandling::OnSubscribe,
                    0 => RetainHandling::OnSubscribe,
                    1 => RetainHandling::OnNewSubscribe,
                    _ => RetainHandling::Never,
                },
            }
        });
    let subscribe = (
        1u16..,
        props(PropertyContext::Subscribe),
        vec((text(), options), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        });
    let suback = (1u16.., props(PropertyContext::SubAck), vec(reason(), 0..4)).prop_map(
        move |(packet_id, properties, reasons)| {
            let reasons = reasons
                .into_iter()
                .map(|r| match r.0 {
                    _ if v5 => r,
                    0..=2 => r,
                    _ => ReasonCode(0x80),
                })
                .collect();
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        },
    );
    let unsubscribe = (
        1u16..,
        props(PropertyContext::Unsubscribe),
        vec(text(), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        });
    let unsuback = (
        1u16..,
        props(PropertyContext::UnsubAck),
        vec(reason(), 0..4),
    )
        .prop_map(move |(packet_id, properties, reasons)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons: if v5 { reasons } else { Vec::new() },
            })
        });
    let disconnect =
        (reason(), props(PropertyContext::Disconnect)).prop_map(move |(reason, properties)| {
            Packet::Disconnect(Disconnect {
                reason: if v5 { reason } else { ReasonCode::SUCCESS },
                properties,
            })
        });
    let mut strategies = vec![
        connect.boxed(),
        connack.boxed(),
        publish.boxed(),
        ack.boxed(),
        subscribe.boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        disconnect.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
    ];
    if v5 {
        let auth = (
            prop_oneof![Just(0x00u8), Just(0x18), Just(0x19)],
            properties(PropertyContext::Auth),
        )
            .prop_map(|(reason, properties)| {
                Packet::Auth(Auth {
                    reason: ReasonCode(reason),
                    properties,
                })
            });
        strategies.push(auth.boxed());
    }
    proptest::strategy::Union::new(strategies).boxed()
}

fn versioned() -> impl Strategy<Value = (Version, Packet)> {
    version().prop_flat_map(|version| packet(version).prop_map(move |packet| (version, packet)))
}

fn decoder(version: Version) -> Decoder {
    Decoder {
        version: Some(version),
        maximum_packet_size: MAX_VARINT + 5,
    }
}

proptest! {
    #[test]
    fn every_packet_round_trips((version, packet) in versioned()) {
        let mut buffer = BytesMut::new();
        encode(&packet, version, &mut buffer).unwrap();
        let wire = buffer.clone();
        let decoded = decoder(version).decode(&mut buffer).unwrap();
        prop_assert_eq!(decoded, Some(packet));
        prop_assert!(buffer.is_empty());
        // Every strict prefix asks for more bytes rather than failing.
        for cut in 0..wire.len() {
            let mut prefix = BytesMut::from(&wire[..cut]);
            prop_assert_eq!(decoder(version).decode(&mut prefix).unwrap(), None);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64), v5 in any::<bool>()) {
        let mut decoder = Decoder::new(1024);
        if v5 { decoder.version = Some(Version::V5) }
        let mut buffer = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decoder.decode(&mut buffer) {}
    }
}

fn decode_v5(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    decoder(Version::V5).decode(&mut BytesMut::from(bytes))
}

fn reason_of(bytes: &[u8]) -> ReasonCode {
    decode_v5(bytes).unwrap_err().reason
}

#[test]
fn oversized_packets_are_refused_from_their_header() {
    let decoder = Decoder::new(100);
    // A PUBLISH announcing 200 bytes: refused with only the fixed header read.
    assert_eq!(
        decoder.frame_len(&[0x30, 0xc8, 0x01]).unwrap_err().reason,
        ReasonCode::PACKET_TOO_LARGE
    );
    assert_eq!(decoder.frame_len(&[0x30]).unwrap(), None);
    assert_eq!(decoder.frame_len(&[0x30, 0x05]).unwrap(), Some(7));
    assert_eq!(
        decoder
            .frame_len(&[0x30, 0xff, 0xff, 0xff, 0xff])
            .unwrap_err()
            .reason,
        ReasonCode::MALFORMED_PACKET
    );
}

#[test]
fn bad_input_gets_the_spec_reason_code() {
    // Reserved flags on PUBACK.
    assert_eq!(
        reason_of(&[0x41, 0x02, 0x00, 0x01]),
        ReasonCode::MALFORMED_PACKET
    );
    // Packet identifier 0.
    assert_eq!(
        reason_of(&[0x40, 0x02, 0x00, 0x00]),
        ReasonCode::MALFORMED_PACKET
    );
    // QoS 3.
    assert_eq!(
        reason_of(&[0x36, 0x04, 0x00, 0x01, b'a', 0x00]),
        ReasonCode::MALFORMED_PACKET
    );
    // A wildcard in a topic name.
    assert_eq!(
        reason_of(&[0x30, 0x04, 0x00, 0x01, b'#', 0x00]),
        ReasonCode::TOPIC_NAME_INVALID
    );
    // Invalid UTF-8 in a topic name.
    assert_eq!(
        reason_of(&[0x30, 0x04, 0x00, 0x01, 0xff, 0x00]),
        ReasonCode::MALFORMED_PACKET
    );
    // U+0000 in a topic name.
    assert_eq!(
        reason_of(&[0x30, 0x04, 0x00, 0x01, 0x00, 0x00]),
        ReasonCode::MALFORMED_PACKET
    );
    // Topic alias given twice.
    assert_eq!(
        reason_of(&[
            0x30, 0x0a, 0x00, 0x01, b'a', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02
        ]),
        ReasonCode::PROTOCOL_ERROR
    );
    // A CONNACK-only property in PUBLISH.
    assert_eq!(
        reason_of(&[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x24, 0x01]),
        ReasonCode::MALFORMED_PACKET
    );
    // Empty topic without an alias.
    assert_eq!(
        reason_of(&[0x30, 0x03, 0x00, 0x00, 0x00]),
        ReasonCode::TOPIC_NAME_INVALID
    );
    // Payload format says UTF-8, payload is not.
    assert_eq!(
        reason_of(&[0x30, 0x07, 0x00, 0x01, b'a', 0x02, 0x01, 0x01, 0xff]),
        ReasonCode::PAYLOAD_FORMAT_INVALID
    );
    // SUBSCRIBE without filters; retain handling 3.
    assert_eq!(
        reason_of(&[0x82, 0x03, 0x00, 0x01, 0x00]),
        ReasonCode::PROTOCOL_ERROR
    );
    assert_eq!(
        reason_of(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30]),
        ReasonCode::PROTOCOL_ERROR
    );
    // Trailing bytes after PINGREQ's empty body.
    assert_eq!(reason_of(&[0xc0, 0x01, 0x00]), ReasonCode::MALFORMED_PACKET);
    // Receive maximum 0 in CONNECT.
    let mut connect = vec![
        0x10, 0x0f, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c,
    ];
    connect.extend_from_slice(&[0x03, 0x21, 0x00, 0x00, 0x00, 0x00]);
    assert_eq!(reason_of(&connect), ReasonCode::PROTOCOL_ERROR);
    // Protocol level 3 (MQTT 3.1).
    let old = [
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x03, 0x02, 0x00, 0x3c, 0x00, 0x00,
    ];
    assert_eq!(reason_of(&old), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    // AUTH does not exist in 3.1.1.
    assert_eq!(
        decoder(Version::V3_1_1)
            .decode(&mut BytesMut::from(&[0xf0, 0x00][..]))
            .unwrap_err()
            .reason,
        ReasonCode::MALFORMED_PACKET
    );
}

#[test]
fn connect_sets_the_version() {
    let mut decoder = Decoder::new(1024);
    let connect = [
        0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00,
    ];
    let packet = decoder
        .decode(&mut BytesMut::from(&connect[..]))
        .unwrap()
        .unwrap();
    assert!(matches!(packet, Packet::Connect(c) if c.version == Version::V3_1_1 && c.clean_start));
    assert_eq!(decoder.version, Some(Version::V3_1_1));
}
