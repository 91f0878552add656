//! The echo binding: reflects what it receives
