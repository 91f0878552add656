//! mosquitto as a broker: anonymous, without persistence, on a free loopback port.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Peer, Process, free_port};

/// A mosquitto broker on a free loopback port, its config in `dir`; stopped when the process
/// is dropped. Returns once it accepts connections.
pub fn mosquitto(dir: &Path) -> Result<(Process, u16)> {
    mosquitto_with(dir, "")
}

/// [`mosquitto`] with more lines of `mosquitto.conf` (e.g. `max_queued_messages 1000\n`).
pub fn mosquitto_with(dir: &Path, extra_config: &str) -> Result<(Process, u16)> {
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra_config}"
        ),
    )?;
    let process = Peer::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .spawn()
        .context("mosquitto")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !crate::peer::accepts_connections(port) {
        if Instant::now() > deadline {
            bail!("mosquitto did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((process, port))
}
