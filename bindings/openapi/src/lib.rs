//! The `openapi` binding: HTTP entry points and origins described by OpenAPI 3.0 and 3.1
//! documents. It is a composite (`zilla-composite`): when the config loads, each openapi
//! binding expands into a namespace `<namespace>.<binding>` of ordinary bindings, and its
//! name passes to the first of them, so `zilla validate -v` prints exactly what runs.
//!
//! - `server`: a `tcp` server on the ports of the document's server URLs, on every interface
//!   (`0.0.0.0`) as Zilla does; the `zilla.binding.composite.listen.host` property sets the
//!   host, e.g. `127.0.0.1` for a loopback-only gateway. It is in front of an `http` server that routes each operation
//!   (`:method` and the server's base path followed by the path template) to where the
//!   binding's routes (`when: [{spec, operation, tag}]`, operations by `operationId` with
//!   `*`) or `exit` send it. Paths and methods the document does not describe are answered
//!   `404`. Path, query and header parameters are checked with core models from their
//!   schemas, JSON request bodies with the `json` model against the document's schemas
//!   (through a generated `inline` catalog); a request that fails is answered `400` and never
//!   reaches the exit. Operations with `security` requirements are routed only for requests
//!   the bound guard lets through (`401`/`403` otherwise).
//! - `client`: an `http` client (HTTP/1.1) in front of a `tcp` client to the host and port of
//!   the first selected server URL of its one spec.
//!
//! Generated names (metrics and events carry them): the server's `tcp_server` becomes the
//! composite's own name; `<namespace>.<binding>:http_server` and the inline catalog
//! `<namespace>.<binding>:catalog` with subjects `<spec>.<operationId>`. The client's
//! `http_client` becomes the composite's name; `<namespace>.<binding>:tcp_client` connects.
//!
//! ```yaml
//! name: example
//! catalogs:
//!   specs:
//!     type: filesystem
//!     options:
//!       subjects:
//!         petstore:
//!           path: petstore.yaml
//! bindings:
//!   north_openapi_server:
//!     type: openapi
//!     kind: server
//!     options:
//!       specs:
//!         petstore:
//!           catalog:
//!             specs:
//!               subject: petstore
//!               version: latest
//!     exit: south_openapi_client
//!   south_openapi_client:
//!     type: openapi
//!     kind: client
//!     options:
//!       specs:
//!         petstore:
//!           servers:
//!             - http://localhost:4010
//!           catalog:
//!             specs:
//!               subject: petstore
//! ```
//!
//! Options (both kinds):
//! - `specs.<name>`: `catalog: {<catalog>: {subject, version}}` (one catalog of the
//!   namespace, any type; `version` defaults to `latest`), `servers` (base URLs, used as
//!   they are; with `*` wildcards they select the document's servers, as the document writes
//!   them with variables at their defaults; all of the document's servers when absent), `security`
//!   (security scheme name → guard).
//! - `http.authorization.<guard>.credentials` (server): where requests carry credentials, as
//!   for an http server. A scheme that `security` does not bind goes to this guard when it
//!   is the only one and the scheme is `http` `bearer`, `oauth2` or `openIdConnect`; an
//!   operation requiring a scheme no guard checks fails the load.
//! - `tls`, `overlay` and routing by `servers` are refused at load: not supported yet; so
//!   are `https` server URLs, and `telemetry` or `vault` on an openapi binding.
//!
//! Documents: YAML or JSON, OpenAPI 3.0.x or 3.1.x, read with a serde model of our own
//! (the parts used: servers, paths, operations, parameters, request bodies, security), since
//! the maintained crates each read one version and keep no positions. `$ref`s within the
//! document are followed; references to other documents, `callbacks`, parameters by
//! `content` or `in: cookie`, parameter schemas no core model checks (arrays, objects,
//! keywords beyond bounds, `multipleOf`, lengths, `pattern`, `enum` and annotations),
//! request bodies of non-JSON types with schemas, a path naming a parameter twice, and (for
//! a server) a document with no operations are refused, each with the document's line and
//! column. A parameter's `pattern` is read as ECMA-262 as JSON Schema says (a brace that
//! makes no quantifier is a literal); one the `regex` crate cannot run (lookaround,
//! backreferences) is refused. 3.0 schemas are checked as JSON Schema draft 4 (`nullable`
//! as a `null` type), 3.1 schemas as 2020-12. As in Zilla's http validation, absent
//! parameters and empty bodies are not checked (`required` is not enforced), and `format`
//! is an annotation.
//!
//! `tests/tests/openapi_corpus.rs` loads the public OpenAPI examples of
//! `@readme/oas-examples` through [`document::parse`] and `zilla validate`: none panics, and
//! each is accepted or refused with a located message.

