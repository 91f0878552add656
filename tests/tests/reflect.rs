//! The `tcp.reflect` and `ws.reflect` examples through the real binary: `fan` and `echo` on
//! byte streams and on WebSocket messages, driven by two `nc` processes and by two Python
//! `websockets` clients.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use zilla_tests::{Gateway, Peer, workspace_dir};

const WAIT: Duration = Duration::from_secs(10);

fn example(name: &str, port_variable: &str) -> Result<Gateway> {
    Gateway::from_file(
        workspace_dir()
            .join("examples")
            .join(name)
            .join("zilla.yaml"),
    )
    .env(port_variable, "0")
    .start()
}

/// An interactive `nc` client: lines go to its stdin, lines it prints come back.
struct Nc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Nc {
    fn connect(address: SocketAddr) -> Result<Self> {
        let mut child = Command::new("nc")
            .args([address.ip().to_string(), address.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nc")?;
        let stdin = child.stdin.take().context("nc stdin")?;
        let stdout = child.stdout.take().context("nc stdout")?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        Ok(self.stdin.flush()?)
    }

    fn expect(&self, line: &str) -> Result<()> {
        let seen = self
            .lines
            .recv_timeout(WAIT)
            .with_context(|| format!("nc printed nothing; expected {line:?}"))?;
        ensure!(seen == line, "nc printed {seen:?}, expected {line:?}");
        Ok(())
    }
}

impl Drop for Nc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tcp_reflect_two_nc_clients_see_each_others_lines() -> Result<()> {
    let mut gateway = example("tcp.reflect", "REFLECT_PORT")?;
    let address = gateway.address("tcp_server");
    let mut one = Nc::connect(address)?;
    // One's own round trip shows it joined before two connects.
    one.send("hello from one")?;
    one.expect("hello from one")?;
    let mut two = Nc::connect(address)?;
    two.send("hello from two")?;
    two.expect("hello from two")?;
    one.expect("hello from two")?;
    one.send("one again")?;
    one.expect("one again")?;
    two.expect("one again")?;
    drop((one, two));
    ensure!(gateway.terminate()?.success());
    Ok(())
}

/// Two clients with the `echo` subprotocol; the first sends once the second has joined (the
/// second's own message proves it), and each prints what it received as JSON.
const TWO_CLIENTS: &str = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main(url):
    async with connect(url, subprotocols=["echo"], proxy=None) as one:
        async with connect(url, subprotocols=["echo"], proxy=None) as two:
            await two.send("Hello, two")
            first_of_two = await asyncio.wait_for(two.recv(), 10)
            first_of_one = await asyncio.wait_for(one.recv(), 10)
            await one.send(b"\x00\x01\xff")
            second_of_one = await asyncio.wait_for(one.recv(), 10)
            second_of_two = await asyncio.wait_for(two.recv(), 10)
            print(json.dumps({
                "subprotocol": one.subprotocol,
                "one": [first_of_one, list(second_of_one)],
                "two": [first_of_two, list(second_of_two)],
            }))

asyncio.run(main(sys.argv[1]))
"#;

#[test]
fn ws_reflect_two_websocket_clients_see_each_others_messages() -> Result<()> {
    let mut gateway = example("ws.reflect", "WS_PORT")?;
    let address = gateway.address("tcp_server");
    let output = Peer::python(TWO_CLIENTS)
        .arg(format!("ws://{address}/"))
        .timeout(Duration::from_secs(30))
        .run()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Text comes back as text (a str in Python), binary as binary (a list of bytes here).
    ensure!(
        stdout.trim()
            == r#"{"subprotocol": "echo", "one": ["Hello, two", [0, 1, 255]], "two": ["Hello, two", [0, 1, 255]]}"#,
        "{stdout}"
    );
    // A session without the echo subprotocol has no route.
    let refused = Peer::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--http1.1",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            &format!("http://{address}/"),
        ])
        .run()?;
    ensure!(
        refused.stdout == b"404",
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    ensure!(gateway.terminate()?.success());
    Ok(())
}
