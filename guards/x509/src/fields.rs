//! A certificate flattened into the field vocabulary `identity`, `attributes` and `roles` name,
//! as Zilla's x509 guard spells it:
//!
//! | field | value |
//! |---|---|
//! | `subject.dn`, `issuer.dn` | the distinguished name in Java's canonical form (RFC 2253, lower case, e.g. `cn=alice,o=example inc`) |
//! | `subject.<attr>`, `issuer.<attr>` | each value of one name attribute, as written: `cn`, `c`, `l`, `st`, `o`, `ou`, `street`, `dc`, `uid` |
//! | `san.email`, `san.dns`, `san.uri`, `san.ip` | each subject alternative name of that kind |
//! | `x5t.s256` | the SHA-256 thumbprint of the certificate, base64url without padding |
//!
//! A field the certificate does not carry is absent: it resolves to nothing and matches nothing.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine;
use sha2::Digest;
use x509_parser::der_parser::asn1_rs::{Any, Tag};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{X509Certificate, X509Name};
use zilla_engine::guard::escape_dn_value;

/// The name attributes RFC 2253 writes as keywords (with their OIDs); the only ones with
/// relative fields (`subject.cn`), as Java writes any other attribute's value in hex.
const KEYWORDS: &[(&str, &str)] = &[
    ("2.5.4.3", "cn"),
    ("2.5.4.6", "c"),
    ("2.5.4.7", "l"),
    ("2.5.4.8", "st"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "o"),
    ("2.5.4.11", "ou"),
    ("0.9.2342.19200300.100.1.25", "dc"),
    ("0.9.2342.19200300.100.1.1", "uid"),
];

/// Every field name a certificate can carry; anything else is a configuration mistake.
pub fn is_known(field: &str) -> bool {
    match field.split_once('.') {
        Some(("subject" | "issuer", rest)) => {
            rest == "dn" || KEYWORDS.iter().any(|(_, keyword)| *keyword == rest)
        }
        Some(("san", rest)) => matches!(rest, "email" | "dns" | "uri" | "ip"),
        _ => field == "x5t.s256",
    }
}

/// The known field names, for error messages.
pub fn known() -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["subject", "issuer"] {
        names.push(format!("{prefix}.dn"));
        names.extend(KEYWORDS.iter().map(|(_, k)| format!("{prefix}.{k}")));
    }
    names.extend(["san.email", "san.dns", "san.uri", "san.ip", "x5t.s256"].map(String::from));
    names
}

/// Field name → values, in certificate order.
pub type Fields = HashMap<String, Vec<String>>;

/// The fields of `certificate` (whose DER encoding is `der`).
pub fn resolve(certificate: &X509Certificate<'_>, der: &[u8]) -> Fields {
    let mut fields = Fields::new();
    name_fields(&mut fields, "subject", certificate.subject());
    name_fields(&mut fields, "issuer", certificate.issuer());
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            let (field, value) = match name {
                GeneralName::RFC822Name(email) => ("san.email", (*email).to_owned()),
                GeneralName::DNSName(dns) => ("san.dns", (*dns).to_owned()),
                GeneralName::URI(uri) => ("san.uri", (*uri).to_owned()),
                GeneralName::IPAddress(bytes) => match ip_text(bytes) {
                    Some(ip) => ("san.ip", ip),
                    None => continue,
                },
                _ => continue,
            };
            push(&mut fields, field, value);
        }
    }
    let thumbprint = sha2::Sha256::digest(der);
    push(
        &mut fields,
        "x5t.s256",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(thumbprint),
    );
    fields
}

fn push(fields: &mut Fields, field: &str, value: String) {
    fields.entry(field.to_owned()).or_default().push(value);
}

fn name_fields(fields: &mut Fields, prefix: &str, name: &X509Name<'_>) {
    push(fields, &format!("{prefix}.dn"), canonical_dn(name));
    for rdn in name.iter_rdn() {
        for attribute in rdn.iter() {
            let oid = attribute.attr_type().to_id_string();
            let Some((_, keyword)) = KEYWORDS.iter().find(|(known, _)| *known == oid) else {
                continue;
            };
            if let Ok(value) = attribute.as_str() {
                push(fields, &format!("{prefix}.{keyword}"), value.to_owned());
            }
        }
    }
}

/// Java's `X500Principal.getName(CANONICAL)`: RFC 2253 order (most specific first), keywords
/// for the RFC 2253 attributes and OIDs for the rest, PrintableString and UTF8String values
/// trimmed with inner white space collapsed and escaped, any other value as `#` and the hex of
/// its encoding, the attributes of a multi-valued RDN sorted, everything in lower case.
pub fn canonical_dn(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            let mut attributes: Vec<(bool, String)> = rdn
                .iter()
                .map(|attribute| {
                    let oid = attribute.attr_type().to_id_string();
                    let keyword = KEYWORDS.iter().find(|(known, _)| *known == oid);
                    let value = canonical_value(attribute.attr_value());
                    match keyword {
                        Some((_, keyword)) => (false, format!("{keyword}={value}")),
                        None => (true, format!("{oid}={value}")),
                    }
                })
                .collect();
            attributes.sort();
            attributes
                .into_iter()
                .map(|(_, text)| text)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

fn canonical_value(value: &Any<'_>) -> String {
    let text = match value.tag() {
        Tag::PrintableString | Tag::Utf8String => std::str::from_utf8(value.data).ok(),
        _ => None,
    };
    match text {
        Some(text) => escape_dn_value(&text.split_whitespace().collect::<Vec<_>>().join(" ")),
        None => {
            // The DER encoding of the value: its tag, length and content.
            let mut encoded = vec![u8::try_from(value.tag().0).unwrap_or(0)];
            let length = value.data.len();
            if length < 0x80 {
                encoded.push(length as u8);
            } else {
                let bytes: Vec<u8> = length
                    .to_be_bytes()
                    .into_iter()
                    .skip_while(|byte| *byte == 0)
                    .collect();
                encoded.push(0x80 | bytes.len() as u8);
                encoded.extend(bytes);
            }
            encoded.extend_from_slice(value.data);
            let hex: String = encoded.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("#{hex}")
        }
    }
}

/// An IP address as Java writes it: dotted IPv4, or eight hex groups without zero compression.
fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => {
            let octets: [u8; 4] = bytes.try_into().ok()?;
            Some(Ipv4Addr::from(octets).to_string())
        }
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            let groups = Ipv6Addr::from(octets).segments();
            Some(
                groups
                    .iter()
                    .map(|group| format!("{group:x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_fields_are_zillas() {
        for field in [
            "subject.dn",
            "subject.cn",
            "issuer.o",
            "san.dns",
            "san.ip",
            "x5t.s256",
        ] {
            assert!(is_known(field), "{field}");
        }
        for field in ["subject", "subject.email", "san.other", "x5t", "cn"] {
            assert!(!is_known(field), "{field}");
        }
        assert!(known().iter().all(|field| is_known(field)));
    }

    #[test]
    fn addresses_written_as_java_does() {
        assert_eq!(ip_text(&[127, 0, 0, 1]).as_deref(), Some("127.0.0.1"));
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(ip_text(&v6).as_deref(), Some("0:0:0:0:0:0:0:1"));
        assert_eq!(ip_text(&[1, 2]), None);
    }
}
