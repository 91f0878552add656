//! `options.requests`: validation with models. The first entry whose `path`, `method` and
//! `content-type` match a request applies.
//!
//! - On a server, header values, path and query parameter values and the body must each pass
//!   their model, or the request is answered `400`.
//! - On a client, the response is checked against the entry's `responses`: the last one whose
//!   `status` and `content-type` match (as Zilla picks it) applies, its header values and body
//!   must pass their models, or the response is replaced by `502 Bad Gateway`. A response
//!   `content-type` matches on its media type, parameters such as `charset` aside, so that a
//!   parameter cannot carry a response past its model.
//!
//! As in Zilla: values are checked as they arrive (query values are not percent-decoded), a
//! header or parameter that is absent is not checked, and neither is an empty body.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use regex::Regex;
use zilla_engine::binding::BuildError;
use zilla_engine::components::Validator;

use crate::config::{HttpMethod, HttpRequestConfig, HttpStatuses, ModelReference};
use crate::kind::pseudo_header;

/// Builds a validator from a model reference written at a config path.
pub type ModelBuilder<'a> =
    dyn Fn(&serde_json::Value, &str) -> Result<Arc<dyn Validator>, BuildError> + 'a;

/// The compiled `requests` of one binding, in order.
#[derive(Default)]
pub struct RequestTypes {
    types: Vec<RequestType>,
}

impl std::fmt::Debug for RequestTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.types.iter().map(|t| t.path.as_str()))
            .finish()
    }
}

/// One compiled entry of `requests`.
pub struct RequestType {
    path: Regex,
    /// The names of `path`'s parameters, by capture group (from 1).
    params: Vec<String>,
    method: Option<HttpMethod>,
    content_types: Option<Vec<String>>,
    headers: HeaderModels,
    path_params: Vec<(usize, Arc<dyn Validator>)>,
    query_params: Vec<(String, Arc<dyn Validator>)>,
    content: Option<Arc<dyn Validator>>,
    responses: Vec<ResponseType>,
}

/// One compiled entry of `requests[].responses`.
pub struct ResponseType {
    statuses: Option<Vec<u16>>,
    content_types: Option<Vec<String>>,
    headers: HeaderModels,
    content: Option<Arc<dyn Validator>>,
}

impl RequestTypes {
    /// Compiles `requests` (at `options.requests`), building each model with `model`.
    pub fn build(
        requests: &[HttpRequestConfig],
        model: &ModelBuilder<'_>,
    ) -> Result<Self, BuildError> {
        let mut types = Vec::new();
        for (index, request) in requests.iter().enumerate() {
            let at = format!("options.requests[{index}]");
            types.push(RequestType::build(request, &at, model)?);
        }
        Ok(Self { types })
    }

    /// The entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = &RequestType> {
        self.types.iter()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The first entry that applies to `request`.
    pub fn resolve<B>(&self, request: &http::Request<B>) -> Option<&RequestType> {
        if self.types.is_empty() {
            return None;
        }
        let path = pseudo_header(request, ":path")?;
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        self.types.iter().find(|candidate| {
            candidate
                .method
                .is_none_or(|method| method.as_str() == request.method().as_str())
                && match (&candidate.content_types, content_type) {
                    (Some(accepted), Some(content_type)) => accepted
                        .iter()
                        .any(|accepted| accepted.eq_ignore_ascii_case(content_type.trim())),
                    _ => true,
                }
                && candidate.path.is_match(&path)
        })
    }
}

