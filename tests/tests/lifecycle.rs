//! Process lifecycle of the real binary: hot reload that keeps unaffected connections, a
//! broken edit that keeps the running config, and SIGTERM that drains instead of cutting.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Result;
use zilla_tests::{Gateway, connect, echo};

fn config(second_exit: &str) -> String {
    format!(
        "name: test
bindings:
  first_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: echo_server
  second_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: {second_exit}
  echo_server:
    type: echo
    kind: server
  fan_server:
    type: fan
    kind: server
    exit: echo_server
"
    )
}

#[test]
fn reload_keeps_unaffected_connections_and_rejects_broken_edits() -> Result<()> {
    let mut gateway = Gateway::start(&config("echo_server"))?;
    let first = gateway.address("first_server");
    let second = gateway.address("second_server");
    let mut through_first = connect(first)?;
    assert_eq!(echo(&mut through_first, b"before")?, b"before");

    // Change only the second server's pipeline.
    gateway.write_config(&config("fan_server"))?;
    gateway.wait_for_stderr("config reloaded", Duration::from_secs(10))?;
    assert_eq!(echo(&mut through_first, b"after")?, b"after");
    gateway.refresh_listeners()?;
    // The second server kept its port and now goes through fan.
    assert_eq!(gateway.address("second_server"), second);
    let mut through_second = connect(second)?;
    assert_eq!(echo(&mut through_second, b"fanned")?, b"fanned");

    // A broken edit is reported and the running config stays.
    gateway.write_config(&config("no_such_binding"))?;
    gateway.wait_for_stderr("config reload failed", Duration::from_secs(10))?;
    assert!(
        gateway
            .stderr()
            .contains("unknown binding `no_such_binding`")
    );
    assert_eq!(echo(&mut through_first, b"still")?, b"still");
    assert_eq!(echo(&mut connect(first)?, b"new")?, b"new");

    drop((through_first, through_second));
    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn sigterm_stops_accepting_and_drains_open_connections() -> Result<()> {
    let mut gateway = Gateway::start(&config("echo_server"))?;
    let address = gateway.address("first_server");
    let mut open = connect(address)?;
    assert_eq!(echo(&mut open, b"ping")?, b"ping");

    gateway.signal("TERM")?;
    gateway.wait_for_stderr("stopping", Duration::from_secs(5))?;
    // No new connections...
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(address).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...but the open one is still served until its client is done.
    assert_eq!(echo(&mut open, b"drained")?, b"drained");
    assert!(
        gateway.try_status()?.is_none(),
        "exited while a connection was open"
    );
    drop(open);
    let started = Instant::now();
    let status = gateway.wait(Duration::from_secs(5))?;
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[test]
fn a_reload_cuts_the_replaced_servers_connections_after_the_drain_timeout() -> Result<()> {
    let mut gateway = Gateway::builder(&config("echo_server"))
        .property("zilla.engine.drain.timeout.millis", "300")
        .start()?;
    let mut open = connect(gateway.address("second_server"))?;
    assert_eq!(echo(&mut open, b"before")?, b"before");

    // Replaces the second server: its open connection is served until the drain timeout,
    // then cut.
    gateway.write_config(&config("fan_server"))?;
    gateway.wait_for_stderr("config reloaded", Duration::from_secs(10))?;
    open.set_read_timeout(Some(Duration::from_secs(5)))?;
    let started = Instant::now();
    let mut buffer = [0; 16];
    let read = std::io::Read::read(&mut open, &mut buffer);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|error| error.kind() != std::io::ErrorKind::WouldBlock
                    && error.kind() != std::io::ErrorKind::TimedOut),
        "the replaced server's connection was not cut: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(gateway.terminate()?.success());
    Ok(())
}
