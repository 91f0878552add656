//! Finding a request's credentials with the `authorization.<guard>.credentials` patterns:
//! `Bearer {credentials}` in a header, `{credentials}` in a cookie or query parameter, or
//! `Basic {username}:{password}` in a header (the decoded `username:password` is the
//! credential then).

use std::borrow::Cow;

use http::header::{COOKIE, HeaderName};
use regex::Regex;

use crate::config::CredentialsConfig;

const PLACEHOLDER: &str = "{credentials}";

/// The compiled credential patterns of one guard.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    cookies: Vec<(String, Regex)>,
    headers: Vec<(HeaderName, HeaderPattern)>,
    query: Vec<(String, Regex)>,
}

#[derive(Debug, Clone)]
enum HeaderPattern {
    /// The whole value is `before`, the credential (no white space), then `after`: read by
    /// stripping, since it runs on every request.
    Template { before: String, after: String },
    /// `Basic` followed by base64 of a text that matches this.
    Basic(Regex),
}

impl Credentials {
    /// Compiles `config`; errors name the offending pattern.
    pub fn compile(config: &CredentialsConfig) -> Result<Self, String> {
        let mut credentials = Self::default();
        for (name, pattern) in config.cookies.iter().flatten() {
            let value = template(pattern, "[^;\\s]+")?;
            let regex = Regex::new(&format!(
                "(?:^|;)\\s*{}={value}\\s*(?:;|$)",
                regex::escape(name)
            ))
            .map_err(|error| error.to_string())?;
            credentials.cookies.push((name.clone(), regex));
        }
        for (name, pattern) in config.headers.iter().flatten() {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            credentials.headers.push((header, header_pattern(pattern)?));
        }
        for (name, pattern) in config.query.iter().flatten() {
            let regex = Regex::new(&format!("^{}$", template(pattern, ".+")?))
                .map_err(|error| error.to_string())?;
            credentials.query.push((name.clone(), regex));
        }
        Ok(credentials)
    }

    /// The first credential found: in cookies, then headers, then query parameters. A token
    /// in a header is borrowed from the request: it runs on every guarded request.
    pub fn extract<'r, B>(&self, request: &'r http::Request<B>) -> Option<Cow<'r, str>> {
        self.in_cookies(request)
            .map(Cow::Owned)
            .or_else(|| self.in_headers(request))
            .or_else(|| self.in_query(request).map(Cow::Owned))
    }

    /// What [`Self::extract`] would find when credentials come from one header template and
    /// nowhere else, before its characters are checked: the bytes to look up among the tokens
    /// a connection has already verified
    /// ([`zilla_engine::guard::ConnectionSessions::cached`]), so a token resent on every
    /// request is not scanned again. With a single source every cached token came through the
    /// same template and passed the same checks, so equal bytes would pass them too; with
    /// several (cookies, query parameters, a `Basic` header, a second header), a token cached
    /// from one could match bytes another would refuse, so there is no candidate.
    pub fn header_candidate<'r, B>(&self, request: &'r http::Request<B>) -> Option<&'r [u8]> {
        if !self.cookies.is_empty() || !self.query.is_empty() {
            return None;
        }
        let [(name, HeaderPattern::Template { before, after })] = self.headers.as_slice() else {
            return None;
        };
        let value = request.headers().get(name)?.as_bytes().trim_ascii();
        value
            .strip_prefix(before.as_bytes())?
            .strip_suffix(after.as_bytes())
    }

    fn in_cookies<B>(&self, request: &http::Request<B>) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        // HTTP/2 may split cookies over several fields.
        let fields = request.headers().get_all(COOKIE);
        self.cookies.iter().find_map(|(_, regex)| {
            fields.iter().find_map(|field| {
                let field = field.to_str().ok()?;
                let captures = regex.captures(field)?;
                Some(captures.get(1)?.as_str().to_owned())
            })
        })
    }

    fn in_headers<'r, B>(&self, request: &'r http::Request<B>) -> Option<Cow<'r, str>> {
        self.headers.iter().find_map(|(name, pattern)| {
            request.headers().get_all(name).iter().find_map(|value| {
                let value = value.as_bytes().trim_ascii();
                match pattern {
                    HeaderPattern::Template { before, after } => {
                        let credential = value.strip_prefix(before.as_bytes())?;
                        let credential = credential.strip_suffix(after.as_bytes())?;
                        if credential.is_empty() || !visible_ascii(credential) {
                            return None;
                        }
                        std::str::from_utf8(credential).ok().map(Cow::Borrowed)
                    }
                    HeaderPattern::Basic(format) => {
                        let value = std::str::from_utf8(value).ok()?;
                        let (scheme, encoded) = value.split_once(char::is_whitespace)?;
                        if !scheme.eq_ignore_ascii_case("basic") {
                            return None;
                        }
                        let decoded = decode_base64(encoded.trim())?;
                        let decoded = String::from_utf8(decoded).ok()?;
                        format.is_match(&decoded).then_some(Cow::Owned(decoded))
                    }
                }
            })
        })
    }

    fn in_query<B>(&self, request: &http::Request<B>) -> Option<String> {
        let query = request.uri().query()?;
        self.query.iter().find_map(|(name, regex)| {
            query.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                if key != name {
                    return None;
                }
                Some(regex.captures(value)?.get(1)?.as_str().to_owned())
            })
        })
    }
}

