//! The tls binding: server, client and proxy, on rustls