pub mod config;
pub mod document;
mod generate;
mod params;

use zilla_composite::{Composite, CompositeContext, Generated};
use zilla_engine::{BindingKind, BindingSchema, BuildError, Registry};

use config::{OpenapiCondition, OpenapiOptions};
use generate::Spec;

/// Registers the `openapi` binding type.
pub fn register(registry: &mut Registry) {
    zilla_composite::register(registry, OpenapiComposite);
}

/// The `openapi` composite.
#[derive(Debug)]
pub struct OpenapiComposite;

impl Composite for OpenapiComposite {
    fn type_name(&self) -> &'static str {
        "openapi"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client]
    }

    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Client => &["http"],
            _ => &[],
        }
    }

    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        (kind == BindingKind::Server).then_some("http")
    }

    fn schema(&self, kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(BindingSchema::of::<OpenapiOptions>()),
            options_required: true,
            when: (kind == BindingKind::Server).then(BindingSchema::of::<OpenapiCondition>),
            with: None,
        }
    }

    fn generate(&self, context: &CompositeContext<'_>) -> Result<Generated, BuildError> {
        let options: OpenapiOptions = context.options()?;
        if context.config().kind == BindingKind::Client
            && options
                .http
                .as_ref()
                .is_some_and(|h| h.authorization.is_some())
        {
            return Err(BuildError::at(
                "options.http.authorization",
                "a client injects no credentials: not supported yet",
            ));
        }
        let mut specs = Vec::new();
        for (name, config) in &options.specs {
            let at = format!("options.specs.{name}.catalog");
            let Some((catalog, subject)) = config.catalog.iter().next() else {
                return Err(BuildError::at(at, "name the catalog holding the document"));
            };
            let version = subject.version.as_deref().unwrap_or("latest");
            let text = context
                .document(catalog, &subject.subject, version)
                .map_err(|message| BuildError::at(&at, message))?;
            let label = format!("{catalog}/{}", subject.subject);
            let document = document::parse(&label, &text)
                .map_err(|message| BuildError::at(format!("options.specs.{name}"), message))?;
            if let Some(security) = &config.security {
                for scheme in security.keys() {
                    if !document.security_schemes.contains_key(scheme) {
                        return Err(BuildError::at(
                            format!("options.specs.{name}.security.{scheme}"),
                            format!("{label} has no security scheme `{scheme}`"),
                        ));
                    }
                }
            }
            specs.push(Spec {
                name: name.clone(),
                config: config.clone(),
                document,
            });
        }
        for (index, route) in context.config().routes.iter().enumerate() {
            for (entry, when) in route.when.iter().enumerate() {
                if let Some(spec) = when.get("spec").and_then(serde_json::Value::as_str)
                    && !options.specs.contains_key(spec)
                {
                    return Err(BuildError::at(
                        format!("routes[{index}].when[{entry}].spec"),
                        format!("unknown spec `{spec}`; expected a key of options.specs"),
                    ));
                }
            }
        }
        if context.config().kind == BindingKind::Client
            && let Some(name) = options
                .specs
                .iter()
                .find_map(|(name, spec)| spec.security.is_some().then_some(name))
        {
            // A client sends no credentials, so a scheme→guard binding would do nothing.
            return Err(BuildError::at(
                format!("options.specs.{name}.security"),
                "a client injects no credentials: not supported yet",
            ));
        }
        match context.config().kind {
            BindingKind::Client => generate::client(context, &specs),
            _ => generate::server(context, &options, &specs),
        }
    }
}

#[cfg(test)]
mod tests;
