//! Any header, cookie and query text through the http server's credential patterns: a
//! credential or nothing, never a panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use zilla_binding_http::config::CredentialsConfig;
use zilla_binding_http::credentials::Credentials;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let map = |name: &str, pattern: &str| Some(BTreeMap::from([(name.to_owned(), pattern.to_owned())]));
    let config = CredentialsConfig {
        headers: map("authorization", "Bearer {credentials}"),
        query: map("access_token", "{credentials}"),
        cookies: map("session", "{credentials}"),
    };
    let Ok(credentials) = Credentials::compile(&config) else {
        return;
    };
    let mut builder = http::Request::builder();
    if let Ok(uri) = format!("/path?{text}").parse::<http::Uri>() {
        builder = builder.uri(uri);
    }
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        builder = builder
            .header("authorization", value.clone())
            .header("cookie", value);
    }
    if let Ok(request) = builder.body(()) {
        let _ = credentials.extract(&request);
    }
});
