//! Typed options of the filesystem binding, spelled as in Zilla's `zilla.yaml`.

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of a filesystem `server`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSystemOptions {
    /// The directory served: a path or a `file:` URI. A relative path resolves against the
    /// `zilla.binding.filesystem.server.root` property (default: the working directory), as in
    /// Zilla.
    pub location: Option<String>,
    /// Whether symbolic links below `location` are followed (`follow`, and only to targets
    /// inside `location`) or treated as missing files (`ignore`, the default).
    pub symlinks: Option<Symlinks>,
}

/// How symbolic links are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Symlinks {
    /// Follow links whose target stays inside `location`.
    Follow,
    /// A path through a link is not found.
    #[default]
    Ignore,
}
