//! The `roles` mapping: a role is held when any of its matches holds; a match holds when every
//! field it names has a value its pattern matches (`*` any run, `?` one character, no regard to
//! case); roles accumulate.

use std::collections::BTreeMap;

use regex::Regex;

use crate::fields::Fields;

/// One compiled role.
#[derive(Debug)]
struct Role {
    name: String,
    /// ORed; each is a list of (field, pattern) ANDed.
    matches: Vec<Vec<(String, Regex)>>,
}

/// The compiled `roles` option.
#[derive(Debug, Default)]
pub struct Roles(Vec<Role>);

impl Roles {
    /// Compiles `roles` (role → matches → field → glob).
    pub fn compile(
        roles: &BTreeMap<String, Vec<BTreeMap<String, String>>>,
    ) -> Result<Self, String> {
        let mut compiled = Vec::with_capacity(roles.len());
        for (name, matches) in roles {
            let matches = matches
                .iter()
                .map(|fields| {
                    fields
                        .iter()
                        .map(|(field, glob)| Ok((field.clone(), glob_regex(glob)?)))
                        .collect::<Result<Vec<_>, String>>()
                })
                .collect::<Result<Vec<_>, String>>()?;
            compiled.push(Role {
                name: name.clone(),
                matches,
            });
        }
        Ok(Self(compiled))
    }

    /// The roles `fields` hold.
    pub fn resolve(&self, fields: &Fields) -> Vec<String> {
        self.0
            .iter()
            .filter(|role| {
                role.matches.iter().any(|conditions| {
                    !conditions.is_empty()
                        && conditions.iter().all(|(field, pattern)| {
                            fields
                                .get(field)
                                .is_some_and(|values| values.iter().any(|v| pattern.is_match(v)))
                        })
                })
            })
            .map(|role| role.name.clone())
            .collect()
    }
}

/// A glob (`*`, `?`) as a whole-value, case-insensitive regex.
fn glob_regex(glob: &str) -> Result<Regex, String> {
    let mut pattern = String::from("(?is)^");
    let mut literal = String::new();
    for c in glob.chars() {
        if c == '*' || c == '?' {
            pattern.push_str(&regex::escape(&literal));
            literal.clear();
            pattern.push_str(if c == '*' { ".*" } else { "." });
        } else {
            literal.push(c);
        }
    }
    pattern.push_str(&regex::escape(&literal));
    pattern.push('$');
    Regex::new(&pattern).map_err(|error| format!("`{glob}` cannot be matched: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(entries: &[(&str, &[&str])]) -> Fields {
        entries
            .iter()
            .map(|(field, values)| {
                (
                    (*field).to_owned(),
                    values.iter().map(|v| (*v).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn roles(yaml: serde_json::Value) -> Roles {
        Roles::compile(&serde_json::from_value(yaml).unwrap()).unwrap()
    }

    #[test]
    fn matches_are_ored_fields_anded_values_existential() {
        let roles = roles(serde_json::json!({
            "partner": [{"issuer.cn": "Partner Issuing CA"}],
            "internal": [
                {"issuer.cn": "Internal CA", "subject.ou": "Platform"},
                {"issuer.cn": "Internal CA", "san.dns": "*.internal.example.com"}
            ]
        }));
        let platform = fields(&[
            ("issuer.cn", &["internal ca"]),
            ("subject.ou", &["Engineering", "Platform"]),
        ]);
        assert_eq!(roles.resolve(&platform), vec!["internal"]);
        let by_name = fields(&[
            ("issuer.cn", &["Internal CA"]),
            ("san.dns", &["a.example.com", "events.internal.example.com"]),
        ]);
        assert_eq!(roles.resolve(&by_name), vec!["internal"]);
        let neither = fields(&[("issuer.cn", &["Internal CA"]), ("subject.ou", &["Sales"])]);
        assert!(roles.resolve(&neither).is_empty());
        let partner = fields(&[("issuer.cn", &["Partner Issuing CA"])]);
        assert_eq!(roles.resolve(&partner), vec!["partner"]);
    }

    #[test]
    fn globs_match_whole_values_and_quote_the_rest() {
        let star = glob_regex("*.example.com").unwrap();
        assert!(star.is_match("a.b.EXAMPLE.com"));
        assert!(!star.is_match("example.com"));
        let one = glob_regex("v?").unwrap();
        assert!(one.is_match("v1"));
        assert!(!one.is_match("v12"));
        let literal = glob_regex("a+b (c)").unwrap();
        assert!(literal.is_match("A+B (C)"));
        assert!(!literal.is_match("aab (c)"));
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_a_literal_glob_of_itself(text in "[^*?]{0,40}") {
            proptest::prop_assert!(glob_regex(&text).unwrap().is_match(&text));
        }
    }
}
