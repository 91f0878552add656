//! The `filesystem` binding: a `server` that answers `filesystem` streams (see [`kind`]) with
//! the files below one directory. It is the end of a pipeline; `http-filesystem` maps HTTP
//! requests onto it.
//!
//! ```yaml
//! name: example
//! bindings:
//!   east_http_filesystem_mapping:
//!     type: http-filesystem
//!     kind: proxy
//!     routes:
//!       - when:
//!           - path: /{path}
//!         exit: east_filesystem_server
//!         with:
//!           path: ${params.path}
//!   east_filesystem_server:
//!     type: filesystem
//!     kind: server
//!     options:
//!       location: /var/www/
//!       symlinks: ignore
//! ```
//!
//! Options:
//! - `location` (required): the directory served, a path or a `file:` URI. A relative one
//!   resolves, as in Zilla, against the `zilla.binding.filesystem.server.root` property, whose
//!   default is the working directory.
//! - `symlinks`: `ignore` (default) treats any path through a symbolic link below `location` as
//!   not found; `follow` follows links whose target stays inside `location`.
//!
//! Nothing outside `location` is ever served: paths with a root or a `..` segment are refused
//! before touching the filesystem, and the resolved path is checked again after
//! canonicalization (see [`files`]). Only regular files are served; content is read with
//! `tokio::fs` in chunks of at most [`files::CHUNK_SIZE`] bytes as the caller consumes it.
//!
//! Tags (what `http-filesystem` sends as `etag`) are derived from the file's metadata: inode
//! number, size and modification time in nanoseconds ([`files::tag_of`]), so no file is read
//! to compute one, and a tag survives restarts. A request with
//! [`kind::Capabilities::READ_FILE_CHANGES`] whose tag is current waits for the file to change
//! by checking its metadata every `zilla.binding.filesystem.server.poll.interval.millis`
//! milliseconds (default 200) until its timeout; a reload that retires the binding or a
//! shutdown ends the wait early with "not modified".
//!
//! Files can also be created (`CREATE_FILE`: only where nothing exists yet, in an existing
//! directory), replaced (`WRITE_FILE`: only an existing file, and only with its current tag
//! or `*`) and deleted (`DELETE_FILE`: with a tag, only while it is current). New content is
//! uploaded beside the file and moved into place atomically (see [`files`]); a replaced file
//! keeps its permissions. Operations act on the resolved file: with `symlinks: follow`,
//! replacing or deleting through a link changes the link's target. Directories
//! (`CREATE_DIRECTORY`, `DELETE_DIRECTORY`, `READ_DIRECTORY`) are not served by this build:
//! requests asking for them fail with a protocol error.

pub mod config;
pub mod files;
pub mod kind;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext, StartContext};
use zilla_engine::stream::{BoxFuture, StreamError, StreamKind};
use zilla_engine::{BindingKind, BuildError, Registry};

use config::FileSystemOptions;
use files::{OpenFile, Root, Vacancy};
use kind::{
    Capabilities, FileRequest, FileResponse, FileSystem, FileSystemError, FileSystemHandler,
};

/// Registers the `filesystem` binding type.
pub fn register(registry: &mut Registry) {
    registry
        .binding(FileSystemFactory)
        .properties(&[SERVER_ROOT_PROPERTY, POLL_INTERVAL_PROPERTY]);
}

/// The property relative `location`s resolve against (Zilla's name).
pub const SERVER_ROOT_PROPERTY: &str = "zilla.binding.filesystem.server.root";

/// The property setting how often a waiting request checks its file, in milliseconds.
pub const POLL_INTERVAL_PROPERTY: &str = "zilla.binding.filesystem.server.poll.interval.millis";

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Builds filesystem bindings.
#[derive(Debug)]
pub struct FileSystemFactory;

