//! The `apicurio` catalog (also registered as `apicurio-registry`): schemas fetched from an
//! Apicurio Registry over its REST API, v2 or v3. A subject is an artifact in the catalog's
//! `group-id`; its version's metadata names the schema's id (`use-id`: the version's
//! `globalId`, or its `contentId`), and the schema is fetched by that id
//! (`/ids/globalIds/{id}` or `/ids/contentIds/{id}`, answering the artifact's content as it
//! was registered). Messages it frames carry Apicurio's wire prefix: the magic byte `0x00` and
//! the id as 8 big-endian bytes (`id-encoding: default`) or 4 (`legacy`).
//!
//! The API version comes from the URL: one ending in `/apis/registry/v3` is asked v3 paths
//! (`/groups/{group}/artifacts/{artifact}/versions/{version}`, `branch=latest` for `latest`),
//! one ending in `/apis/registry/v2` v2 paths (`.../meta`, `.../versions/{version}/meta`), and
//! any other base URL v2 paths under `/apis/registry/v2`, as Zilla asks them.
//!
//! Caching, single-flight fetches with bounded waits, the behaviour when the registry is down
//! at load or later, and the bounds are the schema-registry catalog's
//! ([`zilla_catalog_schema_registry::RegistryCatalog`]); its events are
//! `CATALOG_APICURIO_UNRETRIEVABLE_ARTIFACT_ID` and
//! `CATALOG_APICURIO_UNRETRIEVABLE_ARTIFACT_SUBJECT_VERSION_STALE_ARTIFACT`. Schema ids are
//! 32-bit, as every catalog's: a message naming an 8-byte id beyond that is refused.
//!
//! ```yaml
//! name: example
//! catalogs:
//!   apicurio0:
//!     type: apicurio
//!     options:
//!       url: http://localhost:8080
//!       group-id: default
//!       use-id: globalId
//!       id-encoding: default
//!       max-age: 300
//! bindings:
//!   kafka_cache_client:
//!     type: kafka
//!     kind: cache_client
//!     options:
//!       topics:
//!         - name: items
//!           value:
//!             model: avro
//!             view: json
//!             catalog:
//!               apicurio0:
//!                 - strategy: topic
//!                   version: latest
//!     exit: kafka_cache_server
//! ```
//!
//! Options (Zilla's): `url` (required, `http://` or `https://`; an https registry is
//! verified against the system's trust store), `group-id` (default `default`), `use-id`
//! (`globalId`, the default, or `contentId`), `id-encoding` (`default`: 8 bytes, or `legacy`:
//! 4 bytes), `max-age` (seconds a subject's resolution is trusted, default 300). A catalog
//! `vault` fails the load, as Zilla's schema allows none.

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use zilla_catalog_schema_registry::{
    Dialect, EventNames, Fetched, MAGIC, RegistryCatalog, path_segment,
};
use zilla_engine::components::{Catalog, ComponentContext, ComponentFactory};
use zilla_engine::{BuildError, Registry};

use config::{ApicurioOptions, IdEncoding, UseId};

/// Raised when the registry cannot give a schema by id (Zilla's
/// `catalog.apicurio.unretrievable.artifact.id`).
pub const UNRETRIEVABLE_ARTIFACT_ID: &str = "CATALOG_APICURIO_UNRETRIEVABLE_ARTIFACT_ID";
/// Raised when a subject's refresh fails and its cached schema stays in use (Zilla's
/// `catalog.apicurio.unretrievable.artifact.subject.version.stale.artifact`).
pub const UNRETRIEVABLE_ARTIFACT_SUBJECT_VERSION_STALE_ARTIFACT: &str =
    "CATALOG_APICURIO_UNRETRIEVABLE_ARTIFACT_SUBJECT_VERSION_STALE_ARTIFACT";

/// The REST API paths of the two versions, as a URL may end.
const V2_ROOT: &str = "/apis/registry/v2";
const V3_ROOT: &str = "/apis/registry/v3";

/// Registers `apicurio` and `apicurio-registry`.
pub fn register(registry: &mut Registry) {
    for type_name in ["apicurio", "apicurio-registry"] {
        registry.catalog(ApicurioCatalogFactory { type_name });
    }
}

/// Builds apicurio catalogs.
#[derive(Debug)]
pub struct ApicurioCatalogFactory {
    type_name: &'static str,
}

impl ComponentFactory<dyn Catalog> for ApicurioCatalogFactory {
    fn type_name(&self) -> &'static str {
        self.type_name
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(
            ApicurioOptions
        )))
    }

    fn options_required(&self) -> bool {
        true
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Catalog>, BuildError> {
        let options: ApicurioOptions = context.options()?;
        let catalog =
            open(&context.name.to_string(), &options)?.with_events(context.events.clone());
        Ok(Arc::new(catalog))
    }
}

/// A built apicurio catalog.
pub type ApicurioCatalog = RegistryCatalog<Apicurio>;