impl RequestType {
    fn build(
        request: &HttpRequestConfig,
        at: &str,
        model: &ModelBuilder<'_>,
    ) -> Result<Self, BuildError> {
        let (path, params) = compile_path(&request.path)
            .map_err(|message| BuildError::at(format!("{at}.path"), message))?;
        let build = |reference: &ModelReference, path: String| model(&reference.0, &path);
        let headers = compile_headers(request.headers.as_ref(), at, model)?;
        let params_config = request.params.as_ref();
        let mut path_params = Vec::new();
        for (name, reference) in params_config
            .and_then(|params| params.path.as_ref())
            .into_iter()
            .flatten()
        {
            let where_ = format!("{at}.params.path.{name}");
            let Some(position) = params.iter().position(|param| param == name) else {
                return Err(BuildError::at(
                    where_,
                    format!("`path` has no `{{{name}}}` parameter"),
                ));
            };
            path_params.push((position + 1, build(reference, where_)?));
        }
        let mut query_params = Vec::new();
        for (name, reference) in params_config
            .and_then(|params| params.query.as_ref())
            .into_iter()
            .flatten()
        {
            let where_ = format!("{at}.params.query.{name}");
            query_params.push((name.clone(), build(reference, where_)?));
        }
        let content = request
            .content
            .as_ref()
            .map(|reference| build(reference, format!("{at}.content")))
            .transpose()?;
        // A server does not validate responses (nor does Zilla's), but their models must
        // still name what exists; a client does.
        let mut responses = Vec::new();
        for (index, response) in request.responses.iter().flatten().enumerate() {
            let at = format!("{at}.responses[{index}]");
            responses.push(ResponseType {
                statuses: response.status.as_ref().map(|statuses| match statuses {
                    HttpStatuses::One(status) => vec![*status],
                    HttpStatuses::Many(statuses) => statuses.clone(),
                }),
                content_types: response.content_type.clone(),
                headers: compile_headers(response.headers.as_ref(), &at, model)?,
                content: response
                    .content
                    .as_ref()
                    .map(|reference| build(reference, format!("{at}.content")))
                    .transpose()?,
            });
        }
        Ok(Self {
            path,
            params,
            method: request.method,
            content_types: request.content_type.clone(),
            headers,
            path_params,
            query_params,
            content,
            responses,
        })
    }

    /// Whether the entry has models for the request itself (headers, parameters or body).
    pub fn checks_requests(&self) -> bool {
        !self.headers.is_empty()
            || !self.path_params.is_empty()
            || !self.query_params.is_empty()
            || self.content.is_some()
    }

    /// The `responses` entry that applies to a response: the last whose `status` and
    /// `content-type` match, as Zilla picks it.
    pub fn response(&self, status: StatusCode, headers: &HeaderMap) -> Option<&ResponseType> {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(media_type);
        self.responses.iter().rev().find(|candidate| {
            candidate
                .statuses
                .as_ref()
                .is_none_or(|statuses| statuses.contains(&status.as_u16()))
                && match (&candidate.content_types, content_type) {
                    (Some(accepted), Some(content_type)) => accepted
                        .iter()
                        .any(|accepted| media_type(accepted).eq_ignore_ascii_case(content_type)),
                    _ => true,
                }
        })
    }

    /// Checks the header, path parameter and query parameter values; the error says which
    /// value failed and why.
    pub fn check_head<B>(&self, request: &http::Request<B>) -> Result<(), String> {
        check_headers(&self.headers, request.headers())?;
        if self.path_params.is_empty() && self.query_params.is_empty() {
            return Ok(());
        }
        let path = pseudo_header(request, ":path").unwrap_or_default();
        if !self.path_params.is_empty()
            && let Some(captures) = self.path.captures(&path)
        {
            for (group, validator) in &self.path_params {
                if let Some(value) = captures.get(*group) {
                    validator
                        .validate(value.as_str().as_bytes())
                        .map_err(|reason| {
                            format!("path parameter `{}`: {reason}", self.params[*group - 1])
                        })?;
                }
            }
        }
        if let Some((_, query)) = path.split_once('?') {
            for pair in query.split('&') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if name.is_empty() || value.is_empty() {
                    continue;
                }
                for (_, validator) in self.query_params.iter().filter(|(n, _)| n == name) {
                    validator
                        .validate(value.as_bytes())
                        .map_err(|reason| format!("query parameter `{name}`: {reason}"))?;
                }
            }
        }
        Ok(())
    }

    /// The model for the body, if any.
    pub fn content(&self) -> Option<&Arc<dyn Validator>> {
        self.content.as_ref()
    }
}

impl ResponseType {
    /// Checks the response header values; the error says which failed and why.
    pub fn check_head(&self, headers: &HeaderMap) -> Result<(), String> {
        check_headers(&self.headers, headers)
    }

    /// The model for the body, if any.
    pub fn content(&self) -> Option<&Arc<dyn Validator>> {
        self.content.as_ref()
    }
}

/// Header models: the header, and the model its values must pass.
type HeaderModels = Vec<(HeaderName, Arc<dyn Validator>)>;

