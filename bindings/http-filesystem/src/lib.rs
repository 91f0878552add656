//! The `http-filesystem` binding: a `proxy` that answers `http` exchanges with files from a
//! `filesystem` server.
//!
//! A request is matched against the routes (`when`: `method` and `path`, the path without its
//! query and percent-decoded, `{name}` capturing one or more characters); the route's
//! `with.path` (an expression such as `${params.path}`, compiled at load) names the file
//! relative to the filesystem server's `location`. Without `with`, the request path itself
//! (without its leading `/`) names the file.
//!
//! ```yaml
//! name: example
//! bindings:
//!   east_http_filesystem_mapping:
//!     type: http-filesystem
//!     kind: proxy
//!     routes:
//!       - when:
//!           - method: GET
//!             path: /{path}
//!         exit: east_filesystem_server
//!         with:
//!           path: ${params.path}
//!   east_filesystem_server:
//!     type: filesystem
//!     kind: server
//!     options:
//!       location: /var/www/
//! ```
//!
//! No options. Routes: `when[].method` (`GET`, `PUT`, `POST`, `DELETE`, `HEAD`),
//! `when[].path`; `with.path` and `with.directory` (the directory `path` is relative to), both
//! expressions over `${params.<name>}` and `${guarded['<guard>'].identity}`. Directory
//! listings (`with.directory` without `path`) are refused at load: this build serves files.
//!
//! Answers:
//! - `GET` / `HEAD`: `200` with `content-type` (guessed from the file extension),
//!   `content-length`, `etag` and, for `GET`, the content streamed from the file.
//! - `if-none-match` naming the current tag (or `*`): `304` with `content-type` and `etag`.
//! - `prefer: wait=<seconds>` with `if-none-match`: a long poll. The answer waits until the file
//!   changes (then `200` with the new content) or the time passes (then `304`). The wait is at
//!   most `zilla.binding.http.filesystem.maximum.wait.millis` (default 120000), however large
//!   the number sent.
//! - `POST`: creates the file with the request body (`204` with the new `etag`); `409` when
//!   it exists, `404` when its directory does not.
//! - `PUT`: replaces an existing file's content with the request body (`204` with the new
//!   `etag`), only with `if-match` naming its current tag (or `*`): `428` without one, `412`
//!   when it is not current.
//! - `DELETE`: deletes the file (`204`); with `if-match`, only while that tag is current
//!   (else `412`).
//! - a missing file, a path leaving the served directory (`..`), or no matching route: `404`.
//! - a path that is not valid percent-encoded UTF-8: `400`.
//! - other methods on a matching route: `405`.
//!
//! As in Zilla, a route without `method` takes every method, writes included: name
//! `method: GET` and `method: HEAD` in `when` to serve a directory read-only.
//!
//! Entity tags are sent quoted (`"…"`), as HTTP specifies; `if-none-match` and `if-match`
//! values are compared weakly and accepted quoted or bare (Zilla sends them bare).

pub mod config;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use serde::Deserialize;
use zilla_binding_filesystem::kind::{
    Capabilities, FileBody, FileMetadata, FileRequest, FileResponse, FileSystem, FileSystemError,
    FileSystemHandler,
};
use zilla_binding_http::kind::{
    Body, Http, HttpHandler, Request, Response, authorization, boxed, empty, status_of,
    status_response,
};
use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext};
use zilla_engine::expr::{Expression, RouteScope, Segment};
use zilla_engine::pattern::{Captures, Pattern};
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, StreamError, StreamKind};
use zilla_engine::{BindingKind, BuildError, Registry};

use config::{HttpFileSystemCondition, HttpFileSystemWith};

/// Registers the `http-filesystem` binding type.
pub fn register(registry: &mut Registry) {
    registry
        .binding(HttpFileSystemFactory)
        .properties(&[MAXIMUM_WAIT_PROPERTY]);
}

/// The longest `prefer: wait` honoured, in milliseconds.
pub const MAXIMUM_WAIT_PROPERTY: &str = "zilla.binding.http.filesystem.maximum.wait.millis";

/// Below the tcp idle timeout (300 s), so a waiting request is not cut as idle.
const DEFAULT_MAXIMUM_WAIT: Duration = Duration::from_secs(120);

/// Builds http-filesystem bindings.
#[derive(Debug)]
pub struct HttpFileSystemFactory;