/// Whether `bytes` are all visible ASCII (no white space), as `HeaderValue::to_str` reads a
/// value. Folded without an early exit so that it compiles to vector instructions: a bearer
/// token is hundreds of bytes, read on every guarded request.
fn visible_ascii(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |visible, &byte| {
        visible & (byte.wrapping_sub(0x21) < 0x5e)
    })
}

/// A regex (unanchored) for `pattern`, its one `{credentials}` becoming group 1 of `value`.
fn template(pattern: &str, value: &str) -> Result<String, String> {
    let Some((before, after)) = pattern.split_once(PLACEHOLDER) else {
        return Err(format!("`{pattern}` has no `{PLACEHOLDER}`"));
    };
    if after.contains(PLACEHOLDER) {
        return Err(format!("`{pattern}` has `{PLACEHOLDER}` twice"));
    }
    Ok(format!(
        "{}({value}){}",
        regex::escape(before),
        regex::escape(after)
    ))
}

fn header_pattern(pattern: &str) -> Result<HeaderPattern, String> {
    if !pattern.contains(PLACEHOLDER)
        && let Some(format) = pattern.trim().strip_prefix("Basic")
        && format.contains("{username}")
        && format.contains("{password}")
    {
        let regex = regex::escape(format.trim())
            .replace("\\{username\\}", "([^\\s:]+)")
            .replace("\\{password\\}", "(\\S+)");
        let regex = Regex::new(&format!("^{regex}$")).map_err(|e| e.to_string())?;
        return Ok(HeaderPattern::Basic(regex));
    }
    // Checked as the other templates are: one `{credentials}`.
    template(pattern, "")?;
    let (before, after) = pattern.split_once(PLACEHOLDER).unwrap_or((pattern, ""));
    Ok(HeaderPattern::Template {
        before: before.to_owned(),
        after: after.to_owned(),
    })
}

