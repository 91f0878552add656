//! Config loading: text → `${{env.X}}` substitution → YAML namespaces → schema → typed model →
//! references → pipeline kinds. See [`load::load`].
pub mod error;
pub mod load;
pub mod model;
pub mod node;
pub mod source;
pub mod types;

pub use error::{ConfigError, ConfigErrors, Position};
pub use load::load;
pub use model::{BindingConfig, BindingKind, Config, QualifiedName};
pub use source::{EnvResolver, Resolver, Source};
pub use types::{BindingSchema, BindingType, Category, Types, namespace_schema};