/// An apicurio catalog named `name` (for errors) reading the registry `options` names.
pub fn open(name: &str, options: &ApicurioOptions) -> Result<ApicurioCatalog, BuildError> {
    let dialect = Apicurio::new(options)?;
    RegistryCatalog::open(
        name,
        &options.url,
        None,
        Duration::from_secs(options.max_age.unwrap_or(300)),
        dialect,
        EventNames {
            unretrievable_id: UNRETRIEVABLE_ARTIFACT_ID,
            stale: UNRETRIEVABLE_ARTIFACT_SUBJECT_VERSION_STALE_ARTIFACT,
        },
    )
}

/// Which REST API the registry is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/apis/registry/v2`.
    V2,
    /// `/apis/registry/v3`.
    V3,
}

/// Apicurio's REST API and wire prefix.
#[derive(Debug, Clone)]
pub struct Apicurio {
    api: Api,
    /// What paths start with after the URL: empty when the URL names the API already.
    root: &'static str,
    group: String,
    use_id: UseId,
    encoding: IdEncoding,
}

impl Apicurio {
    /// The dialect `options` describe; an error at `options.url` for a URL naming an API
    /// version other than v2 or v3.
    pub fn new(options: &ApicurioOptions) -> Result<Self, BuildError> {
        let path = options
            .url
            .split_once("://")
            .map_or("", |(_, rest)| rest.find('/').map_or("", |at| &rest[at..]))
            .trim_end_matches('/');
        let (api, root) = if path.ends_with(V3_ROOT) {
            (Api::V3, "")
        } else if path.ends_with(V2_ROOT) {
            (Api::V2, "")
        } else if path.contains("/apis/registry") {
            return Err(BuildError::at(
                "options.url",
                format!(
                    "`{}` names a registry API other than v2 (`{V2_ROOT}`) or v3 (`{V3_ROOT}`)",
                    options.url
                ),
            ));
        } else {
            (Api::V2, V2_ROOT)
        };
        Ok(Self {
            api,
            root,
            group: options
                .group_id
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            use_id: options.use_id.unwrap_or_default(),
            encoding: options.id_encoding.unwrap_or_default(),
        })
    }

    /// The API asked.
    pub fn api(&self) -> Api {
        self.api
    }

    fn id_field(&self) -> &'static str {
        match self.use_id {
            UseId::GlobalId => "globalId",
            UseId::ContentId => "contentId",
        }
    }
}

impl Dialect for Apicurio {
    fn accept(&self) -> &'static str {
        "application/json, */*;q=0.8"
    }

    fn subject_path(&self, subject: &str, version: &str) -> String {
        let artifact = format!(
            "{}/groups/{}/artifacts/{}",
            self.root,
            path_segment(&self.group),
            path_segment(subject)
        );
        match (self.api, version) {
            (Api::V2, "latest") => format!("{artifact}/meta"),
            (Api::V2, version) => format!("{artifact}/versions/{}/meta", path_segment(version)),
            (Api::V3, "latest") => format!("{artifact}/versions/branch=latest"),
            (Api::V3, version) => format!("{artifact}/versions/{}", path_segment(version)),
        }
    }

    fn read_subject(&self, answer: &Fetched) -> Result<(u32, Option<Arc<str>>), String> {
        let field = self.id_field();
        let id = answer
            .json
            .as_ref()
            .and_then(|body| body.get(field))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("the artifact version's metadata has no `{field}`"))?;
        let id = u32::try_from(id)
            .map_err(|_| format!("`{field}` {id} is beyond the 32-bit ids catalogs use"))?;
        Ok((id, None))
    }

    fn id_path(&self, id: u32) -> String {
        match self.use_id {
            UseId::GlobalId => format!("{}/ids/globalIds/{id}", self.root),
            UseId::ContentId => format!("{}/ids/contentIds/{id}", self.root),
        }
    }

    fn read_schema(&self, id: u32, answer: &Fetched) -> Result<Arc<str>, String> {
        if answer.text.trim().is_empty() {
            return Err(format!("the content of id {id} is empty"));
        }
        Ok(answer.text.clone())
    }

    fn prefix(&self, id: u32) -> Vec<u8> {
        let mut prefix = vec![MAGIC];
        match self.encoding {
            IdEncoding::Default => prefix.extend_from_slice(&u64::from(id).to_be_bytes()),
            IdEncoding::Legacy => prefix.extend_from_slice(&id.to_be_bytes()),
        }
        prefix
    }

    fn unprefix<'a>(&self, data: &'a [u8]) -> Result<Option<(u32, &'a [u8])>, String> {
        match (self.encoding, data) {
            (IdEncoding::Default, [MAGIC, rest @ ..]) if rest.len() >= 8 => {
                let (id, rest) = rest.split_at(8);
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(id);
                let id = u64::from_be_bytes(bytes);
                let id = u32::try_from(id)
                    .map_err(|_| format!("schema id {id} is beyond the 32-bit ids catalogs use"))?;
                Ok(Some((id, rest)))
            }
            (IdEncoding::Legacy, [MAGIC, a, b, c, d, rest @ ..]) => {
                Ok(Some((u32::from_be_bytes([*a, *b, *c, *d]), rest)))
            }
            (IdEncoding::Default, _) => {
                Err("no apicurio prefix (magic byte 0 and an 8-byte schema id)".to_owned())
            }
            (IdEncoding::Legacy, _) => {
                Err("no apicurio prefix (magic byte 0 and a 4-byte schema id)".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests;
