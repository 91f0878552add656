//! Route conditions and route parameters of the http-filesystem binding, spelled as in Zilla's
//! `zilla.yaml`. The binding takes no `options`.

use schemars::JsonSchema;
use serde::Deserialize;

/// One `when` entry: every field given must match.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpFileSystemCondition {
    /// The request method.
    pub method: Option<HttpMethod>,
    /// The request path, without its query and percent-decoded. `*` matches any characters
    /// and `{name}` captures one or more characters (slashes included) for `${params.name}`.
    pub path: Option<String>,
}

/// A request method a route can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`: read a file.
    Get,
    /// `PUT`: replace a file.
    Put,
    /// `POST`: create a file.
    Post,
    /// `DELETE`: delete a file.
    Delete,
    /// `HEAD`: read a file's metadata.
    Head,
}

impl HttpMethod {
    /// The method as `http` spells it.
    pub fn as_method(self) -> http::Method {
        match self {
            Self::Get => http::Method::GET,
            Self::Put => http::Method::PUT,
            Self::Post => http::Method::POST,
            Self::Delete => http::Method::DELETE,
            Self::Head => http::Method::HEAD,
        }
    }
}

/// `with`: which file a matched request maps to.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [{"required": ["path"]}, {"required": ["directory"]}]))]
pub struct HttpFileSystemWith {
    /// The file, relative to the filesystem server's `location`; may use `${params.name}`
    /// captured by `when.path` and `${guarded['guard'].identity}`.
    pub path: Option<String>,
    /// A directory the `path` is relative to; same expressions as `path`. Listing a directory
    /// (a `directory` without `path`) is not served by this build.
    pub directory: Option<String>,
}
