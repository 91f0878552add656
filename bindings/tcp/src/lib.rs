//! The tcp binding: server listeners and client connections
