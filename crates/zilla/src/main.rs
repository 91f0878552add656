//! The `zilla` command: `start`, `validate`, `schema`, `version`, `stop`, `metrics`.

// A command-line tool reports config errors and failures on its terminal.
#![allow(clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use zilla::engine::properties::Properties;
use zilla::engine::{ConfigErrors, Engine};

mod config_source;
use config_source::ConfigSource;

#[derive(Parser)]
#[command(name = "zilla", version = zilla::VERSION, about = "A multi-protocol event gateway configured by zilla.yaml")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Starts the gateway and runs until SIGTERM or SIGINT.
    Start(StartArgs),
    /// Checks a config without starting anything.
    Validate {
        /// The config file.
        #[arg(short = 'c', long = "config", default_value = "zilla.yaml")]
        config: PathBuf,
        /// Prints the config as it runs, composite bindings (openapi, ...) expanded into the
        /// namespaces they generate: a zilla.yaml that loads as it is. The verdict goes to
        /// stderr.
        #[arg(short = 'v', long = "verbose")]
        verbose: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Prints the JSON Schema of zilla.yaml for the components in this build.
    Schema,
    /// Prints the version.
    Version,
    /// Stops the gateway running from this engine directory.
    Stop(EngineArgs),
    /// Prints the metrics of the gateway running from this engine directory.
    Metrics {
        #[command(flatten)]
        engine: EngineArgs,
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only this binding.
        binding: Option<String>,
    },
}

#[derive(Args)]
struct EngineArgs {
    /// Sets a property, `name=value` (a bare name means `true`).
    #[arg(short = 'P', long = "property")]
    properties: Vec<String>,
    /// A properties file (`name=value` lines).
    #[arg(short = 'p', long = "properties")]
    properties_file: Option<PathBuf>,
}

