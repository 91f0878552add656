//! Who owns a connection's idleness: the tcp idle timeout (set short here with
//! `zilla.binding.tcp.idle.timeout.millis`) closes a connection that never gets past a
//! protocol's handshake, while the protocol on top keeps its rightly quiet connections: an SSE
//! stream with no event (curl, with tansu behind the `sse.kafka.fanout` example) and a quiet
//! WebSocket (Python `websockets`, `ws.reflect` example). MQTT's keep-alive is in `mqtt.rs`.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use zilla_tests::{Broker, Gateway, GatewayBuilder, Peer, curl, workspace_dir};

const TCP_IDLE: &str = "zilla.binding.tcp.idle.timeout.millis";

/// Longer than the idle timeout the gateways run with (1.5 s), with room for a loaded machine.
const QUIET: Duration = Duration::from_secs(5);

fn example(name: &str) -> GatewayBuilder {
    let path = workspace_dir()
        .join("examples")
        .join(name)
        .join("zilla.yaml");
    Gateway::from_file(path)
}

/// A connection that sends nothing: closed by the gateway within `within`.
struct Silent {
    stream: TcpStream,
    opened: Instant,
}

impl Silent {
    fn connect(address: SocketAddr) -> Result<Self> {
        Ok(Self {
            stream: TcpStream::connect(address)?,
            opened: Instant::now(),
        })
    }

    /// How long the gateway kept it open; fails when still open after `within`.
    fn closed_within(mut self, within: Duration) -> Result<Duration> {
        self.stream.set_read_timeout(Some(within))?;
        let mut byte = [0; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => Ok(self.opened.elapsed()),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => Ok(self.opened.elapsed()),
            Ok(_) => anyhow::bail!("the gateway sent bytes to a silent connection"),
            Err(error) => anyhow::bail!("a silent connection is still open: {error}"),
        }
    }
}

#[test]
fn a_quiet_sse_stream_outlives_the_tcp_idle_timeout_and_a_silent_connection_does_not() -> Result<()>
{
    let broker = Broker::start()?;
    broker.create_topic("events", 1, false)?;
    let mut gateway = example("sse.kafka.fanout")
        .env("HTTP_PORT", "0")
        .env("KAFKA_BOOTSTRAP_SERVER", broker.address())
        .env(
            "WWW_DIR",
            workspace_dir().join("examples/sse.kafka.fanout/www"),
        )
        .property("zilla.binding.kafka.client.fetch.max.wait.millis", "20")
        .property(TCP_IDLE, "1500")
        .start()?;
    let address = gateway.address("web_tcp");
    let url = format!("http://{address}/events");

    let silent = Silent::connect(address)?;
    let mut watcher = Peer::new("curl")
        .args(["-sN", "--max-time", "60", "-D", "-", &url])
        .spawn()?;
    watcher.wait_for_stdout("text/event-stream", Duration::from_secs(20))?;
    // Nothing is published: the stream is silent for longer than the tcp idle timeout.
    std::thread::sleep(QUIET);
    ensure!(
        watcher.try_status()?.is_none(),
        "the quiet SSE stream was closed: {}",
        watcher.stdout()
    );
    let kept = silent.closed_within(Duration::from_secs(10))?;
    eprintln!("silent connection closed after {kept:?}");

    let published = curl(&["-X", "POST", "-d", "after the quiet", &url])?;
    ensure!(
        published.status == 204,
        "publish answered {}",
        published.status
    );
    watcher
        .wait_for_stdout("data:after the quiet", Duration::from_secs(20))
        .or_else(|_| watcher.wait_for_stdout("data: after the quiet", Duration::from_secs(1)))?;
    watcher.kill();
    ensure!(gateway.terminate()?.success());
    Ok(())
}

/// Connects, stays quiet for the given seconds (no pings), then sends a message and prints the
/// one reflected back.
const QUIET_CLIENT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect
async def main(url, quiet):
    async with connect(url, subprotocols=["echo"], proxy=None, ping_interval=None) as ws:
        await asyncio.sleep(quiet)
        await ws.send("after the quiet")
        print(await asyncio.wait_for(ws.recv(), 10))
asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"#;

#[test]
fn a_quiet_websocket_outlives_the_tcp_idle_timeout_and_a_silent_connection_does_not() -> Result<()>
{
    let mut gateway = example("ws.reflect")
        .env("WS_PORT", "0")
        .property(TCP_IDLE, "1500")
        .start()?;
    let address = gateway.address("tcp_server");
    let silent = Silent::connect(address)?;
    let output = Peer::python(QUIET_CLIENT)
        .arg(format!("ws://{address}/"))
        .arg(QUIET.as_secs().to_string())
        .timeout(Duration::from_secs(60))
        .run()?;
    let printed = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && printed.trim() == "after the quiet",
        "quiet WebSocket: {printed} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let kept = silent.closed_within(Duration::from_secs(10))?;
    eprintln!("silent connection closed after {kept:?}");
    ensure!(gateway.terminate()?.success());
    Ok(())
}