/// Compiles the header models of `headers` (at `<at>.headers`).
fn compile_headers(
    headers: Option<&std::collections::BTreeMap<String, ModelReference>>,
    at: &str,
    model: &ModelBuilder<'_>,
) -> Result<HeaderModels, BuildError> {
    let mut compiled = Vec::new();
    for (name, reference) in headers.into_iter().flatten() {
        let where_ = format!("{at}.headers.{name}");
        let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|_| BuildError::at(&where_, format!("`{name}` is not a header name")))?;
        compiled.push((header, model(&reference.0, &where_)?));
    }
    Ok(compiled)
}

fn check_headers(models: &HeaderModels, headers: &HeaderMap) -> Result<(), String> {
    for (name, validator) in models {
        for value in headers.get_all(name) {
            validator
                .validate(value.as_bytes())
                .map_err(|reason| format!("header `{name}`: {reason}"))?;
        }
    }
    Ok(())
}

/// A content type without its parameters, trimmed.
fn media_type(content_type: &str) -> &str {
    content_type
        .split_once(';')
        .map_or(content_type, |(media, _)| media)
        .trim()
}

/// Bodies up to this size are validated on the connection's task.
const VALIDATE_INLINE_MAX: usize = 64 * 1024;

/// Checks a whole body with `content`; a large one on a blocking thread, since parsing
/// megabytes would hold up the other connections of this worker.
pub async fn validate_whole(content: &Arc<dyn Validator>, data: &Bytes) -> Result<(), String> {
    // A schema the body names that is not cached yet is fetched here, off the worker's
    // thread, so a slow registry holds up this request only.
    if let Some(fetching) = content.fetch(data) {
        fetching.await;
    }
    if data.len() <= VALIDATE_INLINE_MAX {
        return content.validate(data);
    }
    let (content, data) = (content.clone(), data.clone());
    tokio::task::spawn_blocking(move || content.validate(&data))
        .await
        .unwrap_or_else(|error| Err(error.to_string()))
}