#[derive(Args)]
struct StartArgs {
    /// The config file.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Connection workers: threads with a single-threaded runtime each, connections handed to
    /// them in turn (default: one per core).
    #[arg(short = 'w', long = "workers")]
    workers: Option<usize>,
    /// Prints the loaded config.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Logs the cause of every failed stream (debug level, unless `RUST_LOG` says otherwise).
    #[arg(short = 'e', long = "exception-traces")]
    exception_traces: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Start(args) => start(args),
        Command::Validate {
            config,
            verbose,
            engine,
        } => validate(&config, verbose, &engine),
        Command::Schema => print(&format!("{:#}", zilla::registry().schema())),
        Command::Version => print(&format!("zilla {}", zilla::VERSION)),
        Command::Stop(engine) => stop(&engine),
        Command::Metrics {
            engine,
            namespace,
            binding,
        } => metrics(&engine, namespace.as_deref(), binding.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn print(text: &str) -> Result<ExitCode> {
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn report(errors: &ConfigErrors) {
    for error in &errors.0 {
        eprintln!("{error}");
    }
}

/// The properties this command reads itself; components declare theirs to the registry.
const COMMAND_PROPERTIES: &[&str] = &[
    "zilla.engine.config.url",
    "zilla.engine.config.watch",
    config_source::POLL_INTERVAL_PROPERTY,
    "zilla.engine.directory",
    "zilla.engine.workers",
];

/// Reports every property that nothing reads (a misspelt name would otherwise be a setting
/// silently left at its default); `false` when there is one.
fn known_properties(properties: &Properties) -> bool {
    let mut registry = zilla::registry();
    registry.properties(COMMAND_PROPERTIES);
    let unknown = registry.unknown_properties(properties);
    for message in &unknown {
        eprintln!("{message}");
    }
    unknown.is_empty()
}

fn validate(path: &Path, verbose: bool, args: &EngineArgs) -> Result<ExitCode> {
    let properties = properties(args)?;
    if !known_properties(&properties) {
        return Ok(ExitCode::FAILURE);
    }
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let engine = Engine::checking(zilla::registry(), properties);
    // Components may register sockets and timers while they build.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let checked = runtime.block_on(async {
        let config = engine.load(path, &text)?;
        engine.check(&config)?;
        Ok::<_, ConfigErrors>(config)
    });
    match checked {
        Ok(config) => {
            let bindings = config.bindings().count();
            let verdict = format!("{}: valid ({bindings} bindings)", path.display());
            if verbose {
                eprintln!("{verdict}");
                print(config.expanded.as_deref().unwrap_or(&config.source.text))
            } else {
                print(&verdict)
            }
        }
        Err(errors) => {
            report(&errors);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn properties(args: &EngineArgs) -> Result<Properties> {
    let mut lines = Vec::new();
    let file = args
        .properties_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(".zilla/zilla.properties"));
    if file.exists() {
        let text =
            fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        lines.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned),
        );
    } else if args.properties_file.is_some() {
        bail!("properties file {} does not exist", file.display());
    }
    lines.extend(args.properties.iter().cloned());
    Ok(Properties::from_assignments(
        lines.iter().map(String::as_str),
    ))
}

fn engine_directory(properties: &Properties) -> PathBuf {
    PathBuf::from(
        properties
            .get("zilla.engine.directory")
            .unwrap_or(".zilla/engine"),
    )
}

fn start(args: StartArgs) -> Result<ExitCode> {
    let properties = properties(&args.engine)?;
    if !known_properties(&properties) {
        eprintln!("engine configuration failed");
        return Ok(ExitCode::FAILURE);
    }
    // `-e` logs why each stream failed (those records are at debug level).
    let default_filter = if args.exception_traces {
        "debug"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Connections run on the workers (thread-per-core, see `zilla_engine::workers`); the main
    // runtime keeps the accept loops, reload, metrics files and bindings' background tasks.
    let workers = args
        .workers
        .or_else(|| {
            properties
                .get("zilla.engine.workers")
                .and_then(|w| w.parse().ok())
        })
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    zilla::engine::workers::start(workers).context("cannot start the workers")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("zilla-main")
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(run(args, properties))
}

/// Raises the soft limit on open files to the hard limit: every connection is a file, and the
/// default soft limit (often 1024) is far below what a gateway serves. Returns the limit.
fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open files limit");
            Some(limit)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open files limit");
            None
        }
    }
}

/// Unless set, caps the connections accepted by the process at half the open files limit:
/// a proxied connection takes two files, and the gateway refuses a connection rather than
/// running out of files for origins, brokers and its own.
fn default_connection_cap(properties: &mut Properties, open_files: Option<u64>) {
    let name = zilla_engine::limits::MAXIMUM_CONNECTIONS_PROPERTY;
    if let (None, Some(open_files)) = (properties.get(name), open_files) {
        properties.set(name, (open_files / 2).max(64).to_string());
    }
}

