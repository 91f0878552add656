//! The fan binding: joins streams into one group