impl BindingFactory for FileSystemFactory {
    fn type_name(&self) -> &'static str {
        "filesystem"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server]
    }

    fn accepts(&self, _kind: BindingKind) -> &'static [&'static str] {
        &[FileSystem::NAME]
    }

    fn emits(&self, _kind: BindingKind) -> Option<&'static str> {
        None
    }

    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(BindingSchema::of::<FileSystemOptions>()),
            options_required: false,
            when: None,
            with: None,
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        let options: FileSystemOptions = context.options()?;
        let Some(location) = options.location else {
            return Err(BuildError::at(
                "options",
                "missing `location`: a filesystem server needs the directory it serves",
            ));
        };
        let location = location_path(&location)
            .map_err(|message| BuildError::at("options.location", message))?;
        let location = if location.is_absolute() {
            location
        } else {
            let server_root = match context.properties().get(SERVER_ROOT_PROPERTY) {
                Some(root) => location_path(root).map_err(|message| {
                    BuildError::at(
                        "options.location",
                        format!("{SERVER_ROOT_PROPERTY}: {message}"),
                    )
                })?,
                None => PathBuf::from("."),
            };
            server_root.join(location)
        };
        let qname = context.name().to_string();
        if !location.is_dir() {
            tracing::warn!(
                binding = %qname,
                location = %location.display(),
                "location is not a directory (yet): every file is not found until it is"
            );
        }
        let server = Arc::new(FileSystemServer {
            qname,
            root: Root::new(location, options.symlinks.unwrap_or_default()),
            poll_interval: context
                .properties()
                .millis(POLL_INTERVAL_PROPERTY, DEFAULT_POLL_INTERVAL)
                .max(Duration::from_millis(1)),
            started: OnceLock::new(),
        });
        context.publish::<FileSystem>(server.clone());
        Ok(server)
    }
}

/// `location` as a path: a plain path, or a `file:` URI (percent-decoded).
fn location_path(location: &str) -> Result<PathBuf, String> {
    let scheme = location
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|scheme| {
            // One letter would be a drive, not a scheme.
            scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    let scheme_end = match scheme {
        Some(scheme) if scheme.eq_ignore_ascii_case("file") => scheme.len(),
        Some(_) if location.contains("://") => {
            return Err(format!(
                "`{location}`: only directories and `file:` URIs can be served"
            ));
        }
        _ => return Ok(PathBuf::from(location)),
    };
    let rest = &location[scheme_end + 1..];
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => {
            let start = authority_and_path
                .find('/')
                .unwrap_or(authority_and_path.len());
            let authority = &authority_and_path[..start];
            if !(authority.is_empty() || authority.eq_ignore_ascii_case("localhost")) {
                return Err(format!(
                    "`{location}`: a `file:` URI must name a local path"
                ));
            }
            &authority_and_path[start..]
        }
        None => rest,
    };
    if path.is_empty() {
        return Err(format!("`{location}` names no directory"));
    }
    percent_decode(path)
        .map(PathBuf::from)
        .ok_or_else(|| format!("`{location}` is not a valid UTF-8 path once decoded"))
}

/// `text` with `%XX` escapes decoded; `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// A built filesystem server.
struct FileSystemServer {
    qname: String,
    root: Root,
    poll_interval: Duration,
    started: OnceLock<StartContext>,
}

/// How a wait for a change ended.
enum Waited {
    Unchanged(kind::FileMetadata),
    Changed(OpenFile),
    Gone,
}

impl Binding for FileSystemServer {
    fn start(&self, context: &StartContext) {
        // The engine starts a built binding once; its tokens end waits on retire or shutdown.
        let _ = self.started.set(context.clone());
    }
}

impl FileSystemHandler for FileSystemServer {
    fn handle(&self, request: FileRequest) -> BoxFuture<'_, Result<FileResponse, StreamError>> {
        Box::pin(self.serve(request))
    }
}