impl BindingFactory for HttpFileSystemFactory {
    fn type_name(&self) -> &'static str {
        "http-filesystem"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Proxy]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[Http::NAME]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        Some(FileSystem::NAME)
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: None,
            options_required: false,
            when: Some(BindingSchema::of::<HttpFileSystemCondition>()),
            with: Some(BindingSchema::of::<HttpFileSystemWith>()),
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let routes = context.routes::<FileSystem, _, _, Target>(Condition::compile)?;
        if routes.is_empty() {
            return Err(BuildError::at(
                "",
                "an http-filesystem proxy needs an `exit` or `routes` with exits",
            ));
        }
        for (index, route) in routes.iter().enumerate() {
            let Some(target) = &route.with else { continue };
            let captured: BTreeSet<&str> = route
                .when
                .iter()
                .flat_map(|condition| condition.captures.iter().map(String::as_str))
                .collect();
            if let Some(missing) = target.params().find(|name| !captured.contains(name)) {
                return Err(BuildError::at(
                    format!("routes[{index}].with"),
                    format!(
                        "`${{params.{missing}}}` is not captured by any `when` path of this route"
                    ),
                ));
            }
        }
        let proxy = Arc::new(HttpFileSystemProxy {
            qname: context.name().to_string(),
            namespace: context.name().namespace.clone(),
            routes,
            maximum_wait: context
                .properties()
                .millis(MAXIMUM_WAIT_PROPERTY, DEFAULT_MAXIMUM_WAIT),
        });
        context.publish::<Http>(proxy.clone());
        Ok(proxy)
    }
}

/// A compiled `when` entry.
#[derive(Debug)]
struct Condition {
    method: Option<Method>,
    path: Option<Pattern>,
    /// The `{name}`s `path` captures.
    captures: Vec<String>,
}

impl Condition {
    fn compile(raw: HttpFileSystemCondition) -> Result<Self, String> {
        // Zilla's `{name}` crosses `/`, so `/{path}` serves nested files too.
        let path = raw
            .path
            .as_deref()
            .map(|path| Pattern::compile(path, None))
            .transpose()?;
        Ok(Self {
            method: raw.method.map(config::HttpMethod::as_method),
            captures: raw.path.as_deref().map(capture_names).unwrap_or_default(),
            path,
        })
    }

    fn matches(&self, method: &Method, path: &str) -> Option<Captures> {
        if self.method.as_ref().is_some_and(|wanted| wanted != method) {
            return None;
        }
        match &self.path {
            Some(pattern) => pattern.captures(path),
            None => Some(Captures::new()),
        }
    }
}

fn capture_names(pattern: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        names.push(rest[start + 1..start + end].to_owned());
        rest = &rest[start + end + 1..];
    }
    names
}

/// A compiled `with`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "HttpFileSystemWith")]
struct Target {
    path: Expression,
    directory: Option<Expression>,
}

impl TryFrom<HttpFileSystemWith> for Target {
    type Error = String;

    fn try_from(with: HttpFileSystemWith) -> Result<Self, String> {
        let Some(path) = with.path else {
            return Err("listing a directory (`directory` without `path`) is not supported".into());
        };
        Ok(Self {
            path: Expression::compile(&path, &[])?,
            directory: with
                .directory
                .as_deref()
                .map(|directory| Expression::compile(directory, &[]))
                .transpose()?,
        })
    }
}

impl Target {
    fn params(&self) -> impl Iterator<Item = &str> {
        let directory = self.directory.iter().flat_map(Expression::segments);
        self.path
            .segments()
            .iter()
            .chain(directory)
            .filter_map(|segment| match segment {
                Segment::Param(name) => Some(name.as_str()),
                _ => None,
            })
    }

    /// The file's path; `None` when a guarded value the expressions use is missing.
    fn evaluate(&self, context: &RouteScope<'_>) -> Option<String> {
        let path = self.path.evaluate(context)?;
        match &self.directory {
            None => Some(path),
            Some(directory) => {
                let directory = directory.evaluate(context)?;
                Some(format!("{}/{path}", directory.trim_end_matches('/')))
            }
        }
    }
}

/// A built http-filesystem proxy.
struct HttpFileSystemProxy {
    /// The longest `prefer: wait` honoured.
    maximum_wait: Duration,
    qname: String,
    namespace: String,
    routes: Routes<Condition, Target, Arc<dyn FileSystemHandler>>,
}

impl Binding for HttpFileSystemProxy {}

impl HttpHandler for HttpFileSystemProxy {
    fn handle(&self, request: Request) -> BoxFuture<'_, Result<Response, StreamError>> {
        Box::pin(self.serve(request))
    }
}

