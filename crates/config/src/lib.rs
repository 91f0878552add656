//! The `zilla.yaml` pipeline of zilla-rs: text → `${{env.X}}` substitution → YAML namespaces →
//! schema → typed model → references → pipeline stream kinds, every problem reported with file,
//! line, column and config path. See [`load::load`]. It knows no component: the component types
//! a config is checked against come through the [`Types`] trait, which the engine's registry
//! implements; `zilla-engine` re-exports this crate as `zilla_engine::config`.
pub mod error;
pub mod load;
pub mod model;
pub mod node;
pub mod ports;
pub mod refused;
pub mod source;
pub mod types;

pub use error::{ConfigError, ConfigErrors, Position};
pub use load::load;
pub use model::{BindingConfig, BindingKind, Config, QualifiedName};
pub use source::{EnvResolver, Resolver, Source};
pub use types::{BindingSchema, BindingType, Category, Types, namespace_schema};
