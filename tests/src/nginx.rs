//! nginx as a static origin: serves a directory on a free loopback port.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::{Peer, Process, free_port};

/// nginx serving `root` on a free port; its config, logs and temp files live in `dir`.
/// Files under `root` may be rewritten while it runs (each request reads them anew). Each
/// request is logged to `dir/logs/access.log` as `<status> <request line>`.
pub fn nginx(dir: &Path, root: &Path) -> Result<(Process, u16)> {
    nginx_with(dir, root, "")
}

/// Like [`nginx`], with `server` directives added to its one `server` block (e.g. a
/// `location` answering with the request headers it received).
pub fn nginx_with(dir: &Path, root: &Path, server: &str) -> Result<(Process, u16)> {
    start(dir, root, "", server)
}

/// Like [`nginx_with`], speaking HTTP/2 in cleartext only (prior knowledge, no upgrade).
pub fn nginx_h2c(dir: &Path, root: &Path, server: &str) -> Result<(Process, u16)> {
    start(dir, root, " http2", server)
}

fn start(dir: &Path, root: &Path, listen: &str, server: &str) -> Result<(Process, u16)> {
    let port = free_port()?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let config = format!(
        "master_process off;
worker_processes 1;
error_log {dir}/logs/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    log_format requests '$status $request';
    access_log {dir}/logs/access.log requests;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    open_file_cache off;
    server {{
        listen 127.0.0.1:{port}{listen};
        root {root};
        types {{ application/json json; text/plain txt; }}
        {server}
    }}
}}
",
        dir = dir.display(),
        root = root.display(),
    );
    std::fs::write(dir.join("nginx.conf"), config)?;
    let process = Peer::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .spawn()?;
    for _ in 0..100 {
        if crate::peer::accepts_connections(port) {
            return Ok((process, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("nginx did not start: {}", process.stderr())
}