impl FileSystemServer {
    async fn serve(&self, request: FileRequest) -> Result<FileResponse, StreamError> {
        let capabilities = request.capabilities;
        let directories = Capabilities::CREATE_DIRECTORY
            | Capabilities::DELETE_DIRECTORY
            | Capabilities::READ_DIRECTORY;
        let writes = [
            Capabilities::CREATE_FILE,
            Capabilities::WRITE_FILE,
            Capabilities::DELETE_FILE,
        ];
        let asked = writes
            .iter()
            .filter(|write| capabilities.contains(**write))
            .count();
        if capabilities.intersects(directories) || asked > 1 {
            return Err(StreamError::Protocol(format!(
                "filesystem capabilities {capabilities:?} are not supported"
            )));
        }
        if capabilities.contains(Capabilities::CREATE_FILE) {
            self.create(request).await
        } else if capabilities.contains(Capabilities::WRITE_FILE) {
            self.replace(request).await
        } else if capabilities.contains(Capabilities::DELETE_FILE) {
            self.delete(request).await
        } else {
            self.read(request).await
        }
    }

    async fn read(&self, request: FileRequest) -> Result<FileResponse, StreamError> {
        let Some(mut opened) = self.open(&request.path).await? else {
            return Ok(FileResponse::Failed(FileSystemError::FileNotFound));
        };
        if request.tag.as_deref() == Some(opened.metadata.tag.as_str()) {
            let wait = request.timeout.filter(|timeout| {
                !timeout.is_zero()
                    && request
                        .capabilities
                        .contains(Capabilities::READ_FILE_CHANGES)
            });
            let Some(timeout) = wait else {
                return Ok(FileResponse::NotModified {
                    metadata: opened.metadata,
                });
            };
            match self.wait_for_change(&request.path, opened, timeout).await? {
                Waited::Unchanged(metadata) => return Ok(FileResponse::NotModified { metadata }),
                Waited::Gone => return Ok(FileResponse::Failed(FileSystemError::FileNotFound)),
                Waited::Changed(changed) => opened = changed,
            }
        }
        let body = request
            .capabilities
            .contains(Capabilities::READ_FILE)
            .then(|| files::body(opened.file, opened.metadata.size));
        Ok(FileResponse::Found {
            metadata: opened.metadata,
            body,
        })
    }