/// The regex a `path` compiles to: literal text, `{name}` for one or more characters, then an
/// optional trailing `/` and query string. Also returns the parameter names in order.
fn compile_path(path: &str) -> Result<(Regex, Vec<String>), String> {
    let mut regex = String::from("^");
    let mut names = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        regex.push_str(&regex::escape(&rest[..open]));
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("unclosed `{{` in `{path}`"));
        };
        let name = &rest[open + 1..open + close];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("invalid parameter name `{name}` in `{path}`"));
        }
        if names.iter().any(|known| known == name) {
            return Err(format!("parameter `{name}` appears twice in `{path}`"));
        }
        regex.push_str("(.+?)");
        names.push(name.to_owned());
        rest = &rest[open + close + 1..];
    }
    regex.push_str(&regex::escape(rest));
    regex.push_str(r"/?(?:\?.*)?$");
    let regex = Regex::new(&regex).map_err(|error| error.to_string())?;
    Ok((regex, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpParamsConfig;
    use std::collections::BTreeMap;

    /// Accepts values made of ASCII digits only.
    struct Digits;

    impl Validator for Digits {
        fn validate(&self, data: &[u8]) -> Result<(), String> {
            if !data.is_empty() && data.iter().all(u8::is_ascii_digit) {
                Ok(())
            } else {
                Err("not digits".to_owned())
            }
        }
    }

    fn model(reference: &serde_json::Value, _path: &str) -> Result<Arc<dyn Validator>, BuildError> {
        match reference.as_str() {
            Some("digits") => Ok(Arc::new(Digits)),
            _ => Err(BuildError::at("", "unknown model")),
        }
    }

    fn digits() -> ModelReference {
        ModelReference(serde_json::json!("digits"))
    }

    fn request_config(path: &str) -> HttpRequestConfig {
        HttpRequestConfig {
            path: path.to_owned(),
            method: None,
            content_type: None,
            headers: None,
            params: None,
            content: None,
            responses: None,
        }
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn paths_match_with_parameters_trailing_slash_and_query() {
        let (regex, names) = compile_path("/items/{id}/tags/{tag-name}").unwrap();
        assert_eq!(names, ["id", "tag-name"]);
        // As in Zilla, a parameter may span segments.
        for path in [
            "/items/1/tags/x",
            "/items/1/tags/x/",
            "/items/1/tags/x?a=b",
            "/items/a/b/tags/x",
            "/items/1/tags/x/y/",
        ] {
            assert!(regex.is_match(path), "{path}");
        }
        for path in [
            "/items//tags/x",
            "/items/1/tags",
            "/other/1/tags/x",
            "/items/1/tags/",
        ] {
            assert!(!regex.is_match(path), "{path}");
        }
        let (literal, _) = compile_path("/a.b").unwrap();
        assert!(literal.is_match("/a.b"));
        assert!(!literal.is_match("/aXb"));
        for bad in ["/items/{id", "/items/{}", "/items/{a b}", "/{a}/{a}"] {
            assert!(compile_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_entry_matching_method_content_type_and_path_applies() {
        let mut post = request_config("/items");
        post.method = Some(HttpMethod::Post);
        post.content_type = Some(vec!["application/json".into()]);
        post.content = Some(digits());
        let mut any = request_config("/items/{id}");
        any.content = Some(digits());
        let types = RequestTypes::build(&[post, any], &model).unwrap();
        let resolved = |method, uri, content_type: Option<&str>| {
            let headers: Vec<(&str, &str)> = content_type
                .map(|c| ("content-type", c))
                .into_iter()
                .collect();
            types
                .resolve(&request(method, uri, &headers))
                .map(|t| t.path.as_str().to_owned())
        };
        assert!(resolved("POST", "/items", Some("application/json")).is_some());
        assert!(resolved("POST", "/items", Some("Application/JSON")).is_some());
        assert!(resolved("POST", "/items", None).is_some());
        assert!(resolved("POST", "/items", Some("text/plain")).is_none());
        assert!(resolved("PUT", "/items", Some("application/json")).is_none());
        assert!(resolved("GET", "/items/7?x=1", Some("text/plain")).is_some());
        assert!(resolved("GET", "/other", None).is_none());
        assert!(
            RequestTypes::default()
                .resolve(&request("GET", "/", &[]))
                .is_none()
        );
    }

    #[test]
    fn headers_and_parameters_are_checked_when_present() {
        let mut config = request_config("/items/{id}");
        config.headers = Some(BTreeMap::from([("X-Count".to_owned(), digits())]));
        config.params = Some(HttpParamsConfig {
            path: Some(BTreeMap::from([("id".to_owned(), digits())])),
            query: Some(BTreeMap::from([("limit".to_owned(), digits())])),
        });
        let types = RequestTypes::build(&[config], &model).unwrap();
        let check = |uri: &str, headers: &[(&str, &str)]| {
            let request = request("GET", uri, headers);
            types.resolve(&request).unwrap().check_head(&request)
        };
        check("/items/42", &[]).unwrap();
        check("/items/42?limit=10&other=x&limit=", &[("x-count", "3")]).unwrap();
        let error = check("/items/abc", &[]).unwrap_err();
        assert_eq!(error, "path parameter `id`: not digits");
        let error = check("/items/1?limit=ten", &[]).unwrap_err();
        assert_eq!(error, "query parameter `limit`: not digits");
        let error = check("/items/1", &[("x-count", "3"), ("x-count", "many")]).unwrap_err();
        assert_eq!(error, "header `x-count`: not digits");
    }

    #[test]
    fn bad_requests_are_load_errors_at_their_path() {
        let mut unknown_param = request_config("/items/{id}");
        unknown_param.params = Some(HttpParamsConfig {
            path: Some(BTreeMap::from([("name".to_owned(), digits())])),
            query: None,
        });
        let error = RequestTypes::build(&[unknown_param], &model).unwrap_err();
        assert_eq!(error.path, "options.requests[0].params.path.name");
        assert!(error.message.contains("no `{name}`"), "{error}");

        let mut bad_model = request_config("/items");
        bad_model.content = Some(ModelReference(serde_json::json!("nope")));
        let ok = request_config("/ok");
        let error = RequestTypes::build(&[ok, bad_model], &|reference, path| {
            model(reference, path).map_err(|mut error| {
                error.path = path.to_owned();
                error
            })
        })
        .unwrap_err();
        assert_eq!(error.path, "options.requests[1].content");

        let error = RequestTypes::build(&[request_config("/{x")], &model).unwrap_err();
        assert_eq!(error.path, "options.requests[0].path");
    }
}
