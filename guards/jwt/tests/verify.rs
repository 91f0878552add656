//! The jwt guard against tokens signed here with RSA, EC and Ed25519 keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use zilla_engine::events::Events;
use zilla_engine::guard::{ConnectionSessions, Guard, GuardSession};
use zilla_guard_jwt::JwtGuard;
use zilla_guard_jwt::keys::parse_jwks;
use zilla_guard_jwt::verify::{Claims, Rejection};

const JWKS: &[u8] = include_bytes!("keys/jwks.json");
const RSA: &[u8] = include_bytes!("keys/rsa.pem");
const EC: &[u8] = include_bytes!("keys/ec256.pem");
const ED: &[u8] = include_bytes!("keys/ed25519.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn guard() -> JwtGuard {
    let claims = Claims {
        issuer: Some("https://auth.example.com".into()),
        audience: Some("https://api.example.com".into()),
        roles: "scope".into(),
        identity: "sub".into(),
        attributes: BTreeMap::from([("tenant".to_owned(), "org.tenant".to_owned())]),
        challenge: Some(Duration::from_secs(30)),
    };
    JwtGuard::new(claims, parse_jwks(JWKS).unwrap(), Events::default())
}

fn claims() -> Value {
    json!({
        "iss": "https://auth.example.com",
        "aud": "https://api.example.com",
        "sub": "alice",
        "scope": "read:items write:items",
        "exp": now() + 300,
        "org": {"tenant": "acme"},
    })
}

fn sign(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::PS256 => {
            EncodingKey::from_rsa_pem(RSA).unwrap()
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED).unwrap(),
        Algorithm::HS256 => EncodingKey::from_secret(b"secret"),
        other => panic!("{other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut claims = claims();
    change(claims.as_object_mut().unwrap());
    claims
}

fn verdict(token: &str) -> Result<zilla_guard_jwt::verify::JwtSession, Rejection> {
    guard().authorize(token, SystemTime::now())
}

#[test]
fn valid_tokens_of_every_key_type_are_admitted() {
    for (alg, kid) in [
        (Algorithm::RS256, "rsa1"),
        (Algorithm::ES256, "ec1"),
        (Algorithm::EdDSA, "ed1"),
    ] {
        let session = verdict(&sign(alg, kid, &claims())).unwrap();
        assert_eq!(session.identity(), Some("alice"), "{alg:?}");
        assert!(session.verify(&["read:items".into()]));
        assert!(session.verify(&["read:items".into(), "write:items".into()]));
        assert!(!session.verify(&["admin".into()]));
        assert_eq!(session.attribute("tenant").as_deref(), Some("acme"));
        let expires = session.expires_at().unwrap();
        assert_eq!(
            expires
                .duration_since(session.expiring_at().unwrap())
                .unwrap(),
            Duration::from_secs(30)
        );
    }
}

/// Members Zilla's schema lets through are accepted; `key_ops` is honoured: a key whose
/// operations leave out `verify` verifies nothing.
#[test]
fn other_jwk_members_are_accepted_and_key_ops_must_allow_verify() {
    let mut document: Value = serde_json::from_slice(JWKS).unwrap();
    for key in document["keys"].as_array_mut().unwrap() {
        let kid = key["kid"].as_str().unwrap().to_owned();
        key["x5t"] = json!("not-checked");
        key["key_ops"] = if kid == "rsa1" {
            json!(["sign"])
        } else {
            json!(["verify"])
        };
    }
    let text = serde_json::to_vec(&document).unwrap();
    let keys = parse_jwks(&text).unwrap();
    let guard = JwtGuard::new(
        Claims {
            issuer: None,
            audience: None,
            roles: "scope".into(),
            identity: "sub".into(),
            attributes: BTreeMap::new(),
            challenge: None,
        },
        keys,
        Events::default(),
    );
    for (alg, kid, admitted) in [
        (Algorithm::RS256, "rsa1", false),
        (Algorithm::ES256, "ec1", true),
        (Algorithm::EdDSA, "ed1", true),
    ] {
        let session = guard.authorize(&sign(alg, kid, &claims()), SystemTime::now());
        assert_eq!(session.is_ok(), admitted, "{kid}: {session:?}");
    }
    // Inline, the same members load, and a key that may not verify fails the load.
    let mut inline: zilla_guard_jwt::config::KeyConfig =
        serde_json::from_value(document["keys"][1].clone()).unwrap();
    assert!(zilla_guard_jwt::keys::key(&inline).is_ok());
    inline.key_ops = Some(vec!["sign".into()]);
    let refused = zilla_guard_jwt::keys::key(&inline)
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("`key_ops` must allow `verify`"),
        "{refused}"
    );
}

