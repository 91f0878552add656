//! Which gateway port stands for which broker: each broker id seen in a response gets one
//! port of the configured range for as long as the binding runs, and its real address is
//! updated whenever a response names it again.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// A broker's real address, as the cluster advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<i32, (u16, BrokerAddress)>,
    by_port: HashMap<u16, i32>,
}

/// The broker-to-port table of one proxy binding.
#[derive(Debug)]
pub(crate) struct Brokers {
    ports: RangeInclusive<u16>,
    table: Mutex<Table>,
}

impl Brokers {
    /// Brokers are given ports from `ports`.
    pub(crate) fn new(ports: RangeInclusive<u16>) -> Self {
        Self {
            ports,
            table: Mutex::new(Table::default()),
        }
    }

    /// The gateway port for broker `id` at `address`, assigning one when the broker is new:
    /// `low + id` when that port is in the range and free (so the mapping survives a restart
    /// for small ids), else the lowest free port. `None` when the range is used up.
    pub(crate) fn port_for(&self, id: i32, address: BrokerAddress) -> Option<u16> {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some((port, known)) = table.by_id.get_mut(&id) {
            if *known != address {
                tracing::info!(broker = id, host = %address.host, port = address.port, "broker address changed");
                *known = address;
            }
            return Some(*port);
        }
        let low = *self.ports.start();
        let preferred = u16::try_from(id)
            .ok()
            .and_then(|id| low.checked_add(id))
            .filter(|port| self.ports.contains(port) && !table.by_port.contains_key(port));
        let port = preferred.or_else(|| {
            self.ports
                .clone()
                .find(|port| !table.by_port.contains_key(port))
        })?;
        tracing::info!(broker = id, host = %address.host, port = address.port, gateway_port = port, "broker mapped");
        table.by_port.insert(port, id);
        table.by_id.insert(id, (port, address));
        Some(port)
    }

    /// The broker behind gateway `port`, if one was given it.
    pub(crate) fn broker_at(&self, port: u16) -> Option<(i32, BrokerAddress)> {
        let table = self
            .table
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let id = *table.by_port.get(&port)?;
        table
            .by_id
            .get(&id)
            .map(|(_, address)| (id, address.clone()))
    }

    /// Whether `port` is one of the brokers' range.
    pub(crate) fn in_range(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> BrokerAddress {
        BrokerAddress {
            host: "10.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn brokers_get_stable_ports_and_the_range_bounds_them() {
        let brokers = Brokers::new(9100..=9102);
        assert_eq!(brokers.port_for(1, at(1)), Some(9101));
        assert_eq!(brokers.port_for(111, at(2)), Some(9100));
        assert_eq!(brokers.port_for(1, at(3)), Some(9101));
        assert_eq!(brokers.broker_at(9101), Some((1, at(3))));
        assert_eq!(brokers.port_for(0, at(4)), Some(9102));
        assert_eq!(brokers.port_for(7, at(5)), None);
        assert_eq!(brokers.broker_at(9103), None);
        assert!(brokers.in_range(9102) && !brokers.in_range(9103));
    }
}
