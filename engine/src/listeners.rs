//! Listening sockets that outlive a reload: a binding that is rebuilt on the same address takes
//! over the socket of the binding it replaces, so the port never closes during a reload.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpListener;

/// What identifies a listening socket across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ListenKey {
    Address(SocketAddr),
    /// Port 0: the binding name and index, since the address is chosen by the kernel.
    Ephemeral(String, SocketAddr),
}

/// A listening socket and the binding that opened it.
type BoundListener = (String, Weak<TcpListener>);

/// Shared by every generation of the config. Holds sockets weakly: a socket closes when the
/// last binding using it is gone.
#[derive(Debug, Clone, Default)]
pub struct ListenerPool {
    sockets: Arc<Mutex<HashMap<ListenKey, Weak<TcpListener>>>>,
    bound: Arc<Mutex<Vec<BoundListener>>>,
    /// Checking a config, not serving it: every claim gets an ephemeral loopback socket, so a
    /// check neither needs the configured ports free nor takes them from a running gateway.
    dry_run: bool,
}

impl ListenerPool {
    /// A pool that binds no configured address (see `dry_run`).
    pub fn dry_run() -> Self {
        Self {
            dry_run: true,
            ..Self::default()
        }
    }

    /// The socket listening on `address` (binding it if no live binding holds one), for
    /// `owner` (a binding's qualified name, used for port 0 and for [`Self::bound`]).
    pub fn claim(
        &self,
        owner: &str,
        address: SocketAddr,
        backlog: u32,
    ) -> io::Result<Arc<TcpListener>> {
        let address = if self.dry_run {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 0)
        } else {
            address
        };
        let key = if address.port() == 0 {
            ListenKey::Ephemeral(owner.to_owned(), address)
        } else {
            ListenKey::Address(address)
        };
        let mut sockets = self
            .sockets
            .lock()
            .map_err(|_| io::Error::other("listener pool poisoned"))?;
        if let Some(listener) = sockets.get(&key).and_then(Weak::upgrade) {
            return Ok(listener);
        }
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        let listener = Arc::new(socket.listen(backlog)?);
        sockets.retain(|_, weak| weak.strong_count() > 0);
        sockets.insert(key, Arc::downgrade(&listener));
        if let Ok(mut bound) = self.bound.lock() {
            bound.retain(|(_, weak)| weak.strong_count() > 0);
            bound.push((owner.to_owned(), Arc::downgrade(&listener)));
        }
        Ok(listener)
    }

    /// Every open listening socket with the binding that opened it.
    pub fn bound(&self) -> Vec<(String, SocketAddr)> {
        self.bound
            .lock()
            .map(|bound| {
                bound
                    .iter()
                    .filter_map(|(owner, weak)| {
                        let listener = weak.upgrade()?;
                        Some((owner.clone(), listener.local_addr().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