#[test]
fn key_material_in_standard_base64_is_read_as_base64url() {
    let mut document: Value = serde_json::from_slice(JWKS).unwrap();
    let mut rewritten = 0;
    for key in document["keys"].as_array_mut().unwrap() {
        for member in ["n", "x", "y"] {
            if let Some(Value::String(text)) = key.get_mut(member) {
                let mut standard = text.replace('-', "+").replace('_', "/");
                while standard.len() % 4 != 0 {
                    standard.push('=');
                }
                rewritten += usize::from(standard != *text);
                *text = standard;
            }
        }
    }
    assert_eq!(
        rewritten, 4,
        "every rewritten member differs from its base64url form"
    );
    let text = serde_json::to_vec(&document).unwrap();
    let guard = JwtGuard::new(
        Claims {
            issuer: None,
            audience: None,
            roles: "scope".into(),
            identity: "sub".into(),
            attributes: BTreeMap::new(),
            challenge: None,
        },
        parse_jwks(&text).unwrap(),
        Events::default(),
    );
    for (alg, kid) in [
        (Algorithm::RS256, "rsa1"),
        (Algorithm::ES256, "ec1"),
        (Algorithm::EdDSA, "ed1"),
    ] {
        let session = guard.authorize(&sign(alg, kid, &claims()), SystemTime::now());
        assert!(session.is_ok(), "{alg:?}: {session:?}");
    }
}

