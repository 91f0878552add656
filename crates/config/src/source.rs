//! The text of one config file: `${{env.X}}` substitution done as text, as Zilla does, with a map
//! from positions in the substituted text back to the file the user wrote, so that every error
//! points at what the user sees in their editor.

use super::error::{ConfigError, Position};

/// One config file after text substitution.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file name used in error messages.
    pub file: String,
    /// The text the user wrote.
    pub original: String,
    /// The text after `${{...}}` substitution; this is what YAML parsing sees.
    pub text: String,
    /// Substitutions in order: (char offset in `text`, chars in `text`, char offset in
    /// `original`, chars in `original`).
    substitutions: Vec<Substitution>,
}

#[derive(Debug, Clone, Copy)]
struct Substitution {
    text_at: usize,
    text_len: usize,
    original_at: usize,
    original_len: usize,
}

/// Resolves `${{<resolver>.<name>}}` variables at load time.
pub trait Resolver {
    /// The value of `resolver.name`, `Err` with a reason when it cannot be resolved.
    fn resolve(&self, resolver: &str, name: &str) -> Result<String, String>;
}

/// Resolves `${{env.X}}` from the process environment. An unset variable is an error: a
/// silently empty port or host is a misconfiguration, not a value.
#[derive(Debug, Default, Clone, Copy)]
pub struct EnvResolver;

impl Resolver for EnvResolver {
    fn resolve(&self, resolver: &str, name: &str) -> Result<String, String> {
        match resolver {
            "env" => {
                std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))
            }
            other => Err(format!(
                "unknown resolver `{other}` in `${{{{{other}.{name}}}}}`; only `env` is supported"
            )),
        }
    }
}

impl Source {
    /// Substitutes every `${{ resolver.name }}` in `original`. All unresolvable variables are
    /// reported at once.
    pub fn new(
        file: impl Into<String>,
        original: impl Into<String>,
        resolver: &dyn Resolver,
    ) -> Result<Self, Vec<ConfigError>> {
        let file = file.into();
        let original = original.into();
        let mut text = String::with_capacity(original.len());
        let mut substitutions = Vec::new();
        let mut errors = Vec::new();
        let mut rest = original.as_str();
        let mut original_chars = 0usize;
        let mut text_chars = 0usize;
        while let Some(start) = rest.find("${{") {
            let before = &rest[..start];
            text.push_str(before);
            let before_chars = before.chars().count();
            original_chars += before_chars;
            text_chars += before_chars;
            let after = &rest[start + 3..];
            let Some(end) = after.find("}}") else {
                // Not an expression: keep the text as it is and let YAML or the schema speak.
                text.push_str("${{");
                original_chars += 3;
                text_chars += 3;
                rest = after;
                continue;
            };
            let expression = &after[..end];
            let whole_chars = 3 + expression.chars().count() + 2;
            let value = match expression.trim().split_once('.') {
                Some((resolver_name, name))
                    if !resolver_name.trim().is_empty() && !name.trim().is_empty() =>
                {
                    resolver.resolve(resolver_name.trim(), name.trim())
                }
                _ => Err(format!(
                    "malformed expression `${{{{{expression}}}}}`; expected `${{{{env.NAME}}}}`"
                )),
            };
            match value {
                Ok(value) => {
                    let value_chars = value.chars().count();
                    substitutions.push(Substitution {
                        text_at: text_chars,
                        text_len: value_chars,
                        original_at: original_chars,
                        original_len: whole_chars,
                    });
                    text.push_str(&value);
                    text_chars += value_chars;
                }
                Err(message) => {
                    let position = Position::of_char_offset(&original, original_chars);
                    errors.push(ConfigError::new(&file, position, "", message));
                }
            }
            original_chars += whole_chars;
            rest = &after[end + 2..];
        }
        text.push_str(rest);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            file,
            original,
            text,
            substitutions,
        })
    }

    /// A source with no substitution, for text that is already final.
    pub fn plain(file: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            file: file.into(),
            original: text.clone(),
            text,
            substitutions: Vec::new(),
        }
    }

    /// Maps a char offset in the substituted text to a line and column in the original file.
    pub fn position(&self, text_char_offset: usize) -> Position {
        let mut shift: isize = 0;
        for substitution in &self.substitutions {
            if text_char_offset < substitution.text_at {
                break;
            }
            if text_char_offset < substitution.text_at + substitution.text_len {
                // Inside a substituted value: point at the expression that produced it.
                return Position::of_char_offset(&self.original, substitution.original_at);
            }
            shift += substitution.original_len as isize - substitution.text_len as isize;
        }
        let offset = (text_char_offset as isize + shift).max(0) as usize;
        Position::of_char_offset(&self.original, offset)
    }

    /// Maps a 1-based line and column of the substituted text back to the original file.
    pub fn position_of_line_column(&self, line: usize, column: usize) -> Position {
        if self.substitutions.is_empty() {
            return Position { line, column };
        }
        let mut offset = 0usize;
        for (index, text_line) in self.text.split_inclusive('\n').enumerate() {
            if index + 1 == line {
                return self.position(offset + column.saturating_sub(1));
            }
            offset += text_line.chars().count();
        }
        self.position(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Resolver for Fixed {
        fn resolve(&self, resolver: &str, name: &str) -> Result<String, String> {
            match (resolver, name) {
                ("env", "PORT") => Ok("8080".into()),
                ("env", "LONG") => Ok("a-much-longer-value".into()),
                _ => Err(format!("environment variable `{name}` is not set")),
            }
        }
    }

    #[test]
    fn substitutes_inside_numbers_and_maps_positions_back() {
        let source = Source::new(
            "z.yaml",
            "a: ${{ env.LONG }}\nport: 1${{env.PORT}}\nx: y",
            &Fixed,
        )
        .unwrap();
        assert_eq!(source.text, "a: a-much-longer-value\nport: 18080\nx: y");
        // `x` on line 3 stays on line 3, column 1.
        let x = source.text.chars().count() - 4;
        assert_eq!(source.position(x), Position { line: 3, column: 1 });
        // Inside the substituted port value: points at the expression.
        assert_eq!(
            source.position_of_line_column(2, 8),
            Position { line: 2, column: 8 }
        );
        assert_eq!(
            source.position_of_line_column(1, 4),
            Position { line: 1, column: 4 }
        );
    }

    #[test]
    fn every_unset_variable_is_reported_with_its_position() {
        let errors =
            Source::new("z.yaml", "a: ${{env.NOPE}}\nb: ${{env.GONE}}\n", &Fixed).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[1].position, Position { line: 2, column: 4 });
        assert!(errors[0].message.contains("NOPE"));
    }

    #[test]
    fn unknown_resolver_is_an_error() {
        let errors = Source::new("z.yaml", "a: ${{vault.x}}", &EnvResolver).unwrap_err();
        assert!(errors[0].message.contains("unknown resolver `vault`"));
    }
}