/// Standard base64 (with or without padding); `None` when `text` is not base64.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // A lone leftover character carries fewer than 8 bits: not valid base64.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn map(entries: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_header_candidate_is_the_first_header_token_unchecked() {
        let bearer = CredentialsConfig {
            headers: map(&[("authorization", "Bearer {credentials}")]),
            ..Default::default()
        };
        let credentials = Credentials::compile(&bearer).unwrap();
        let candidate = |value: &str| {
            let request = request("/", &[("authorization", value)]);
            credentials.header_candidate(&request).map(<[u8]>::to_vec)
        };
        assert_eq!(
            candidate("Bearer abc.def").as_deref(),
            Some(&b"abc.def"[..])
        );
        // Not checked: a token with a space is a candidate that extract refuses.
        assert_eq!(candidate("Bearer a b").as_deref(), Some(&b"a b"[..]));
        assert_eq!(candidate("Basic abc"), None);
        assert_eq!(credentials.header_candidate(&request("/", &[])), None);
        // With a second source of credentials a token cached from it could match bytes the
        // header template refuses, so there is no candidate.
        let request = request("/", &[("authorization", "Bearer abc.def")]);
        for other in [
            CredentialsConfig {
                cookies: map(&[("access_token", "{credentials}")]),
                ..bearer.clone()
            },
            CredentialsConfig {
                query: map(&[("access_token", "{credentials}")]),
                ..bearer.clone()
            },
            CredentialsConfig {
                headers: map(&[
                    ("authorization", "Bearer {credentials}"),
                    ("x-token", "{credentials}"),
                ]),
                ..Default::default()
            },
        ] {
            let credentials = Credentials::compile(&other).unwrap();
            assert_eq!(credentials.header_candidate(&request), None);
        }
    }

    #[test]
    fn bearer_header() {
        let credentials = Credentials::compile(&CredentialsConfig {
            headers: map(&[("authorization", "Bearer {credentials}")]),
            ..Default::default()
        })
        .unwrap();
        let found = credentials
            .extract(&request("/", &[("authorization", "Bearer abc.def")]))
            .map(Cow::into_owned);
        assert_eq!(found.as_deref(), Some("abc.def"));
        assert_eq!(
            credentials
                .extract(&request("/", &[("authorization", "Basic abc")]))
                .map(Cow::into_owned),
            None
        );
        assert_eq!(
            credentials
                .extract(&request("/", &[("authorization", "Bearer ")]))
                .map(Cow::into_owned),
            None
        );
        assert_eq!(
            credentials.extract(&request("/", &[])).map(Cow::into_owned),
            None
        );
    }

    #[test]
    fn cookies_then_headers_then_query() {
        let credentials = Credentials::compile(&CredentialsConfig {
            headers: map(&[("x-token", "{credentials}")]),
            query: map(&[("access_token", "{credentials}")]),
            cookies: map(&[("access_token", "{credentials}")]),
        })
        .unwrap();
        let all = request(
            "/items?x=1&access_token=fromquery",
            &[
                ("x-token", "fromheader"),
                ("cookie", "a=1; access_token=fromcookie; b=2"),
            ],
        );
        assert_eq!(credentials.extract(&all).as_deref(), Some("fromcookie"));
        let no_cookie = request(
            "/items?access_token=fromquery",
            &[("x-token", "fromheader"), ("cookie", "a=1")],
        );
        assert_eq!(
            credentials.extract(&no_cookie).as_deref(),
            Some("fromheader")
        );
        let query_only = request("/items?x=1&access_token=fromquery&y=2", &[]);
        assert_eq!(
            credentials.extract(&query_only).as_deref(),
            Some("fromquery")
        );
        let other_param = request("/items?my_access_token=no", &[]);
        assert_eq!(credentials.extract(&other_param), None);
        let last_cookie = request("/", &[("cookie", "access_token=last")]);
        assert_eq!(credentials.extract(&last_cookie).as_deref(), Some("last"));
        let prefixed_cookie = request("/", &[("cookie", "my_access_token=no")]);
        assert_eq!(credentials.extract(&prefixed_cookie), None);
    }

    #[test]
    fn basic_username_password() {
        let credentials = Credentials::compile(&CredentialsConfig {
            headers: map(&[("authorization", "Basic {username}:{password}")]),
            ..Default::default()
        })
        .unwrap();
        // "user:pa:ss"
        let found = credentials
            .extract(&request(
                "/",
                &[("authorization", "Basic dXNlcjpwYTpzcw==")],
            ))
            .map(Cow::into_owned);
        assert_eq!(found.as_deref(), Some("user:pa:ss"));
        let no_colon = credentials
            .extract(&request("/", &[("authorization", "Basic dXNlcg==")]))
            .map(Cow::into_owned);
        assert_eq!(no_colon, None);
        let garbage = credentials
            .extract(&request("/", &[("authorization", "Basic ***")]))
            .map(Cow::into_owned);
        assert_eq!(garbage, None);
    }

    #[test]
    fn patterns_need_the_placeholder() {
        for config in [
            CredentialsConfig {
                headers: map(&[("authorization", "Bearer")]),
                ..Default::default()
            },
            CredentialsConfig {
                query: map(&[("t", "{credentials}{credentials}")]),
                ..Default::default()
            },
            CredentialsConfig {
                headers: map(&[("bad header", "{credentials}")]),
                ..Default::default()
            },
        ] {
            assert!(Credentials::compile(&config).is_err());
        }
    }

    #[test]
    fn tokens_are_visible_ascii_without_white_space() {
        assert!(visible_ascii(b"eyJhbGciOi.J9-_~!"));
        for bad in [&b"a b"[..], b"a\tb", b"\x7f", b"caf\xc3\xa9", b"\x20"] {
            assert!(!visible_ascii(bad), "{bad:?}");
        }
        let credentials = Credentials::compile(&CredentialsConfig {
            headers: map(&[("authorization", "Bearer {credentials}")]),
            ..Default::default()
        })
        .unwrap();
        let value = http::HeaderValue::from_bytes(b"Bearer caf\xc3\xa9").unwrap();
        let request = http::Request::builder()
            .header("authorization", value)
            .body(())
            .unwrap();
        assert_eq!(credentials.extract(&request), None);
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("a").is_none());
        assert!(decode_base64("a$==").is_none());
    }
}
