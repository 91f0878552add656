//! Wildcard patterns of route conditions: `*` matches any run of characters, `{name}` captures
//! one or more characters (not crossing the separator, when the pattern has one). Compiled once
//! at load into an anchored regex.

use regex::Regex;

/// A compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
    names: Vec<String>,
    shape: Shape,
}

/// The shapes most route patterns take, matched without the regex: a route is resolved for
/// every request, and a regex search costs tens of times a comparison.
#[derive(Debug, Clone)]
enum Shape {
    /// No wildcard: the text must equal the pattern.
    Literal,
    /// One `*`, at the end: the text must start with what precedes it.
    Prefix(String),
    /// Anything else.
    General,
}

/// Captured `{name}` values.
pub type Captures = Vec<(String, String)>;

impl Pattern {
    /// Compiles `pattern`; `{name}` does not cross `separator` when one is given (e.g. `/` in
    /// paths and MQTT topics, `.` never for authorities).
    pub fn compile(pattern: &str, separator: Option<char>) -> Result<Self, String> {
        let mut regex = String::from("^");
        let mut names = Vec::new();
        let mut rest = pattern;
        while let Some(index) = rest.find(['*', '{']) {
            regex.push_str(&regex::escape(&rest[..index]));
            if rest[index..].starts_with('*') {
                regex.push_str(".*");
                rest = &rest[index + 1..];
            } else {
                let Some(end) = rest[index..].find('}') else {
                    return Err(format!("unclosed `{{` in pattern `{pattern}`"));
                };
                let name = &rest[index + 1..index + end];
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!("invalid parameter name `{name}` in `{pattern}`"));
                }
                if names.iter().any(|n| n == name) {
                    return Err(format!("parameter `{name}` appears twice in `{pattern}`"));
                }
                match separator {
                    Some(separator) => {
                        regex.push_str(&format!("([^{}]+)", regex::escape(&separator.to_string())))
                    }
                    None => regex.push_str("(.+)"),
                }
                names.push(name.to_owned());
                rest = &rest[index + end + 1..];
            }
        }
        regex.push_str(&regex::escape(rest));
        regex.push('$');
        let regex = Regex::new(&regex).map_err(|error| error.to_string())?;
        let shape = match pattern.find(['*', '{']) {
            None => Shape::Literal,
            Some(index) if index + 1 == pattern.len() && pattern.ends_with('*') => {
                Shape::Prefix(pattern[..index].to_owned())
            }
            Some(_) => Shape::General,
        };
        Ok(Self {
            source: pattern.to_owned(),
            regex,
            names,
            shape,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match &self.shape {
            Shape::Literal => text == self.source,
            // As the regex's `.*`, which does not cross a line feed.
            Shape::Prefix(prefix) => text
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| !rest.contains('\n')),
            Shape::General => self.regex.is_match(text),
        }
    }

    /// The `{name}` captures if `text` matches.
    pub fn captures(&self, text: &str) -> Option<Captures> {
        let captures = self.regex.captures(text)?;
        Some(
            self.names
                .iter()
                .enumerate()
                .filter_map(|(index, name)| {
                    captures
                        .get(index + 1)
                        .map(|value| (name.clone(), value.as_str().to_owned()))
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wildcards_and_captures() {
        let pattern = Pattern::compile("/items/{id}/tags/*", Some('/')).unwrap();
        assert_eq!(
            pattern.captures("/items/42/tags/a/b"),
            Some(vec![("id".to_owned(), "42".to_owned())])
        );
        assert!(!pattern.matches("/items//tags/a"));
        assert!(!pattern.matches("/items/4/2/tags/a"));
        assert!(
            Pattern::compile("*.example.com", None)
                .unwrap()
                .matches("a.b.example.com")
        );
        assert!(
            !Pattern::compile("*.example.com", None)
                .unwrap()
                .matches("example.org")
        );
        assert!(Pattern::compile("a.b", None).unwrap().matches("a.b"));
        assert!(!Pattern::compile("a.b", None).unwrap().matches("axb"));
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Pattern::compile("/items/{id", Some('/')).is_err());
        assert!(Pattern::compile("/{a}/{a}", Some('/')).is_err());
        assert!(Pattern::compile("/{}", Some('/')).is_err());
    }

    proptest! {
        /// Every shape matched without the regex answers as the regex does.
        #[test]
        fn shortcuts_agree_with_the_regex(
            prefix in "[a-z./?+()]{0,8}",
            star in proptest::bool::ANY,
            text in "[a-z./?+()\n]{0,16}",
        ) {
            let source = if star { format!("{prefix}*") } else { prefix.clone() };
            let pattern = Pattern::compile(&source, Some('/')).unwrap();
            let candidates = [text.clone(), format!("{prefix}{text}"), prefix.clone()];
            for candidate in candidates {
                prop_assert_eq!(
                    pattern.matches(&candidate),
                    pattern.regex.is_match(&candidate),
                    "{:?} against {:?}", candidate, source
                );
            }
        }

        #[test]
        fn literal_patterns_match_only_themselves(text in "[a-z./?+()\\[\\]]{0,20}", other in "[a-z./]{0,20}") {
            let pattern = Pattern::compile(&text, Some('/')).unwrap();
            prop_assert!(pattern.matches(&text));
            prop_assert_eq!(pattern.matches(&other), other == text);
        }
    }
}
