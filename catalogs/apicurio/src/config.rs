//! Typed options of the apicurio catalog, spelled as in Zilla's `zilla.yaml`.

use schemars::JsonSchema;
use serde::Deserialize;

/// `options` of an `apicurio` (or `apicurio-registry`) catalog.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApicurioOptions {
    /// The registry's base URL, e.g. `http://localhost:8080`; ending in `/apis/registry/v3`
    /// selects the v3 API (`/apis/registry/v2`, or none, the v2 API).
    pub url: String,
    /// The artifact group subjects are looked up in (default `default`).
    #[serde(rename = "group-id")]
    pub group_id: Option<String>,
    /// Which id names a schema, in messages and lookups (default `globalId`).
    #[serde(rename = "use-id")]
    pub use_id: Option<UseId>,
    /// How the id is written after the magic byte (default `default`: 8 bytes).
    #[serde(rename = "id-encoding")]
    pub id_encoding: Option<IdEncoding>,
    /// How long, in seconds, a subject's resolution is trusted before it is fetched again
    /// (default 300). Schemas by id never change and stay cached.
    #[serde(rename = "max-age")]
    pub max_age: Option<u64>,
}

/// `use-id`: the artifact version's id that names its schema.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum UseId {
    /// The version's global id, unique per version.
    #[default]
    #[serde(rename = "globalId")]
    GlobalId,
    /// The id of the version's content, shared by versions with the same content.
    #[serde(rename = "contentId")]
    ContentId,
}

/// `id-encoding`: how many bytes the id takes after the magic byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdEncoding {
    /// 8 bytes, big-endian (Apicurio's serializers' default).
    #[default]
    Default,
    /// 4 bytes, big-endian (Apicurio's legacy encoding, as Confluent's).
    Legacy,
}
