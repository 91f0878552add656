//! The `http` binding and the `http` stream kind (see [`kind`]).

pub mod kind;

pub use kind::{Body, Http, HttpHandler, Request, Response};
