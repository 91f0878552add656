//! The `openapi-asyncapi` binding: a `proxy` mapping the operations of an OpenAPI document
//! (the REST API an `openapi` server serves) onto the operations of an AsyncAPI document
//! describing Kafka (what an `asyncapi` client reaches). It is a composite
//! (`zilla-composite`): when the config loads, it expands into the namespace
//! `<namespace>.<binding>` holding one `http-kafka` proxy, `http_kafka_proxy0`, which takes the
//! composite's name, so the `openapi` server exits straight into it and `zilla validate -v`
//! prints the mapping that runs. Its routes exit to the `asyncapi` client (whose name is its
//! `kafka` cache client); the pipeline is
//! `openapi` server (tcp → http, checking requests against the document) → `openapi-asyncapi`
//! (http-kafka) → `asyncapi` client (kafka cache → kafka client → tcp).
//!
//! This is the same design as the `asyncapi` proxy's HTTP mappings and as Zilla's own
//! generator: nothing runs but ordinary bindings, so every behaviour (idempotency keys,
//! async request/reply, merged collections, etags, `prefer: wait`) is the `http-kafka`
//! binding's. See [`generate`] for how each operation becomes a route.
//!
//! Which AsyncAPI operation an OpenAPI operation maps onto: with `with.operation` naming one
//! id, every operation the route takes maps onto it; without `with.operation`, with a `*`
//! pattern, or with `with.tag`, each maps onto the AsyncAPI operation of its own
//! `operationId` among those matching (Zilla's example maps `createPet` onto `createPet`
//! this way). An OpenAPI operation with no such AsyncAPI operation is left unmapped (the
//! http-kafka proxy answers `404`), as in Zilla; a route taking no operation at all, an
//! unknown spec label or `with.operation`, or a document describing no Kafka server fails
//! the load.
//!
//! ```yaml
//! name: petstore
//! catalogs:
//!   specs:
//!     type: filesystem
//!     options:
//!       subjects:
//!         http: {path: specs/http-openapi.yaml}
//!         kafka: {path: specs/kafka-asyncapi.yaml}
//! bindings:
//!   north_openapi_server:
//!     type: openapi
//!     kind: server
//!     options:
//!       specs:
//!         my-openapi-spec:
//!           catalog: {specs: {subject: http}}
//!     exit: north_openapi_asyncapi_proxy
//!   north_openapi_asyncapi_proxy:
//!     type: openapi-asyncapi
//!     kind: proxy
//!     options:
//!       specs:
//!         openapi:
//!           my-openapi-spec:
//!             catalog: {specs: {subject: http}}
//!         asyncapi:
//!           my-asyncapi-spec:
//!             catalog: {specs: {subject: kafka}}
//!     routes:
//!       - when:
//!           - spec: my-openapi-spec
//!         exit: south_asyncapi_client
//!         with:
//!           spec: my-asyncapi-spec
//!   south_asyncapi_client:
//!     type: asyncapi
//!     kind: client
//!     options:
//!       specs:
//!         my-asyncapi-spec:
//!           catalog: {specs: {subject: kafka}}
//! ```
//!
//! Options: `specs.openapi.<label>` and `specs.asyncapi.<label>`, each `catalog:
//! {<catalog>: {subject, version}}` (one catalog of the namespace, any type; `version`
//! defaults to `latest`). Routes: `when: [{spec, operation, tag}]` (OpenAPI label,
//! `operationId` with `*` wildcards, tag; every operation of every OpenAPI document when
//! `when` is absent), `with: {spec, operation | tag}` (AsyncAPI label, may be left out when
//! there is one), `exit`.
//!
//! Refused at load with the key's position, not supported yet: `specs.openapi.<label>.security`
//! (the `openapi` server already checks the document's security schemes with its guards),
//! `overlay`, routing by `when.servers`, `guarded` routes, a binding-level `exit` (routes
//! name the client), and in the documents `x-zilla-*` operation extensions other than
//! `x-zilla-http-kafka`, `{identity}` in it (it needs a guard), its `key` or `overrides` on an
//! operation mapped onto a `receive` and its `filters` on one mapped onto a `send` (they would
//! do nothing there), and a `202` answer with a `{correlationId}` location mapped onto an
//! AsyncAPI operation without `reply`.
//!
//! Documents are read with the `openapi` binding's model (OpenAPI 3.0 and 3.1) and
//! `zilla-asyncapi` (AsyncAPI 2.x and 3.0); their errors carry the document's line and
//! column.

pub mod config;
pub mod generate;

use std::collections::BTreeMap;