    async fn create(&self, request: FileRequest) -> Result<FileResponse, StreamError> {
        let vacancy = match self.root.vacant(&request.path).await {
            Ok(vacancy) => vacancy,
            Err(error) if is_missing(&error) => {
                self.unresolved(&error);
                Vacancy::DirectoryNotFound
            }
            Err(error) => return Err(StreamError::Io(error)),
        };
        let target = match vacancy {
            Vacancy::Vacant(target) => target,
            Vacancy::Occupied => return Ok(FileResponse::Failed(FileSystemError::FileExists)),
            Vacancy::DirectoryNotFound => {
                return Ok(FileResponse::Failed(FileSystemError::DirectoryNotFound));
            }
            Vacancy::Refused => return Ok(FileResponse::Failed(FileSystemError::FileNotFound)),
        };
        let upload = files::write_beside(&target, content(request.content)).await?;
        // A hard link, unlike a rename, fails when the name was taken while uploading.
        let linked = tokio::fs::hard_link(&upload, &target).await;
        remove_upload(&upload).await;
        match linked {
            Ok(()) => Ok(FileResponse::Written {
                metadata: files::metadata_at(&target).await?,
            }),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok(FileResponse::Failed(FileSystemError::FileExists))
            }
            Err(error) => Err(StreamError::Io(error)),
        }
    }

    async fn replace(&self, request: FileRequest) -> Result<FileResponse, StreamError> {
        let Some((target, metadata)) = self.existing_file(&request.path).await? else {
            return Ok(FileResponse::Failed(FileSystemError::FileNotFound));
        };
        let Some(tag) = request.tag.as_deref() else {
            return Ok(FileResponse::Failed(FileSystemError::FileTagMissing));
        };
        if !tag_matches(tag, &metadata) {
            return Ok(FileResponse::Failed(FileSystemError::FileModified));
        }
        let permissions = tokio::fs::metadata(&target).await?.permissions();
        let upload = files::write_beside(&target, content(request.content)).await?;
        let moved = async {
            tokio::fs::set_permissions(&upload, permissions).await?;
            tokio::fs::rename(&upload, &target).await
        }
        .await;
        if let Err(error) = moved {
            remove_upload(&upload).await;
            return Err(StreamError::Io(error));
        }
        Ok(FileResponse::Written {
            metadata: files::metadata_at(&target).await?,
        })
    }

    async fn delete(&self, request: FileRequest) -> Result<FileResponse, StreamError> {
        let Some((target, metadata)) = self.existing_file(&request.path).await? else {
            return Ok(FileResponse::Failed(FileSystemError::FileNotFound));
        };
        if let Some(tag) = request.tag.as_deref()
            && !tag_matches(tag, &metadata)
        {
            return Ok(FileResponse::Failed(FileSystemError::FileModified));
        }
        match tokio::fs::remove_file(&target).await {
            Ok(()) => Ok(FileResponse::Deleted),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(FileResponse::Failed(FileSystemError::FileNotFound))
            }
            Err(error) => Err(StreamError::Io(error)),
        }
    }

    async fn open(&self, path: &str) -> Result<Option<OpenFile>, StreamError> {
        self.located(self.root.open(path).await)
    }

    async fn existing_file(
        &self,
        path: &str,
    ) -> Result<Option<(PathBuf, kind::FileMetadata)>, StreamError> {
        self.located(self.root.existing_file(path).await)
    }

    /// A missing location serves nothing (as a missing file); other errors are failures.
    fn located<T>(&self, result: std::io::Result<Option<T>>) -> Result<Option<T>, StreamError> {
        match result {
            Ok(found) => Ok(found),
            Err(error) if is_missing(&error) => {
                self.unresolved(&error);
                Ok(None)
            }
            Err(error) => Err(StreamError::Io(error)),
        }
    }

    fn unresolved(&self, error: &std::io::Error) {
        tracing::warn!(
            binding = %self.qname,
            location = %self.root.location().display(),
            %error,
            "location cannot be resolved"
        );
    }

    /// Checks `path` every poll interval until its tag differs from `current`'s, it is gone,
    /// `timeout` passes or the binding stops.
    async fn wait_for_change(
        &self,
        path: &str,
        current: OpenFile,
        timeout: Duration,
    ) -> Result<Waited, StreamError> {
        let tag = current.metadata.tag.clone();
        let mut latest = current.metadata;
        drop(current.file);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let stopped = self.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut deadline => return Ok(Waited::Unchanged(latest)),
                _ = &mut stopped => return Ok(Waited::Unchanged(latest)),
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
            match self.open(path).await? {
                None => return Ok(Waited::Gone),
                Some(opened) if opened.metadata.tag != tag => return Ok(Waited::Changed(opened)),
                Some(opened) => latest = opened.metadata,
            }
        }
    }

    /// Completes when the binding is retired or the gateway shuts down.
    async fn stopped(&self) {
        match self.started.get() {
            Some(context) => tokio::select! {
                _ = context.retired.cancelled() => {}
                _ = context.shutdown.cancelled() => {}
            },
            None => std::future::pending().await,
        }
    }
}

/// Whether the caller's `tag` (`*` for any) is the file's.
fn tag_matches(tag: &str, metadata: &kind::FileMetadata) -> bool {
    tag == "*" || tag == metadata.tag
}

/// The content to write; none is an empty file.
fn content(content: Option<kind::FileBody>) -> kind::FileBody {
    content.unwrap_or_else(|| Box::pin(futures_util::stream::empty()))
}

async fn remove_upload(upload: &std::path::Path) {
    if let Err(error) = tokio::fs::remove_file(upload).await {
        tracing::warn!(path = %upload.display(), %error, "cannot remove upload");
    }
}

