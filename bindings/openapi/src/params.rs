//! A parameter's schema as the core model that checks its text (`int64`, `double`, `string`):
//! path, query and header values are text, not JSON, so the `json` model cannot check them.
//! Annotations (`description`, `format`, `example`, ...) check nothing in JSON Schema and are
//! passed over; any other keyword has no core model equivalent and is refused.

use serde_json::{Map, Value, json};

/// Keywords that describe without constraining.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "format",
    "example",
    "examples",
    "default",
    "deprecated",
    "nullable",
    "readOnly",
    "writeOnly",
    "externalDocs",
    "xml",
];

/// The model reference checking a value of `schema`, `None` when the schema constrains
/// nothing; the error names the unsupported keyword.
pub fn model(schema: &Value) -> Result<Option<Value>, String> {
    let Value::Object(schema) = schema else {
        return match schema {
            Value::Bool(true) => Ok(None),
            _ => Err("a parameter schema must be an object".to_owned()),
        };
    };
    let kind = match schema.get("type") {
        None => None,
        Some(Value::String(kind)) => Some(kind.as_str()),
        Some(Value::Array(kinds)) => {
            let kinds: Vec<&str> = kinds
                .iter()
                .filter_map(Value::as_str)
                .filter(|k| *k != "null")
                .collect();
            match kinds[..] {
                [one] => Some(one),
                _ => return Err("a parameter of several types is not supported yet".to_owned()),
            }
        }
        Some(_) => return Err("`type` must be a string".to_owned()),
    };
    let mut used = vec!["type"];
    let model = match kind {
        Some("integer") => {
            let format = schema.get("format").and_then(Value::as_str);
            let mut model = json!({"model": if format == Some("int32") {"int32"} else {"int64"}});
            numeric(schema, &mut model, &mut used, true)?;
            Some(model)
        }
        Some("number") => {
            let mut model = json!({"model": "double"});
            numeric(schema, &mut model, &mut used, false)?;
            Some(model)
        }
        Some("boolean") => Some(json!({"model": "string", "pattern": "true|false"})),
        Some("string") => string(schema, &mut used)?,
        None if schema.keys().all(|key| ANNOTATIONS.contains(&key.as_str())) => None,
        None => return Err("a parameter schema without `type` is not supported yet".to_owned()),
        Some(other) => {
            return Err(format!(
                "parameters of type `{other}` are not supported yet"
            ));
        }
    };
    if let Some(key) = schema
        .keys()
        .find(|key| !used.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()))
    {
        return Err(format!(
            "`{key}` in a parameter schema is not supported yet"
        ));
    }
    Ok(model)
}

fn numeric(
    schema: &Map<String, Value>,
    model: &mut Value,
    used: &mut Vec<&'static str>,
    integer: bool,
) -> Result<(), String> {
    let bound = |key: &str| -> Result<Option<String>, String> {
        match schema.get(key) {
            None | Some(Value::Bool(_)) => Ok(None),
            Some(Value::Number(number)) => Ok(Some(number.to_string())),
            Some(_) => Err(format!("`{key}` must be a number")),
        }
    };
    // 3.0 writes `exclusiveMinimum: true` beside `minimum`; 3.1 writes the bound itself.
    let exclusive = |flag: &str| schema.get(flag) == Some(&Value::Bool(true));
    let (low, low_open) = match (bound("exclusiveMinimum")?, bound("minimum")?) {
        (Some(bound), _) => (Some(bound), true),
        (None, bound) => (bound, exclusive("exclusiveMinimum")),
    };
    let (high, high_open) = match (bound("exclusiveMaximum")?, bound("maximum")?) {
        (Some(bound), _) => (Some(bound), true),
        (None, bound) => (bound, exclusive("exclusiveMaximum")),
    };
    used.extend([
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]);
    if integer {
        for bound in [&low, &high].into_iter().flatten() {
            if bound.parse::<i64>().is_err() {
                return Err(format!("integer bound {bound} is not an integer"));
            }
        }
    }
    if low.is_some() || high.is_some() {
        model["range"] = Value::String(format!(
            "{}{},{}{}",
            if low_open { '(' } else { '[' },
            low.unwrap_or_default(),
            high.unwrap_or_default(),
            if high_open { ')' } else { ']' },
        ));
    }
    if let Some(multiple) = schema.get("multipleOf") {
        if integer && multiple.as_i64().is_none() {
            return Err("`multipleOf` of an integer must be an integer".to_owned());
        }
        model["multiple"] = multiple.clone();
    }
    Ok(())
}

fn string(
    schema: &Map<String, Value>,
    used: &mut Vec<&'static str>,
) -> Result<Option<Value>, String> {
    used.extend(["minLength", "maxLength", "pattern", "enum"]);
    let mut model = json!({"model": "string"});
    for (key, into) in [("minLength", "minLength"), ("maxLength", "maxLength")] {
        if let Some(length) = schema.get(key) {
            // The string model counts bytes and needs at least 1; JSON Schema counts
            // characters: only bounds that mean the same for ASCII text are kept exact.
            match length.as_u64() {
                Some(0) if key == "minLength" => {}
                Some(length) if length > 0 => model[into] = json!(length),
                _ => return Err(format!("`{key}` {length} is not supported")),
            }
        }
    }
    let enumerated = match schema.get("enum") {
        None => None,
        Some(Value::Array(values)) => {
            let texts: Option<Vec<String>> = values
                .iter()
                .map(|v| v.as_str().map(regex::escape))
                .collect();
            Some(texts.ok_or("`enum` of a string parameter must list strings")?)
        }
        Some(_) => return Err("`enum` must be a list".to_owned()),
    };
    match (schema.get("pattern"), enumerated) {
        (Some(_), Some(_)) => {
            return Err("`pattern` and `enum` together are not supported yet".to_owned());
        }
        // JSON Schema patterns match anywhere in the text; the string model's whole text.
        (Some(Value::String(pattern)), None) => {
            let pattern = ecma_pattern(pattern)?;
            model["pattern"] = Value::String(format!(".*(?:{pattern}).*"));
        }
        (Some(_), None) => return Err("`pattern` must be a string".to_owned()),
        (None, Some(values)) => {
            model["pattern"] = Value::String(format!("(?:{})", values.join("|")));
        }
        (None, None) => {}
    }
    Ok((model.as_object().map(Map::len) > Some(1)).then_some(model))
}