#[test]
fn each_failed_check_is_refused_for_its_reason() {
    let t = now();
    let cases: Vec<(String, Rejection)> = vec![
        (
            sign(
                Algorithm::RS256,
                "rsa1",
                &with(|c| {
                    c.insert("exp".into(), json!(t - 10));
                }),
            ),
            Rejection::Expired,
        ),
        (
            sign(
                Algorithm::RS256,
                "rsa1",
                &with(|c| {
                    c.insert("nbf".into(), json!(t + 120));
                }),
            ),
            Rejection::NotYetValid,
        ),
        (
            sign(
                Algorithm::RS256,
                "rsa1",
                &with(|c| {
                    c.insert("iss".into(), json!("https://evil"));
                }),
            ),
            Rejection::Issuer,
        ),
        (
            sign(
                Algorithm::RS256,
                "rsa1",
                &with(|c| {
                    c.remove("iss");
                }),
            ),
            Rejection::Issuer,
        ),
        (
            sign(
                Algorithm::RS256,
                "rsa1",
                &with(|c| {
                    c.insert("aud".into(), json!("other"));
                }),
            ),
            Rejection::Audience,
        ),
        (
            sign(Algorithm::RS256, "nope", &claims()),
            Rejection::UnknownKey("nope".into()),
        ),
        (
            sign(Algorithm::RS384, "rsa1", &claims()),
            Rejection::AlgorithmMismatch {
                token: "RS384".into(),
                key: "RS256".into(),
            },
        ),
        (
            sign(Algorithm::HS256, "rsa1", &claims()),
            Rejection::AlgorithmMismatch {
                token: "HS256".into(),
                key: "RS256".into(),
            },
        ),
        (
            sign(Algorithm::ES256, "rsa1", &claims()),
            Rejection::AlgorithmMismatch {
                token: "ES256".into(),
                key: "RS256".into(),
            },
        ),
        (
            sign(
                Algorithm::RS256,
                "rsa1",
                &with(|c| {
                    c.insert("sub".into(), json!(7));
                }),
            ),
            Rejection::Identity("sub".into()),
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(verdict(&token).unwrap_err(), expected);
    }
}

#[test]
fn a_tampered_token_fails_its_signature() {
    let token = sign(Algorithm::RS256, "rsa1", &claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let forged = sign(
        Algorithm::RS256,
        "rsa1",
        &with(|c| {
            c.insert("sub".into(), json!("mallory"));
        }),
    );
    parts[1] = forged.split('.').nth(1).unwrap().to_owned();
    assert_eq!(
        verdict(&parts.join(".")).unwrap_err(),
        Rejection::BadSignature
    );
    // A signature from another key of the same type.
    let other = sign(Algorithm::ES256, "ec1", &claims());
    let mut ec: Vec<&str> = other.split('.').collect();
    let again = sign(
        Algorithm::ES256,
        "ec1",
        &with(|c| {
            c.insert("scope".into(), json!("admin"));
        }),
    );
    ec[2] = again.split('.').nth(2).unwrap();
    assert_eq!(verdict(&ec.join(".")).unwrap_err(), Rejection::BadSignature);
}

#[test]
fn malformed_tokens_are_refused() {
    for token in [
        "",
        "a.b.c",
        "not a token",
        "eyJhbGciOiJub25lIn0.e30.",
        "....",
    ] {
        assert!(
            matches!(verdict(token), Err(Rejection::Malformed(_))),
            "{token}"
        );
    }
    let no_kid = {
        let key = EncodingKey::from_rsa_pem(RSA).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims(), &key).unwrap()
    };
    assert_eq!(verdict(&no_kid).unwrap_err(), Rejection::MissingKeyId);
}

#[test]
fn roles_come_as_an_array_or_a_spaced_string_and_a_missing_claim_admits_no_guarded_route() {
    let array = verdict(&sign(
        Algorithm::RS256,
        "rsa1",
        &with(|c| {
            c.insert("scope".into(), json!(["a", "b"]));
        }),
    ))
    .unwrap();
    assert!(array.verify(&["a".into(), "b".into()]));
    assert!(!array.verify(&["a b".into()]));
    let none = verdict(&sign(
        Algorithm::RS256,
        "rsa1",
        &with(|c| {
            c.remove("scope");
        }),
    ))
    .unwrap();
    assert!(!none.verify(&[]));
    assert!(array.verify(&[]));
}

#[test]
fn audience_may_be_a_list_and_dates_are_optional() {
    let session = verdict(&sign(
        Algorithm::RS256,
        "rsa1",
        &with(|c| {
            c.insert("aud".into(), json!(["x", "https://api.example.com"]));
            c.remove("exp");
            c.insert("nbf".into(), json!(now() + 2));
        }),
    ))
    .unwrap();
    assert_eq!(session.expires_at(), None);
}

#[test]
fn a_connection_verifies_a_token_once_and_a_newer_token_extends_the_session() {
    struct Counting(JwtGuard, std::sync::atomic::AtomicUsize);
    impl Guard for Counting {
        fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.0.reauthorize(credentials)
        }
    }
    let guard = Counting(guard(), Default::default());
    let sessions = ConnectionSessions::default();
    let first = sign(Algorithm::RS256, "rsa1", &claims());
    let a = sessions.reauthorize("ns:jwt0", &guard, &first).unwrap();
    let b = sessions.reauthorize("ns:jwt0", &guard, &first).unwrap();
    assert_eq!(guard.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(Arc::ptr_eq(&a, &b));
    let expires = a.expires_at().unwrap();
    let later = sign(
        Algorithm::RS256,
        "rsa1",
        &with(|c| {
            c.insert("exp".into(), json!(now() + 900));
        }),
    );
    let c = sessions.reauthorize("ns:jwt0", &guard, &later).unwrap();
    assert!(Arc::ptr_eq(&a, &c), "same identity joins the session");
    assert!(a.expires_at().unwrap() > expires + Duration::from_secs(500));
    // Fewer roles: a session of its own, the shared one untouched.
    let fewer = sign(
        Algorithm::RS256,
        "rsa1",
        &with(|c| {
            c.insert("scope".into(), json!("read:items"));
        }),
    );
    let d = sessions.reauthorize("ns:jwt0", &guard, &fewer).unwrap();
    assert!(!Arc::ptr_eq(&a, &d));
    assert!(a.verify(&["write:items".into()]));
    // Another connection shares nothing.
    let other = ConnectionSessions::default();
    let e = other.reauthorize("ns:jwt0", &guard, &first).unwrap();
    assert!(!Arc::ptr_eq(&a, &e));
    // A refused token is not cached as admitted.
    assert!(sessions.reauthorize("ns:jwt0", &guard, "x.y.z").is_none());
}

#[test]
fn a_session_is_challenged_once_per_expiry() {
    let guard = guard();
    let sessions = ConnectionSessions::default();
    let token = sign(
        Algorithm::RS256,
        "rsa1",
        &with(|c| {
            c.insert("exp".into(), json!(now() + 20));
        }),
    );
    let session = sessions.reauthorize("ns:jwt0", &guard, &token).unwrap();
    let now = SystemTime::now();
    assert!(
        session.expiring_at().unwrap() <= now,
        "challenge 30 s > lifetime 20 s"
    );
    assert!(session.challenge(now));
    assert!(!session.challenge(now), "claimed once");
    let renewed = sign(
        Algorithm::RS256,
        "rsa1",
        &with(|c| {
            c.insert("exp".into(), json!(now_secs(now) + 40));
        }),
    );
    sessions.reauthorize("ns:jwt0", &guard, &renewed).unwrap();
    assert!(
        !session.challenge(now),
        "next challenge only at the new expiring-at"
    );
    assert!(session.challenge(now + Duration::from_secs(15)));
}

fn now_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{0,64}"
    }

    proptest! {
        #[test]
        fn any_text_is_refused_or_admitted_without_panicking(token in ".{0,256}") {
            let _ = verdict(&token);
        }

        #[test]
        fn three_base64url_segments_are_refused(a in segment(), b in segment(), c in segment()) {
            let token = format!("{a}.{b}.{c}");
            prop_assert!(verdict(&token).is_err());
        }

        #[test]
        fn a_valid_header_with_any_payload_and_signature_is_refused(b in segment(), c in segment()) {
            let token = sign(Algorithm::RS256, "rsa1", &claims());
            let header = token.split('.').next().unwrap();
            let forged = format!("{header}.{b}.{c}");
            prop_assert!(verdict(&forged).is_err());
        }

        #[test]
        fn any_bytes_as_a_jwks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_jwks(&bytes);
        }
    }
}