fn is_missing(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use futures_util::StreamExt;

    fn server(location: &std::path::Path, poll_interval: Duration) -> FileSystemServer {
        FileSystemServer {
            qname: "test:filesystem0".into(),
            root: Root::new(location.to_owned(), config::Symlinks::Ignore),
            poll_interval,
            started: OnceLock::new(),
        }
    }

    const READ: Capabilities = Capabilities::from_bits(
        Capabilities::READ_FILE.bits() | Capabilities::READ_METADATA.bits(),
    );

    async fn content(response: FileResponse) -> (kind::FileMetadata, Vec<u8>) {
        match response {
            FileResponse::Found {
                metadata,
                body: Some(body),
            } => {
                let chunks: Vec<_> = body.map(|chunk| chunk.unwrap()).collect().await;
                (metadata, chunks.concat())
            }
            other => panic!("expected content, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reads_content_metadata_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        let server = server(dir.path(), DEFAULT_POLL_INTERVAL);

        let (metadata, bytes) = content(
            server
                .handle(FileRequest::new("a.txt", READ))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(bytes, b"hello");
        assert_eq!(metadata.size, 5);
        assert_eq!(metadata.content_type, "text/plain");

        let metadata_only = server
            .handle(FileRequest::new("a.txt", Capabilities::READ_METADATA))
            .await
            .unwrap();
        assert!(matches!(
            metadata_only,
            FileResponse::Found { body: None, .. }
        ));

        let current = FileRequest::new("a.txt", READ).with_tag(metadata.tag.clone());
        let response = server.handle(current).await.unwrap();
        assert!(matches!(response, FileResponse::NotModified { metadata: m } if m == metadata));

        let stale = FileRequest::new("a.txt", READ).with_tag("stale");
        content(server.handle(stale).await.unwrap()).await;

        let missing = server
            .handle(FileRequest::new("b.txt", READ))
            .await
            .unwrap();
        assert!(matches!(
            missing,
            FileResponse::Failed(FileSystemError::FileNotFound)
        ));
        let escape = server
            .handle(FileRequest::new("../a.txt", READ))
            .await
            .unwrap();
        assert!(matches!(
            escape,
            FileResponse::Failed(FileSystemError::FileNotFound)
        ));

        let listing = server
            .handle(FileRequest::new("", Capabilities::READ_DIRECTORY))
            .await;
        assert!(matches!(listing, Err(StreamError::Protocol(_))));
    }

    #[tokio::test]
    async fn a_missing_location_serves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let server = server(&dir.path().join("absent"), DEFAULT_POLL_INTERVAL);
        let response = server
            .handle(FileRequest::new("a.txt", READ))
            .await
            .unwrap();
        assert!(matches!(
            response,
            FileResponse::Failed(FileSystemError::FileNotFound)
        ));
    }

    #[tokio::test]
    async fn waits_for_a_change_deletion_or_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "one").unwrap();
        let server = Arc::new(server(dir.path(), Duration::from_millis(10)));
        let (metadata, _) = content(
            server
                .handle(FileRequest::new("a.txt", READ))
                .await
                .unwrap(),
        )
        .await;
        let waiting = |timeout: Duration| {
            let server = server.clone();
            let request = FileRequest::new("a.txt", READ)
                .with_tag(metadata.tag.clone())
                .with_wait(timeout);
            tokio::spawn(async move { server.handle(request).await.unwrap() })
        };

        let started = std::time::Instant::now();
        let unchanged = waiting(Duration::from_millis(150)).await.unwrap();
        assert!(matches!(unchanged, FileResponse::NotModified { .. }));
        assert!(started.elapsed() >= Duration::from_millis(150));

        // Without READ_FILE_CHANGES a current tag answers at once.
        let mut no_wait = FileRequest::new("a.txt", READ).with_tag(metadata.tag.clone());
        no_wait.timeout = Some(Duration::from_secs(30));
        let started = std::time::Instant::now();
        let response = server.handle(no_wait).await.unwrap();
        assert!(matches!(response, FileResponse::NotModified { .. }));
        assert!(started.elapsed() < Duration::from_secs(5));

        let change = waiting(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!change.is_finished());
        std::fs::write(&path, "changed").unwrap();
        let (changed, bytes) = content(change.await.unwrap()).await;
        assert_eq!(bytes, b"changed");
        assert_ne!(changed.tag, metadata.tag);

        let request = FileRequest::new("a.txt", READ)
            .with_tag(changed.tag.clone())
            .with_wait(Duration::from_secs(30));
        let deletion = {
            let server = server.clone();
            tokio::spawn(async move { server.handle(request).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            deletion.await.unwrap(),
            FileResponse::Failed(FileSystemError::FileNotFound)
        ));
    }

    #[tokio::test]
    async fn shutdown_ends_a_wait_as_not_modified() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        let server = Arc::new(server(dir.path(), Duration::from_millis(10)));
        let context = StartContext {
            retired: tokio_util::sync::CancellationToken::new(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
            events: Default::default(),
        };
        server.start(&context);
        let (metadata, _) = content(
            server
                .handle(FileRequest::new("a.txt", READ))
                .await
                .unwrap(),
        )
        .await;
        let request = FileRequest::new("a.txt", READ)
            .with_tag(metadata.tag.clone())
            .with_wait(Duration::from_secs(60));
        let waiting = {
            let server = server.clone();
            tokio::spawn(async move { server.handle(request).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        context.shutdown.cancel();
        let response = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(response, FileResponse::NotModified { .. }));
    }

    fn chunks(parts: &[&'static str]) -> kind::FileBody {
        let parts: Vec<std::io::Result<bytes::Bytes>> = parts
            .iter()
            .map(|part| Ok(bytes::Bytes::from_static(part.as_bytes())))
            .collect();
        Box::pin(futures_util::stream::iter(parts))
    }

    fn failed(response: FileResponse) -> FileSystemError {
        match response {
            FileResponse::Failed(error) => error,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn written(response: FileResponse) -> kind::FileMetadata {
        match response {
            FileResponse::Written { metadata } => metadata,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn entries(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn creates_files_that_do_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("sub"), dir.path().join("link")).unwrap();
        let server = server(dir.path(), DEFAULT_POLL_INTERVAL);
        let create = |path: &str, parts: &[&'static str]| {
            FileRequest::new(path, Capabilities::CREATE_FILE).with_content(chunks(parts))
        };

        let metadata = written(
            server
                .handle(create("sub/new.json", &["{\"a\":", "1}"]))
                .await
                .unwrap(),
        );
        assert_eq!(metadata.size, 7);
        assert_eq!(metadata.content_type, "application/json");
        assert_eq!(
            std::fs::read(dir.path().join("sub/new.json")).unwrap(),
            b"{\"a\":1}"
        );
        let (read, _) = content(
            server
                .handle(FileRequest::new("sub/new.json", READ))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(read.tag, metadata.tag);

        let again = server.handle(create("sub/new.json", &["x"])).await.unwrap();
        assert_eq!(failed(again), FileSystemError::FileExists);
        assert_eq!(
            std::fs::read(dir.path().join("sub/new.json")).unwrap(),
            b"{\"a\":1}"
        );
        let nowhere = server
            .handle(create("missing/new.txt", &["x"]))
            .await
            .unwrap();
        assert_eq!(failed(nowhere), FileSystemError::DirectoryNotFound);
        let through_link = server.handle(create("link/new.txt", &["x"])).await.unwrap();
        assert_eq!(failed(through_link), FileSystemError::DirectoryNotFound);
        let escape = server
            .handle(create("../escape.txt", &["x"]))
            .await
            .unwrap();
        assert_eq!(failed(escape), FileSystemError::FileNotFound);
        assert!(!dir.path().parent().unwrap().join("escape.txt").exists());

        assert_eq!(
            entries(&dir.path().join("sub")),
            ["new.json"],
            "no upload left behind"
        );
    }

    #[tokio::test]
    async fn replaces_files_with_the_callers_tag_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "one").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        let server = server(dir.path(), DEFAULT_POLL_INTERVAL);
        let (metadata, _) = content(
            server
                .handle(FileRequest::new("a.txt", READ))
                .await
                .unwrap(),
        )
        .await;
        let replace = |tag: Option<&str>| {
            let request = FileRequest::new("a.txt", Capabilities::WRITE_FILE)
                .with_content(chunks(&["two", " and more"]));
            match tag {
                Some(tag) => request.with_tag(tag),
                None => request,
            }
        };

        let untagged = server.handle(replace(None)).await.unwrap();
        assert_eq!(failed(untagged), FileSystemError::FileTagMissing);
        let stale = server.handle(replace(Some("stale"))).await.unwrap();
        assert_eq!(failed(stale), FileSystemError::FileModified);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");

        let replaced = written(server.handle(replace(Some(&metadata.tag))).await.unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"two and more");
        assert_ne!(replaced.tag, metadata.tag);
        assert_eq!(replaced.size, 12);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o640);

        written(server.handle(replace(Some("*"))).await.unwrap());
        let missing = FileRequest::new("b.txt", Capabilities::WRITE_FILE).with_tag("*");
        assert_eq!(
            failed(server.handle(missing).await.unwrap()),
            FileSystemError::FileNotFound
        );
        assert_eq!(entries(dir.path()), ["a.txt"], "no upload left behind");
    }

    #[tokio::test]
    async fn a_failed_upload_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "one").unwrap();
        let server = server(dir.path(), DEFAULT_POLL_INTERVAL);
        let broken: kind::FileBody = Box::pin(futures_util::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"partial")),
            Err(std::io::Error::other("client went away")),
        ]));
        let request = FileRequest::new("a.txt", Capabilities::WRITE_FILE)
            .with_tag("*")
            .with_content(broken);
        assert!(matches!(
            server.handle(request).await,
            Err(StreamError::Io(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(entries(dir.path()), ["a.txt"]);
    }

    #[tokio::test]
    async fn deletes_files_unless_modified() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let server = server(dir.path(), DEFAULT_POLL_INTERVAL);
        let delete = |path: &str| FileRequest::new(path, Capabilities::DELETE_FILE);

        let stale = server
            .handle(delete("a.txt").with_tag("stale"))
            .await
            .unwrap();
        assert_eq!(failed(stale), FileSystemError::FileModified);
        assert!(matches!(
            server.handle(delete("a.txt")).await.unwrap(),
            FileResponse::Deleted
        ));
        assert!(!dir.path().join("a.txt").exists());
        let gone = server.handle(delete("a.txt")).await.unwrap();
        assert_eq!(failed(gone), FileSystemError::FileNotFound);
        let directory = server.handle(delete("sub")).await.unwrap();
        assert_eq!(failed(directory), FileSystemError::FileNotFound);
        assert!(dir.path().join("sub").is_dir());
    }

    #[test]
    fn locations_as_paths_or_file_uris() {
        assert_eq!(
            location_path("/var/www/").unwrap(),
            PathBuf::from("/var/www/")
        );
        assert_eq!(location_path("www").unwrap(), PathBuf::from("www"));
        assert_eq!(
            location_path("file:///var/www/").unwrap(),
            PathBuf::from("/var/www/")
        );
        assert_eq!(
            location_path("file://localhost/srv").unwrap(),
            PathBuf::from("/srv")
        );
        assert_eq!(
            location_path("file:/srv/my%20site").unwrap(),
            PathBuf::from("/srv/my site")
        );
        assert_eq!(
            location_path("FILE:relative").unwrap(),
            PathBuf::from("relative")
        );
        assert!(location_path("http://example.com/www").is_err());
        assert!(location_path("file://remote/www").is_err());
        assert!(location_path("file://").is_err());
        assert_eq!(
            location_path("/srv/a:b").unwrap(),
            PathBuf::from("/srv/a:b")
        );
        assert_eq!(
            location_path("notes:2024").unwrap(),
            PathBuf::from("notes:2024")
        );
    }
}