impl HttpFileSystemProxy {
    async fn serve(&self, request: Request) -> Result<Response, StreamError> {
        let Some(path) = percent_decode(request.uri().path()) else {
            return Ok(status_response(StatusCode::BAD_REQUEST));
        };
        let method = request.method().clone();
        let resolved = self
            .routes
            .resolve_with(authorization(&request), |condition| {
                condition.matches(&method, &path)
            });
        let Some((route, captures)) = resolved else {
            tracing::debug!(binding = %self.qname, %method, path, "no route");
            return Ok(status_response(StatusCode::NOT_FOUND));
        };
        let capabilities = match method {
            Method::GET => Capabilities::READ_FILE | Capabilities::READ_METADATA,
            Method::HEAD => Capabilities::READ_METADATA,
            Method::POST => Capabilities::CREATE_FILE,
            Method::PUT => Capabilities::WRITE_FILE,
            Method::DELETE => Capabilities::DELETE_FILE,
            _ => {
                let mut response = status_response(StatusCode::METHOD_NOT_ALLOWED);
                response.headers_mut().insert(
                    ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE"),
                );
                return Ok(response);
            }
        };
        let file = match &route.with {
            Some(target) => target.evaluate(&RouteScope {
                captures: &captures,
                authorization: authorization(&request),
                namespace: &self.namespace,
            }),
            None => Some(path.trim_start_matches('/').to_owned()),
        };
        let Some(file) = file else {
            return Ok(status_response(StatusCode::NOT_FOUND));
        };
        let preconditions = Preconditions::of(request.headers(), self.maximum_wait);

        let mut file_request = FileRequest::new(file, capabilities);
        if capabilities.intersects(Capabilities::writes()) {
            if let Some(tag) = preconditions.if_match.first() {
                file_request = file_request.with_tag(tag.clone());
            }
            if capabilities.intersects(Capabilities::CREATE_FILE | Capabilities::WRITE_FILE) {
                let content = request
                    .into_body()
                    .into_data_stream()
                    .map(|chunk| chunk.map_err(std::io::Error::other));
                file_request = file_request.with_content(Box::pin(content));
            }
        } else if let Some(tag) = preconditions.if_none_match.first() {
            file_request = file_request.with_tag(tag.clone());
            if let Some(wait) = preconditions.wait {
                file_request = file_request.with_wait(wait);
            }
        }
        match route.exit.handle(file_request).await {
            Ok(FileResponse::Found { metadata, body }) => {
                if preconditions.none_match(&metadata.tag) {
                    Ok(not_modified(&metadata))
                } else {
                    Ok(found(&metadata, body))
                }
            }
            Ok(FileResponse::NotModified { metadata }) => Ok(not_modified(&metadata)),
            Ok(FileResponse::Written { metadata }) => {
                let mut response = status_response(StatusCode::NO_CONTENT);
                insert(response.headers_mut(), ETAG, &entity_tag(&metadata));
                Ok(response)
            }
            Ok(FileResponse::Deleted) => Ok(status_response(StatusCode::NO_CONTENT)),
            Ok(FileResponse::Failed(error)) => Ok(status_response(status_of_failure(error))),
            Ok(other) => {
                tracing::warn!(binding = %self.qname, ?other, "unexpected filesystem answer");
                Ok(status_response(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Err(error) => {
                tracing::debug!(binding = %self.qname, %error, "filesystem failed");
                Ok(status_response(status_of(&error)))
            }
        }
    }
}

/// The status answering a refused filesystem operation.
fn status_of_failure(error: FileSystemError) -> StatusCode {
    match error {
        FileSystemError::FileNotFound | FileSystemError::DirectoryNotFound => StatusCode::NOT_FOUND,
        FileSystemError::FileExists
        | FileSystemError::DirectoryExists
        | FileSystemError::DirectoryNotEmpty => StatusCode::CONFLICT,
        FileSystemError::FileModified => StatusCode::PRECONDITION_FAILED,
        FileSystemError::FileTagMissing => StatusCode::PRECONDITION_REQUIRED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The conditional-request headers.
#[derive(Debug, Default, PartialEq, Eq)]
struct Preconditions {
    /// `if-none-match` entity tags, unquoted; `*` stays `*`.
    if_none_match: Vec<String>,
    /// `if-match` entity tags, unquoted; `*` stays `*`.
    if_match: Vec<String>,
    /// `prefer: wait=<seconds>`.
    wait: Option<Duration>,
}

impl Preconditions {
    fn of(headers: &HeaderMap, maximum_wait: Duration) -> Self {
        let prefer = HeaderName::from_static("prefer");
        let wait = list_items(headers, &prefer).find_map(|preference| {
            let token = preference.split(';').next()?.trim();
            let (name, value) = token.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            zilla_engine::limits::clamped_seconds(value.trim().trim_matches('"'), maximum_wait)
        });
        Self {
            if_none_match: entity_tags(headers, &IF_NONE_MATCH),
            if_match: entity_tags(headers, &IF_MATCH),
            wait,
        }
    }

    /// Whether `if-none-match` names `tag` (or `*`): the client has it.
    fn none_match(&self, tag: &str) -> bool {
        self.if_none_match
            .iter()
            .any(|known| known == "*" || known == tag)
    }
}

/// The entity tags of every `name` header, unquoted and without their weakness mark, as
/// `If-None-Match` compares them (weakly); `*` is kept.
fn entity_tags(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    list_items(headers, name)
        .map(|item| {
            let tag = item.strip_prefix("W/").unwrap_or(item);
            tag.strip_prefix('"')
                .and_then(|tag| tag.strip_suffix('"'))
                .unwrap_or(tag)
        })
        .filter(|tag| !tag.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The comma-separated items of every `name` header, trimmed.
fn list_items<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn found(metadata: &FileMetadata, body: Option<FileBody>) -> Response {
    let body: Body = match body {
        Some(chunks) => boxed(http_body_util::StreamBody::new(
            chunks.map(|chunk| chunk.map(Frame::data)),
        )),
        None => empty(),
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    insert(headers, CONTENT_TYPE, &metadata.content_type);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(metadata.size));
    insert(headers, ETAG, &entity_tag(metadata));
    response
}

fn not_modified(metadata: &FileMetadata) -> Response {
    let mut response = status_response(StatusCode::NOT_MODIFIED);
    let headers = response.headers_mut();
    insert(headers, CONTENT_TYPE, &metadata.content_type);
    insert(headers, ETAG, &entity_tag(metadata));
    response
}

/// The file's tag as an HTTP entity tag.
fn entity_tag(metadata: &FileMetadata) -> String {
    format!("\"{}\"", metadata.tag)
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => tracing::debug!(%name, value, "not a valid header value; left out"),
    }
}

/// `path` with `%XX` escapes decoded; `None` when the result is not UTF-8.
/// `path` with `%XX` escapes decoded; `None` when the result is not UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn if_none_match_lists_quoted_bare_and_weak() {
        let preconditions = Preconditions::of(
            &headers(&[
                ("if-none-match", r#""a-1", W/"b-2""#),
                ("if-none-match", "c-3"),
            ]),
            Duration::MAX,
        );
        assert_eq!(preconditions.if_none_match, ["a-1", "b-2", "c-3"]);
        assert!(preconditions.none_match("b-2"));
        assert!(preconditions.none_match("c-3"));
        assert!(!preconditions.none_match("d-4"));
        assert!(preconditions.if_match.is_empty());
        let any = Preconditions::of(&headers(&[("if-none-match", "*")]), Duration::MAX);
        assert!(any.none_match("whatever"));
        let none = Preconditions::of(&HeaderMap::new(), Duration::MAX);
        assert!(none.if_none_match.is_empty() && none.wait.is_none());
        let if_match = Preconditions::of(&headers(&[("if-match", r#""x", *"#)]), Duration::MAX);
        assert_eq!(if_match.if_match, ["x", "*"]);
    }

    #[test]
    fn prefer_wait_among_other_preferences() {
        let wait = |value: &str| {
            Preconditions::of(&headers(&[("prefer", value)]), Duration::from_secs(60)).wait
        };
        assert_eq!(wait("wait=10"), Some(Duration::from_secs(10)));
        assert_eq!(wait("respond-async, wait=5"), Some(Duration::from_secs(5)));
        assert_eq!(wait("Wait = 3; x=y"), Some(Duration::from_secs(3)));
        assert_eq!(wait("return=minimal"), None);
        assert_eq!(wait("wait=soon"), None);
        assert_eq!(wait("wait=99999999999"), Some(Duration::from_secs(60)));
    }

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(
            percent_decode("/my%20file.html").as_deref(),
            Some("/my file.html")
        );
        assert_eq!(percent_decode("/%2e%2e/x").as_deref(), Some("/../x"));
        assert_eq!(percent_decode("/100%").as_deref(), Some("/100%"));
        assert_eq!(percent_decode("/%zz").as_deref(), Some("/%zz"));
        assert_eq!(percent_decode("/%ff"), None);
    }

    #[test]
    fn capture_names_of_patterns() {
        assert_eq!(capture_names("/{a}/x/{b}.html"), ["a", "b"]);
        assert!(capture_names("/static/*").is_empty());
    }
}
