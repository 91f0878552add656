//! Entity tags: Kafka progress in Zilla's encoding ([`zilla_binding_kafka::progress`]), so tags
//! handed out by a Zilla node are understood here and the other way round. An item's tag may
//! be followed by `/` and the value of the record's own `etag` header: `AQQABAIC/revision=42`.

use zilla_binding_kafka::progress::{is_base64url, progress_part};

/// Splits a tag written by a client (`if-none-match`, `if-match`) into the whole tag and the
/// part after `/`, as Zilla reads them: the progress part must be base64url characters. Quotes
/// and a weakness mark around it are dropped, so standard HTTP clients work too.
pub fn parse(header: &str) -> Option<(String, Option<String>)> {
    let tag = header.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = tag
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(tag);
    let progress = progress_part(tag);
    let suffix = tag.split_once('/').map(|(_, suffix)| suffix.to_owned());
    (!progress.is_empty() && is_base64url(progress)).then(|| (tag.to_owned(), suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tags_as_clients_write_them() {
        assert_eq!(parse("*"), None);
        assert_eq!(parse("\"/x\""), None);
        assert_eq!(
            parse("\"AQQABAIC/revision=42\""),
            Some(("AQQABAIC/revision=42".into(), Some("revision=42".into())))
        );
        assert_eq!(parse("AQQABAIC"), Some(("AQQABAIC".into(), None)));
        assert_eq!(parse("W/\"AQQABAIC\""), Some(("AQQABAIC".into(), None)));
    }
}
