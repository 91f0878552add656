//! A raw TCP client for echo pipelines: connect, write, read back the same number of bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

/// A connection to `address` whose reads give up after 5 s.
pub fn connect(address: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// Writes `text` and reads back as many bytes.
pub fn echo(stream: &mut TcpStream, text: &[u8]) -> Result<Vec<u8>> {
    stream.write_all(text)?;
    let mut buffer = vec![0u8; text.len()];
    stream.read_exact(&mut buffer).context("no echo")?;
    Ok(buffer)
}