/// A JSON Schema `pattern` (an ECMA-262 regular expression) in the syntax of the `regex`
/// crate the string model compiles. ECMA-262 reads a brace that does not make a quantifier
/// (`{n}`, `{n,}`, `{n,m}`) as a literal, as in `^{[0-9a-f]{8}}$`, where the `regex` crate
/// refuses it: such braces are escaped. A pattern that still does not compile (lookaround
/// and backreferences, which the `regex` crate does not have) is refused here, so the
/// refusal is located at the parameter in the document rather than in the generated config.
fn ecma_pattern(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut translated = String::with_capacity(pattern.len());
    let mut in_class = false;
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        match c {
            '\\' => {
                translated.push(c);
                if let Some(next) = chars.get(index + 1) {
                    translated.push(*next);
                }
                index += 2;
                continue;
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '{' if !in_class => {
                let quantifier = quantifier_len(&chars[index..]);
                if quantifier > 0 {
                    translated.extend(&chars[index..index + quantifier]);
                    index += quantifier;
                } else {
                    translated.push_str("\\{");
                    index += 1;
                }
                continue;
            }
            '}' if !in_class => {
                // A quantifier's closing brace was copied with it: this one is a literal.
                translated.push_str("\\}");
                index += 1;
                continue;
            }
            _ => {}
        }
        translated.push(c);
        index += 1;
    }
    regex::Regex::new(&translated).map_err(|error| {
        let error = error.to_string();
        let reason = error.lines().last().unwrap_or_default().trim();
        format!("`pattern` `{pattern}` is not supported: {reason}")
    })?;
    Ok(translated)
}

/// The length of the quantifier `{n}`, `{n,}` or `{n,m}` that `chars` starts with, 0 when
/// it starts with none.
fn quantifier_len(chars: &[char]) -> usize {
    let digits = |from: usize| {
        chars[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let low = digits(1);
    if low == 0 {
        return 0;
    }
    let mut at = 1 + low;
    if chars.get(at) == Some(&',') {
        at += 1 + digits(at + 1);
    }
    if chars.get(at) == Some(&'}') {
        at + 1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_become_ranged_integer_models() {
        let schema = json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": 100});
        assert_eq!(
            model(&schema).unwrap(),
            Some(json!({"model": "int32", "range": "[1,100]"}))
        );
        let schema = json!({"type": "integer", "exclusiveMinimum": true, "minimum": 0});
        assert_eq!(
            model(&schema).unwrap(),
            Some(json!({"model": "int64", "range": "(0,]"}))
        );
        let schema = json!({"type": "integer", "exclusiveMaximum": 10});
        assert_eq!(
            model(&schema).unwrap(),
            Some(json!({"model": "int64", "range": "[,10)"}))
        );
    }

    #[test]
    fn strings_keep_lengths_patterns_and_enums() {
        assert_eq!(
            model(&json!({"type": "string", "format": "uuid"})).unwrap(),
            None
        );
        assert_eq!(
            model(&json!({"type": "string", "enum": ["a.b", "c"]})).unwrap(),
            Some(json!({"model": "string", "pattern": "(?:a\\.b|c)"}))
        );
        assert_eq!(
            model(&json!({"type": "string", "maxLength": 4, "pattern": "^x"})).unwrap(),
            Some(json!({"model": "string", "maxLength": 4, "pattern": ".*(?:^x).*"}))
        );
    }

    #[test]
    fn ecma_literal_braces_are_escaped_and_quantifiers_kept() {
        // From the `schema-validation` example of `@readme/oas-examples`.
        let pattern =
            "^(?:{[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}}|[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7})$";
        let model = model(&json!({"type": "string", "pattern": pattern})).unwrap();
        let translated = model.unwrap()["pattern"].as_str().unwrap().to_owned();
        assert_eq!(
            translated,
            ".*(?:^(?:\\{[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}\\}|[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7})$).*"
        );
        let whole = regex::Regex::new(&format!("^(?:{translated})$")).unwrap();
        assert!(whole.is_match("{0123-4567-89ab-cdef-0123-4567-89ab-cdef}"));
        assert!(whole.is_match("0123456789abcdef0123456789abcdef"));
        assert!(!whole.is_match("{0123}"));
        assert_eq!(
            ecma_pattern("a{2,}b{1,3}[{}]\\{x{,2}").unwrap(),
            "a{2,}b{1,3}[{}]\\{x\\{,2\\}"
        );
    }

    #[test]
    fn patterns_the_regex_crate_cannot_run_are_refused() {
        let error = model(&json!({"type": "string", "pattern": "^(?!admin)"})).unwrap_err();
        assert!(
            error.starts_with("`pattern` `^(?!admin)` is not supported: "),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn what_no_core_model_checks_is_refused() {
        let error = model(&json!({"type": "array", "items": {"type": "string"}})).unwrap_err();
        assert!(error.contains("type `array`"), "{error}");
        let error = model(&json!({"type": "string", "const": "x"})).unwrap_err();
        assert!(error.contains("`const`"), "{error}");
    }
}
