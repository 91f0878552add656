//! Any text as a token: verification refuses or admits, never panics.
#![no_main]

use std::collections::BTreeMap;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use zilla_engine::events::Events;
use zilla_guard_jwt::JwtGuard;
use zilla_guard_jwt::keys::parse_jwks;
use zilla_guard_jwt::verify::Claims;

const JWKS: &[u8] = include_bytes!("../../tests/keys/jwks.json");

fuzz_target!(|data: &[u8]| {
    // The JWKS parser takes the bytes too: a JWKS origin is untrusted input.
    let _ = parse_jwks(data);
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(keys) = parse_jwks(JWKS) else {
        return;
    };
    let claims = Claims {
        issuer: Some("https://auth.example.com".into()),
        audience: Some("https://api.example.com".into()),
        roles: "scope".into(),
        identity: "sub".into(),
        attributes: BTreeMap::from([("tenant".to_owned(), "org.tenant".to_owned())]),
        challenge: None,
    };
    let guard = JwtGuard::new(claims, keys, Events::default());
    let _ = guard.authorize(token, SystemTime::now());
});
