//! The ready file the gateway writes to its engine directory once every listener is bound: one
//! line per listening socket, `<namespace>:<binding> <ip>:<port>`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context, Result, bail};

/// One listening socket of a running gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The binding's qualified name, `namespace:binding`.
    pub binding: String,
    /// The address as bound (may be unspecified, e.g. `0.0.0.0`).
    pub bound: SocketAddr,
}

impl Listener {
    /// The binding's name without its namespace.
    pub fn name(&self) -> &str {
        self.binding
            .split_once(':')
            .map_or(self.binding.as_str(), |(_, name)| name)
    }

    /// Where a client on this machine connects: the bound address, with an unspecified IP
    /// (`0.0.0.0`, `::`) replaced by loopback.
    pub fn address(&self) -> SocketAddr {
        let ip = match self.bound.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.bound.port())
    }

    /// Whether `binding` names this listener: either `namespace:binding` or just `binding`.
    pub fn is(&self, binding: &str) -> bool {
        if binding.contains(':') {
            self.binding == binding
        } else {
            self.name() == binding
        }
    }
}

/// Parses the text of a ready file.
pub fn parse(text: &str) -> Result<Vec<Listener>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            parse_line(line).with_context(|| format!("ready file line {}: {line:?}", index + 1))
        })
        .collect()
}

fn parse_line(line: &str) -> Result<Listener> {
    let mut fields = line.split_whitespace();
    let (Some(binding), Some(address), None) = (fields.next(), fields.next(), fields.next()) else {
        bail!("expected `<namespace>:<binding> <ip>:<port>`");
    };
    if !binding.contains(':') {
        bail!("binding `{binding}` is not qualified as `<namespace>:<binding>`");
    }
    let bound = address
        .parse()
        .with_context(|| format!("`{address}` is not an `<ip>:<port>` address"))?;
    Ok(Listener {
        binding: binding.to_owned(),
        bound,
    })
}

/// Whether a ready file's text is complete: a writer that does not rename into place can be
/// seen mid-write, and a complete file ends with a newline (or is empty, for a gateway
/// without listeners).
pub(crate) fn is_complete(text: &str) -> bool {
    text.is_empty() || text.ends_with('\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_binding_and_address() -> Result<()> {
        let listeners = parse(
            "example:tcp_server 127.0.0.1:12345\nexample:tls_server 0.0.0.0:443\nother:tcp [::]:8080\n",
        )?;
        assert_eq!(listeners.len(), 3);
        assert_eq!(listeners[0].binding, "example:tcp_server");
        assert_eq!(listeners[0].name(), "tcp_server");
        assert_eq!(listeners[0].address(), "127.0.0.1:12345".parse()?);
        assert_eq!(listeners[1].bound, "0.0.0.0:443".parse()?);
        assert_eq!(listeners[1].address(), "127.0.0.1:443".parse()?);
        assert_eq!(listeners[2].address(), "[::1]:8080".parse()?);
        Ok(())
    }

    #[test]
    fn bindings_match_with_or_without_namespace() -> Result<()> {
        let listeners = parse("example:tcp_server 127.0.0.1:1\n")?;
        assert!(listeners[0].is("tcp_server"));
        assert!(listeners[0].is("example:tcp_server"));
        assert!(!listeners[0].is("other:tcp_server"));
        assert!(!listeners[0].is("tcp"));
        Ok(())
    }

    #[test]
    fn blank_lines_are_skipped_and_empty_means_no_listener() -> Result<()> {
        assert!(parse("")?.is_empty());
        assert_eq!(parse("\nexample:a 127.0.0.1:1\n\n")?.len(), 1);
        Ok(())
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for text in [
            "example:a\n",
            "example:a 127.0.0.1\n",
            "a 127.0.0.1:1\n",
            "example:a 127.0.0.1:1 extra\n",
            "example:a localhost:1\n",
        ] {
            let error = parse(text).err().map(|e| format!("{e:#}"));
            assert!(
                error.as_deref().is_some_and(|e| e.contains("line 1")),
                "{text:?}: {error:?}"
            );
        }
    }

    #[test]
    fn a_file_seen_mid_write_is_incomplete() {
        assert!(is_complete(""));
        assert!(is_complete("example:a 127.0.0.1:1\n"));
        assert!(!is_complete("example:a 127.0.0.1:1"));
        assert!(!is_complete("example:a 127.0"));
    }
}
