//! Runtime expressions such as `${params.id}`, `${guarded['jwt0'].identity}` or
//! `${idempotencyKey}`, compiled at load into segment lists and evaluated per stream without
//! parsing. (`${{env.X}}` is different: it is substituted as text before YAML parsing.)

use std::borrow::Cow;

use crate::guard::{Authorization, GuardSession};
use crate::pattern::Captures;

/// One piece of a compiled expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text copied as is.
    Literal(String),
    /// `${params.name}`: a `{name}` captured by the route.
    Param(String),
    /// `${guarded['guard'].identity}`.
    GuardedIdentity(String),
    /// `${guarded['guard'].attributes.name}`.
    GuardedAttribute(String, String),
    /// Any other variable the using binding allows, e.g. `idempotencyKey`, `http.request.method`.
    Variable(String),
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    segments: Vec<Segment>,
}

/// What an expression is evaluated against.
pub trait ExpressionContext {
    /// A route capture.
    fn param(&self, _name: &str) -> Option<&str> {
        None
    }
    /// The session of `guard` (a name as written in config).
    fn guarded(&self, _guard: &str) -> Option<&dyn GuardSession> {
        None
    }
    /// A binding-specific variable.
    fn variable(&self, _name: &str) -> Option<String> {
        None
    }
}

/// What most bindings' `with` expressions read: the `{param}` captures of the route that
/// matched and the stream's guard sessions (guard names resolve in `namespace`).
#[derive(Debug, Clone, Copy)]
pub struct RouteScope<'a> {
    /// The matched route's captures.
    pub captures: &'a Captures,
    /// The stream's sessions.
    pub authorization: Option<&'a Authorization>,
    /// The binding's namespace.
    pub namespace: &'a str,
}

impl ExpressionContext for RouteScope<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        // A parameter that another `when` entry of the route captures is empty, as in Zilla.
        Some(
            self.captures
                .iter()
                .find(|(captured, _)| captured == name)
                .map_or("", |(_, value)| value.as_str()),
        )
    }

    fn guarded(&self, guard: &str) -> Option<&dyn GuardSession> {
        self.authorization?
            .session_in(self.namespace, guard)
            .map(|session| session.as_ref() as &dyn GuardSession)
    }
}

impl Expression {
    /// Compiles `text`. `variables` lists the plain variables the using binding supplies;
    /// `params` and `guarded` are always allowed. Unknown variables are load-time errors.
    pub fn compile(text: &str, variables: &[&str]) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                segments.push(Segment::Literal(rest[..start].to_owned()));
            }
            let Some(end) = rest[start..].find('}') else {
                return Err(format!("unclosed `${{` in `{text}`"));
            };
            let inner = rest[start + 2..start + end].trim();
            segments.push(Self::variable(inner, variables)?);
            rest = &rest[start + end + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Self { segments })
    }

    fn variable(inner: &str, variables: &[&str]) -> Result<Segment, String> {
        if let Some(name) = inner.strip_prefix("params.") {
            if name.is_empty() {
                return Err("`${params.}` names no parameter".to_owned());
            }
            return Ok(Segment::Param(name.to_owned()));
        }
        if let Some(rest) = inner.strip_prefix("guarded[") {
            let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"');
            let Some(quote) = quote else {
                return Err(format!("expected `guarded['name']` in `${{{inner}}}`"));
            };
            let rest = &rest[1..];
            let Some(close) = rest.find(quote) else {
                return Err(format!("unclosed guard name in `${{{inner}}}`"));
            };
            let guard = rest[..close].to_owned();
            let tail = rest[close + 1..]
                .strip_prefix(']')
                .ok_or_else(|| format!("expected `]` in `${{{inner}}}`"))?;
            return match tail {
                ".identity" => Ok(Segment::GuardedIdentity(guard)),
                _ => match tail.strip_prefix(".attributes.") {
                    Some(attribute) if !attribute.is_empty() => {
                        Ok(Segment::GuardedAttribute(guard, attribute.to_owned()))
                    }
                    _ => Err(format!(
                        "expected `.identity` or `.attributes.<name>` after `guarded['{guard}']`"
                    )),
                },
            };
        }
        if variables.contains(&inner) {
            return Ok(Segment::Variable(inner.to_owned()));
        }
        let mut expected = vec!["params.<name>", "guarded['<guard>'].identity"];
        expected.extend(variables.iter().copied());
        Err(format!(
            "unknown expression `${{{inner}}}`; expected one of {}",
            expected.join(", ")
        ))
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The text if the expression has no variable.
    pub fn as_literal(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [] => Some(""),
            [Segment::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// The value; `None` when a variable has no value in `context`.
    pub fn evaluate(&self, context: &dyn ExpressionContext) -> Option<String> {
        let mut out = String::new();
        for segment in &self.segments {
            out.push_str(&Self::value(segment, context)?);
        }
        Some(out)
    }

    /// The value with every variable that has no value in `context` (a guard without a
    /// session, say) written as nothing: how Zilla's `http-kafka` fills its templates.
    pub fn render(&self, context: &dyn ExpressionContext) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            if let Some(value) = Self::value(segment, context) {
                out.push_str(&value);
            }
        }
        out
    }

    fn value<'a>(segment: &'a Segment, context: &'a dyn ExpressionContext) -> Option<Cow<'a, str>> {
        Some(match segment {
            Segment::Literal(text) => Cow::Borrowed(text.as_str()),
            Segment::Param(name) => Cow::Borrowed(context.param(name)?),
            Segment::GuardedIdentity(guard) => Cow::Borrowed(context.guarded(guard)?.identity()?),
            Segment::GuardedAttribute(guard, attribute) => {
                Cow::Owned(context.guarded(guard)?.attribute(attribute)?)
            }
            Segment::Variable(name) => Cow::Owned(context.variable(name)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Context;
    impl ExpressionContext for Context {
        fn param(&self, name: &str) -> Option<&str> {
            (name == "id").then_some("42")
        }
        fn variable(&self, name: &str) -> Option<String> {
            (name == "idempotencyKey").then(|| "k".to_owned())
        }
    }

    #[test]
    fn compiles_and_evaluates() {
        let expression =
            Expression::compile("items-${params.id}/${idempotencyKey}", &["idempotencyKey"])
                .unwrap();
        assert_eq!(expression.evaluate(&Context).as_deref(), Some("items-42/k"));
        assert_eq!(
            Expression::compile("${guarded['jwt0'].identity}", &[])
                .unwrap()
                .segments(),
            &[Segment::GuardedIdentity("jwt0".into())]
        );
        assert_eq!(
            Expression::compile("${guarded[\"g\"].attributes.tenant}", &[])
                .unwrap()
                .segments(),
            &[Segment::GuardedAttribute("g".into(), "tenant".into())]
        );
        assert_eq!(
            Expression::compile("plain", &[]).unwrap().as_literal(),
            Some("plain")
        );
    }

    #[test]
    fn unknown_or_missing_values() {
        assert!(
            Expression::compile("${nope}", &[])
                .unwrap_err()
                .contains("unknown expression")
        );
        assert!(Expression::compile("${params.id", &[]).is_err());
        let missing = Expression::compile("${params.other}", &[]).unwrap();
        assert_eq!(missing.evaluate(&Context), None);
        let partly =
            Expression::compile("a-${params.id}-${guarded['jwt0'].identity}", &[]).unwrap();
        assert_eq!(partly.evaluate(&Context), None);
        assert_eq!(partly.render(&Context), "a-42-");
    }
}
