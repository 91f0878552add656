//! OAUTHBEARER client messages as the kafka proxy reads them at the edge, before any guard
//! sees the token: every input must give a token or an error, and a token read must frame
//! again into a message that reads back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zilla_binding_kafka::wire::{oauth_bearer_client_first, oauth_bearer_token};

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = oauth_bearer_token(data) {
        let framed = oauth_bearer_client_first(token);
        assert_eq!(oauth_bearer_token(&framed), Ok(token));
    }
});
