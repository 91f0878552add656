//! zilla-rs as a library: the engine plus the components this build was compiled with.
pub use zilla_engine as engine;

/// A registry holding every component compiled into this build (see the crate features).
pub fn registry() -> zilla_engine::Registry {
    let mut registry = zilla_engine::Registry::new();
    register_all(&mut registry);
    registry
}

/// Registers every component compiled into this build.
#[allow(unused_variables)]
pub fn register_all(registry: &mut zilla_engine::Registry) {}