async fn run(args: StartArgs, mut properties: Properties) -> Result<ExitCode> {
    let open_files = raise_open_files_limit();
    default_connection_cap(&mut properties, open_files);
    // Registered before anything else, so a signal that arrives while starting is not lost.
    let signals = Signals::register()?;
    let source = ConfigSource::new(args.config.as_deref(), &properties)?;
    let path = source.name();
    let directory = engine_directory(&properties);
    let properties_watch = properties.bool("zilla.engine.config.watch", true);
    let poll_interval = config_source::poll_interval(&properties);
    let drain = properties.millis("zilla.engine.drain.timeout.millis", DEFAULT_DRAIN);
    let engine = Arc::new(Engine::new(zilla::registry(), properties));
    // Watching starts before the first read, so an edit made while starting is not missed.
    let watch = match (&source, properties_watch) {
        (ConfigSource::File(path), true) => Some(watch_config(path)?),
        _ => None,
    };
    let fetched = source.read().await?;
    let text = fetched.text.clone();
    if args.verbose {
        eprintln!("{text}");
    }
    let config = match engine.load(&path, &text) {
        Ok(config) => config,
        Err(errors) => {
            report(&errors);
            eprintln!("engine configuration failed");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Err(errors) = engine.apply(config) {
        report(&errors);
        eprintln!("engine configuration failed");
        return Ok(ExitCode::FAILURE);
    }
    fs::create_dir_all(&directory)
        .with_context(|| format!("cannot create engine directory {}", directory.display()))?;
    fs::write(
        directory.join("info"),
        format!("pid={}\nconfig={}\n", std::process::id(), path.display()),
    )?;
    write_ready(&engine, &directory)?;
    let listening: Vec<String> = engine
        .listening()
        .iter()
        .map(|(binding, address)| format!("{binding}={address}"))
        .collect();
    tracing::info!(
        config = %path.display(),
        "started; listening on {}",
        if listening.is_empty() { "nothing".to_owned() } else { listening.join(", ") }
    );
    let metrics_task = tokio::spawn(write_metrics(engine.clone(), directory.clone()));
    let reloader = match (&source, watch) {
        (ConfigSource::File(_), Some((watcher, changed))) => Some(tokio::spawn(reload_on_change(
            engine.clone(),
            Watched::new(watcher, &path),
            path.clone(),
            directory.clone(),
            text,
            changed,
        ))),
        (ConfigSource::Url(uri), _) if properties_watch => Some(tokio::spawn(reload_on_poll(
            engine.clone(),
            uri.clone(),
            directory.clone(),
            fetched,
            poll_interval,
        ))),
        _ => None,
    };
    signals.wait().await;
    tracing::info!("stopping: no new connections; draining open ones");
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    let drained = engine.shutdown(drain).await;
    metrics_task.abort();
    let _ = fs::remove_file(directory.join("ready"));
    let _ = fs::remove_file(directory.join("info"));
    if drained {
        tracing::info!("stopped");
    } else {
        tracing::warn!("stopped; connections still open after {drain:?} were closed");
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and SIGINT, both meaning "stop".
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Writes `ready`: one `namespace:binding ip:port` line per listening socket. Written to a
/// temporary name and renamed, so readers never see half a file.
fn write_ready(engine: &Engine, directory: &Path) -> Result<()> {
    let mut text = String::new();
    for (binding, address) in engine.listening() {
        text.push_str(&format!("{binding} {address}\n"));
    }
    let temporary = directory.join("ready.tmp");
    fs::write(&temporary, text)?;
    fs::rename(&temporary, directory.join("ready"))?;
    Ok(())
}

async fn write_metrics(engine: Arc<Engine>, directory: PathBuf) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        let temporary = directory.join("metrics.tmp");
        if fs::write(&temporary, engine.metrics().table()).is_ok() {
            let _ = fs::rename(&temporary, directory.join("metrics"));
        }
    }
}

/// The directory a file is in, `.` for a bare name.
fn directory_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Watches the config file's directory (editors and Kubernetes replace files rather than
/// write them in place); the receiver is told of any change there.
fn watch_config(
    path: &Path,
) -> Result<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)> {
    use notify::{RecursiveMode, Watcher};
    // One pending notification is enough: the reloader compares the whole text anyway.
    let (changes, changed) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = changes.try_send(());
        }
    })?;
    watcher.watch(&directory_of(path), RecursiveMode::NonRecursive)?;
    Ok((watcher, changed))
}

/// The watcher with the directories it watches: the config file's, and those of every file
/// the running config's components read (key stores, trust stores, ...).
struct Watched {
    watcher: notify::RecommendedWatcher,
    directories: std::collections::BTreeSet<PathBuf>,
}

impl Watched {
    fn new(watcher: notify::RecommendedWatcher, config: &Path) -> Self {
        Self {
            watcher,
            directories: [directory_of(config)].into(),
        }
    }