use zilla_composite::{Composite, CompositeContext, Generated};
use zilla_engine::{BindingKind, BindingSchema, BuildError, Registry};

use config::{
    CatalogSubject, OpenapiAsyncapiCondition, OpenapiAsyncapiOptions, OpenapiAsyncapiWith,
};
use generate::{Documents, HTTP_KAFKA_PROXY, Route};

/// Registers the `openapi-asyncapi` binding type.
pub fn register(registry: &mut Registry) {
    zilla_composite::register(registry, OpenapiAsyncapiComposite);
}

/// The `openapi-asyncapi` composite.
#[derive(Debug)]
pub struct OpenapiAsyncapiComposite;

impl Composite for OpenapiAsyncapiComposite {
    fn type_name(&self) -> &'static str {
        "openapi-asyncapi"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Proxy]
    }

    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Proxy => &["http"],
            _ => &[],
        }
    }

    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        (kind == BindingKind::Proxy).then_some("kafka")
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(BindingSchema::of::<OpenapiAsyncapiOptions>()),
            options_required: true,
            when: Some(BindingSchema::of::<OpenapiAsyncapiCondition>()),
            with: Some(BindingSchema::of::<OpenapiAsyncapiWith>()),
        }
    }

    fn generate(&self, context: &CompositeContext<'_>) -> Result<Generated, BuildError> {
        let options: OpenapiAsyncapiOptions = context.options()?;
        let config = context.config();
        if config.exit.is_some() {
            return Err(BuildError::at(
                "exit",
                "an openapi-asyncapi proxy maps operations by `routes`, each naming its exit: a binding-level `exit` is not supported",
            ));
        }
        if config.routes.is_empty() {
            return Err(BuildError::at(
                "routes",
                "name the operations to map with `routes`",
            ));
        }
        let mut routes = Vec::new();
        for (index, route) in config.routes.iter().enumerate() {
            let at = |key: &str| format!("routes[{index}].{key}");
            if !route.guarded.is_empty() {
                return Err(BuildError::at(
                    at("guarded"),
                    "guarded openapi-asyncapi routes are not supported: the openapi server checks the document's security",
                ));
            }
            let when = route
                .when
                .iter()
                .map(|when| serde_json::from_value(when.clone()))
                .collect::<Result<Vec<OpenapiAsyncapiCondition>, _>>()
                .map_err(|error| BuildError::at(at("when"), error.to_string()))?;
            let Some(with) = &route.with else {
                return Err(BuildError::at(
                    at("with"),
                    "name the AsyncAPI operations with `with: {spec, operation}`",
                ));
            };
            let with: OpenapiAsyncapiWith = serde_json::from_value(with.clone())
                .map_err(|error| BuildError::at(at("with"), error.to_string()))?;
            routes.push(Route {
                when,
                with,
                exit: context.qualify(&route.exit),
            });
        }
        let mut documents = Documents::default();
        for (label, spec) in &options.specs.openapi {
            let at = format!("options.specs.openapi.{label}");
            let (file, text) = document(context, &at, &spec.catalog)?;
            let document = zilla_binding_openapi::document::parse(&file, &text)
                .map_err(|message| BuildError::at(&at, message))?;
            documents.openapi.insert(label.clone(), document);
        }
        for (label, spec) in &options.specs.asyncapi {
            let at = format!("options.specs.asyncapi.{label}");
            let (file, text) = document(context, &at, &spec.catalog)?;
            let spec = zilla_asyncapi::parse(&file, &text)
                .map_err(|error| BuildError::at(&at, error.to_string()))?;
            documents.asyncapi.insert(label.clone(), spec);
        }
        let namespace = generate::namespace(context.namespace(), &routes, &documents)?;
        let text = serde_saphyr::to_string(&namespace).map_err(|error| {
            BuildError::at("", format!("cannot write the generated namespace: {error}"))
        })?;
        Ok(Generated {
            namespace: text,
            entry: HTTP_KAFKA_PROXY.to_owned(),
        })
    }
}

/// The text of a spec's document and the name errors give it (`<catalog>/<subject>`).
fn document(
    context: &CompositeContext<'_>,
    at: &str,
    catalog: &BTreeMap<String, CatalogSubject>,
) -> Result<(String, String), BuildError> {
    let at = format!("{at}.catalog");
    let Some((catalog, subject)) = catalog.iter().next() else {
        return Err(BuildError::at(at, "name the catalog holding the document"));
    };
    let version = subject.version.as_deref().unwrap_or("latest");
    let text = context
        .document(catalog, &subject.subject, version)
        .map_err(|message| BuildError::at(&at, message))?;
    Ok((format!("{catalog}/{}", subject.subject), text.to_string()))
}