    /// Also watches the directories of `files` (and a directory store itself).
    fn add(&mut self, files: Vec<PathBuf>) {
        use notify::{RecursiveMode, Watcher};
        for file in files {
            let mut directories = vec![directory_of(&file)];
            if file.is_dir() {
                directories.push(file);
            }
            for directory in directories {
                if self.directories.contains(&directory) {
                    continue;
                }
                match self.watcher.watch(&directory, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.directories.insert(directory);
                    }
                    Err(error) => {
                        tracing::warn!(directory = %directory.display(), %error, "cannot watch")
                    }
                }
            }
        }
    }
}

/// Reloads when the config file's text differs from what is running, or a file its components
/// read changed.
async fn reload_on_change(
    engine: Arc<Engine>,
    mut watched: Watched,
    path: PathBuf,
    directory: PathBuf,
    mut current: String,
    mut changed: tokio::sync::mpsc::Receiver<()>,
) {
    watched.add(engine.dependencies());
    while changed.recv().await.is_some() {
        // Let a burst of writes settle before reading.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while changed.try_recv().is_ok() {}
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        if text == current && !engine.dependencies_changed() {
            continue;
        }
        current = text.clone();
        if reload(&engine, &path, &text, &directory) {
            watched.add(engine.dependencies());
        }
    }
}

/// Asks the config server every `interval` whether the config changed, and reloads when its
/// text differs from what is running or a file its components read changed. An unreachable
/// server keeps the running config.
async fn reload_on_poll(
    engine: Arc<Engine>,
    uri: http::Uri,
    directory: PathBuf,
    mut current: config_source::Fetched,
    interval: Duration,
) {
    let name = PathBuf::from(uri.to_string());
    loop {
        tokio::time::sleep(interval).await;
        let text = match config_source::fetch(&uri, Some(&current)).await {
            Ok(Some(fetched)) => {
                let changed = fetched.text != current.text;
                current = fetched;
                changed
            }
            Ok(None) => false,
            Err(error) => {
                tracing::warn!("{error:#}; keeping the running config");
                continue;
            }
        };
        if text || engine.dependencies_changed() {
            reload(&engine, &name, &current.text, &directory);
        }
    }
}

/// Loads and applies `text` in place of the running config; on an error the running config
/// stays. Returns whether the new config runs.
fn reload(engine: &Engine, path: &Path, text: &str, directory: &Path) -> bool {
    match engine
        .load(path, text)
        .and_then(|config| engine.apply(config))
    {
        Ok(report) => {
            tracing::info!(
                built = report.built,
                kept = report.kept,
                retired = report.retired,
                "config reloaded"
            );
            if let Err(error) = write_ready(engine, directory) {
                tracing::warn!(%error, "cannot update the ready file");
            }
            true
        }
        Err(errors) => {
            tracing::error!("config reload failed; keeping the running config:\n{errors}");
            false
        }
    }
}

fn read_pid(directory: &Path) -> Result<u32> {
    let info = fs::read_to_string(directory.join("info"))
        .with_context(|| format!("no gateway is running from {}", directory.display()))?;
    info.lines()
        .find_map(|line| line.strip_prefix("pid="))
        .and_then(|pid| pid.trim().parse().ok())
        .context("the engine info file holds no pid")
}

fn stop(args: &EngineArgs) -> Result<ExitCode> {
    let directory = engine_directory(&properties(args)?);
    let pid = read_pid(&directory)?;
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .context("cannot run kill")?;
    if !status.success() {
        bail!("cannot signal process {pid}");
    }
    for _ in 0..300 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return print(&format!("stopped {pid}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("process {pid} did not stop within 30 s")
}

fn metrics(args: &EngineArgs, namespace: Option<&str>, binding: Option<&str>) -> Result<ExitCode> {
    let directory = engine_directory(&properties(args)?);
    read_pid(&directory)?;
    let table = fs::read_to_string(directory.join("metrics"))
        .with_context(|| format!("no metrics in {}", directory.display()))?;
    let mut out = String::from("namespace binding metric value\n");
    for line in table.lines() {
        let mut fields = line.split(' ');
        let (Some(ns), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        if namespace.is_some_and(|n| n != ns) || binding.is_some_and(|b| b != name) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    print(out.trim_end())
}
