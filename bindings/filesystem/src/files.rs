//! Finding a file below the served directory without ever leaving it, and reading it.
//!
//! A requested path is first checked as text: only plain names separated by `/` are allowed
//! (no root, no `..`, no NUL). It is then joined to the canonical served directory and
//! canonicalized: with `symlinks: ignore` the result must be the joined path itself (so no
//! component was a link), with `symlinks: follow` it must still be inside the served
//! directory. Only regular files are served. Size, type and tag come from the opened handle,
//! so they describe the bytes that are read.
//!
//! New content is written to a hidden file in the target's directory, synced, and then linked
//! (create: fails if the name is taken meanwhile) or renamed (replace) into place, so readers
//! see the old or the new content, never a part.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Symlinks;
use crate::kind::{FileBody, FileMetadata};

/// How many bytes one chunk of a file body holds at most.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The served directory and its link policy.
#[derive(Debug, Clone)]
pub struct Root {
    location: PathBuf,
    symlinks: Symlinks,
}

/// A file opened for serving.
#[derive(Debug)]
pub struct OpenFile {
    /// The opened handle.
    pub file: tokio::fs::File,
    /// What the handle says about it.
    pub metadata: FileMetadata,
}

impl Root {
    /// Serves `location` (canonicalized on each request, so a replaced or late-mounted
    /// directory is picked up).
    pub fn new(location: PathBuf, symlinks: Symlinks) -> Self {
        Self { location, symlinks }
    }

    /// The directory as configured.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// The regular file `path` names below the root, opened; `Ok(None)` when there is none
    /// that may be served. `Err` when the root cannot be resolved or the opened file cannot
    /// be inspected.
    pub async fn open(&self, path: &str) -> io::Result<Option<OpenFile>> {
        let Some(resolved) = self.existing(path).await? else {
            return Ok(None);
        };
        // Opening a FIFO would block until a writer comes: check what it is first.
        if !tokio::fs::metadata(&resolved)
            .await
            .is_ok_and(|stat| stat.is_file())
        {
            return Ok(None);
        }
        let file = match tokio::fs::File::open(&resolved).await {
            Ok(file) => file,
            Err(error) => {
                tracing::debug!(path = %resolved.display(), %error, "cannot open");
                return Ok(None);
            }
        };
        let stat = file.metadata().await?;
        if !stat.is_file() {
            return Ok(None);
        }
        Ok(Some(OpenFile {
            file,
            metadata: metadata_of(&resolved, &stat),
        }))
    }

    /// The canonical path and metadata of the regular file `path` names below the root, when
    /// there is one that may be served.
    pub async fn existing_file(&self, path: &str) -> io::Result<Option<(PathBuf, FileMetadata)>> {
        let Some(resolved) = self.existing(path).await? else {
            return Ok(None);
        };
        match tokio::fs::metadata(&resolved).await {
            Ok(stat) if stat.is_file() => {
                let metadata = metadata_of(&resolved, &stat);
                Ok(Some((resolved, metadata)))
            }
            _ => Ok(None),
        }
    }

    /// Where a file `path` names may be created: its directory must exist (and be reachable
    /// under the link policy) and nothing may be at the path yet.
    pub async fn vacant(&self, path: &str) -> io::Result<Vacancy> {
        let Some(relative) = relative_path(path) else {
            return Ok(Vacancy::Refused);
        };
        let (Some(parent), Some(name)) = (relative.parent(), relative.file_name()) else {
            return Ok(Vacancy::Refused);
        };
        let root = tokio::fs::canonicalize(&self.location).await?;
        let directory = if parent.as_os_str().is_empty() {
            root
        } else {
            match self.resolve(&root, parent).await {
                Some(directory) => directory,
                None => return Ok(Vacancy::DirectoryNotFound),
            }
        };
        if !tokio::fs::metadata(&directory).await?.is_dir() {
            return Ok(Vacancy::DirectoryNotFound);
        }
        let target = directory.join(name);
        // Anything there, a dangling link included, is in the way.
        if tokio::fs::symlink_metadata(&target).await.is_ok() {
            return Ok(Vacancy::Occupied);
        }
        Ok(Vacancy::Vacant(target))
    }

    /// The canonical path of whatever `path` names below the root, if the link policy allows
    /// it.
    async fn existing(&self, path: &str) -> io::Result<Option<PathBuf>> {
        let Some(relative) = relative_path(path) else {
            tracing::debug!(path, "refused: not a plain relative path");
            return Ok(None);
        };
        let root = tokio::fs::canonicalize(&self.location).await?;
        Ok(self.resolve(&root, &relative).await)
    }

    /// The canonical path of `relative` below the canonical `root`, if the link policy allows
    /// it.
    async fn resolve(&self, root: &Path, relative: &Path) -> Option<PathBuf> {
        let joined = root.join(relative);
        let canonical = match tokio::fs::canonicalize(&joined).await {
            Ok(canonical) => canonical,
            Err(error) => {
                tracing::debug!(path = %joined.display(), %error, "not found");
                return None;
            }
        };
        let allowed = match self.symlinks {
            // Both are built from the canonical root and plain names, so they differ exactly
            // when some component below the root is a link.
            Symlinks::Ignore => canonical == joined,
            Symlinks::Follow => canonical.starts_with(root),
        };
        if allowed {
            Some(canonical)
        } else {
            tracing::debug!(
                path = %joined.display(),
                target = %canonical.display(),
                symlinks = ?self.symlinks,
                "refused: symbolic link"
            );
            None
        }
    }
}

/// Whether a file may be created at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vacancy {
    /// Yes, at this (canonical) path.
    Vacant(PathBuf),
    /// Something is there already.
    Occupied,
    /// Its directory does not exist (or is reached through a link the policy refuses).
    DirectoryNotFound,
    /// The path is not a plain relative path.
    Refused,
}

/// Writes `content` to a new hidden file next to `target` (so that it can be moved over it
/// atomically) and returns its path; the file is removed again if writing fails.
pub async fn write_beside(target: &Path, content: FileBody) -> io::Result<PathBuf> {
    static UPLOADS: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let upload = target.with_file_name(format!(
        ".{name}.{}-{}.upload",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    ));
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&upload)
        .await?;
    match write_all(file, content).await {
        Ok(()) => Ok(upload),
        Err(error) => {
            if let Err(cleanup) = tokio::fs::remove_file(&upload).await {
                tracing::warn!(path = %upload.display(), %cleanup, "cannot remove partial upload");
            }
            Err(error)
        }
    }
}

async fn write_all(mut file: tokio::fs::File, mut content: FileBody) -> io::Result<()> {
    while let Some(chunk) = content.next().await {
        file.write_all(&chunk?).await?;
    }
    file.flush().await?;
    // Durable before it is moved into place, so a crash leaves the old or the new content.
    file.sync_all().await
}

/// The metadata of the file at `path`, which exists.
pub async fn metadata_at(path: &Path) -> io::Result<FileMetadata> {
    let stat = tokio::fs::metadata(path).await?;
    Ok(metadata_of(path, &stat))
}

/// `path` as a relative path of plain names, or `None` when it has a root, a `..`, a NUL or
/// names nothing (empty, `.`). `.` segments and repeated `/` are dropped.
pub fn relative_path(path: &str) -> Option<PathBuf> {
    if path.contains('\0') {
        return None;
    }
    let mut relative = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => relative.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if relative.as_os_str().is_empty() {
        None
    } else {
        Some(relative)
    }
}

/// The media type of `path`, from its extension.
pub fn content_type(path: &Path) -> String {
    mime_guess::from_path(path)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

/// The tag of a file: its inode number, size and modification time in nanoseconds, in hex.
/// It changes whenever the file is rewritten or replaced (even by a same-sized file, as long
/// as the filesystem records modification times finer than the interval between writes) and
/// stays the same across restarts; it is computed without reading the file.
pub fn tag_of(stat: &std::fs::Metadata) -> String {
    let modified = stat
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    format!("{:x}-{:x}-{modified:x}", inode(stat), stat.len())
}

#[cfg(unix)]
fn inode(stat: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(stat)
}

#[cfg(not(unix))]
fn inode(_stat: &std::fs::Metadata) -> u64 {
    0
}

fn metadata_of(path: &Path, stat: &std::fs::Metadata) -> FileMetadata {
    FileMetadata {
        content_type: content_type(path),
        size: stat.len(),
        tag: tag_of(stat),
        modified: stat
            .modified()
            .ok()
            .filter(|time| *time > SystemTime::UNIX_EPOCH),
    }
}

/// The first `size` bytes of `file`, in chunks of at most [`CHUNK_SIZE`]; an
/// `UnexpectedEof` error if the file ends sooner (it was truncated while being read).
pub fn body(file: tokio::fs::File, size: u64) -> FileBody {
    Box::pin(futures_util::stream::unfold(
        (file, size),
        |(mut file, remaining)| async move {
            if remaining == 0 {
                return None;
            }
            let wanted = usize::try_from(remaining).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
            let mut chunk = BytesMut::with_capacity(wanted);
            let read = (&mut file).take(wanted as u64).read_buf(&mut chunk).await;
            match read {
                Ok(0) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file ended {remaining} bytes early"),
                    )),
                    (file, 0),
                )),
                Ok(read) => Some((Ok(chunk.freeze()), (file, remaining - read as u64))),
                Err(error) => Some((Err(error), (file, 0))),
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn only_plain_relative_paths() {
        assert_eq!(relative_path("index.html"), Some("index.html".into()));
        assert_eq!(relative_path("a/./b//c.txt"), Some("a/b/c.txt".into()));
        assert_eq!(relative_path("./a"), Some("a".into()));
        assert_eq!(relative_path("..."), Some("...".into()));
        for refused in [
            "",
            ".",
            "./",
            "/etc/passwd",
            "//etc/passwd",
            "..",
            "../secret",
            "a/../../secret",
            "a/..",
            "a\0b",
        ] {
            assert_eq!(relative_path(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn content_types_from_extensions() {
        assert_eq!(content_type(Path::new("index.html")), "text/html");
        assert_eq!(content_type(Path::new("a/script.js")), "text/javascript");
        assert_eq!(content_type(Path::new("style.CSS")), "text/css");
        assert_eq!(content_type(Path::new("data.json")), "application/json");
        assert_eq!(content_type(Path::new("logo.png")), "image/png");
        assert_eq!(
            content_type(Path::new("README")),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(Path::new("x.unknownext")),
            "application/octet-stream"
        );
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    async fn open(root: &Root, path: &str) -> Option<OpenFile> {
        root.open(path).await.unwrap()
    }

    #[tokio::test]
    async fn serves_regular_files_inside_only() {
        let base = tempdir();
        let www = base.path().join("www");
        std::fs::create_dir_all(www.join("sub")).unwrap();
        std::fs::write(www.join("index.html"), "<html></html>").unwrap();
        std::fs::write(www.join("sub/page.txt"), "page").unwrap();
        std::fs::write(base.path().join("secret.txt"), "secret").unwrap();
        let root = Root::new(www.clone(), Symlinks::Ignore);

        let file = open(&root, "index.html").await.unwrap();
        assert_eq!(file.metadata.size, 13);
        assert_eq!(file.metadata.content_type, "text/html");
        assert!(open(&root, "sub/page.txt").await.is_some());
        assert!(open(&root, "./sub//page.txt").await.is_some());
        assert!(open(&root, "../secret.txt").await.is_none());
        assert!(open(&root, "sub/../../secret.txt").await.is_none());
        assert!(open(&root, "sub/../index.html").await.is_none());
        let absolute = base.path().join("secret.txt");
        assert!(open(&root, absolute.to_str().unwrap()).await.is_none());
        assert!(
            open(&root, "sub").await.is_none(),
            "a directory is not a file"
        );
        assert!(open(&root, "missing.html").await.is_none());
        assert!(open(&root, "index.html/x").await.is_none());
        let fifo = std::process::Command::new("mkfifo")
            .arg(www.join("pipe.txt"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let pipe = tokio::time::timeout(std::time::Duration::from_secs(5), root.open("pipe.txt"));
        assert!(
            pipe.await.unwrap().unwrap().is_none(),
            "a FIFO is not a file"
        );

        // The location itself may be reached through a link.
        let link = base.path().join("www-link");
        std::os::unix::fs::symlink(&www, &link).unwrap();
        let via_link = Root::new(link, Symlinks::Ignore);
        assert!(open(&via_link, "index.html").await.is_some());

        let missing = Root::new(base.path().join("nope"), Symlinks::Ignore);
        assert!(missing.open("index.html").await.is_err());
    }

    #[tokio::test]
    async fn symlink_policies() {
        let base = tempdir();
        let www = base.path().join("www");
        std::fs::create_dir_all(www.join("real")).unwrap();
        std::fs::write(www.join("real/file.txt"), "inside").unwrap();
        std::fs::write(base.path().join("secret.txt"), "outside").unwrap();
        let symlink = |target: &Path, link: &str| {
            std::os::unix::fs::symlink(target, www.join(link)).unwrap();
        };
        symlink(Path::new("real/file.txt"), "inside.txt");
        symlink(&www.join("real"), "dir");
        symlink(&base.path().join("secret.txt"), "escape.txt");
        symlink(base.path(), "up");
        symlink(Path::new("../secret.txt"), "relative-escape.txt");

        let ignore = Root::new(www.clone(), Symlinks::Ignore);
        assert!(open(&ignore, "real/file.txt").await.is_some());
        for path in [
            "inside.txt",
            "dir/file.txt",
            "escape.txt",
            "up/secret.txt",
            "relative-escape.txt",
        ] {
            assert!(open(&ignore, path).await.is_none(), "ignore: {path}");
        }

        let follow = Root::new(www.clone(), Symlinks::Follow);
        let inside = open(&follow, "inside.txt").await.unwrap();
        assert_eq!(inside.metadata.size, 6);
        assert_eq!(inside.metadata.content_type, "text/plain");
        assert!(open(&follow, "dir/file.txt").await.is_some());
        for path in ["escape.txt", "up/secret.txt", "relative-escape.txt"] {
            assert!(open(&follow, path).await.is_none(), "follow: {path}");
        }
    }

    #[tokio::test]
    async fn tags_are_stable_until_the_file_changes() {
        let dir = tempdir();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "one").unwrap();
        let root = Root::new(dir.path().to_owned(), Symlinks::Ignore);
        let first = open(&root, "a.txt").await.unwrap().metadata;
        let again = open(&root, "a.txt").await.unwrap().metadata;
        assert_eq!(first.tag, again.tag);
        assert_eq!(first, again);

        // Same size, new content, a later modification time.
        let later = first.modified.unwrap() + std::time::Duration::from_millis(5);
        std::fs::write(&path, "two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let changed = open(&root, "a.txt").await.unwrap().metadata;
        assert_eq!(changed.size, first.size);
        assert_ne!(changed.tag, first.tag);

        // Replaced by another file with the same size and time: the inode differs.
        let other = dir.path().join("b.txt");
        std::fs::write(&other, "two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::fs::rename(&other, &path).unwrap();
        let replaced = open(&root, "a.txt").await.unwrap().metadata;
        assert_ne!(replaced.tag, changed.tag);
    }

    #[tokio::test]
    async fn bodies_stream_in_bounded_chunks() {
        let dir = tempdir();
        let content: Vec<u8> = (0..(CHUNK_SIZE * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(dir.path().join("big.bin"), &content).unwrap();
        let root = Root::new(dir.path().to_owned(), Symlinks::Ignore);
        let opened = open(&root, "big.bin").await.unwrap();
        let chunks: Vec<_> = body(opened.file, opened.metadata.size)
            .map(|chunk| chunk.unwrap())
            .collect()
            .await;
        assert!(chunks.len() >= 3);
        assert!(chunks.iter().all(|chunk| chunk.len() <= CHUNK_SIZE));
        assert_eq!(chunks.concat(), content);
    }

    #[tokio::test]
    async fn a_truncated_file_ends_the_body_with_an_error() {
        let dir = tempdir();
        let path = dir.path().join("shrinks.txt");
        std::fs::write(&path, "0123456789").unwrap();
        let root = Root::new(dir.path().to_owned(), Symlinks::Ignore);
        let opened = open(&root, "shrinks.txt").await.unwrap();
        std::fs::write(&path, "01234").unwrap();
        let items: Vec<_> = body(opened.file, opened.metadata.size).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().as_ref(), b"01234");
        assert_eq!(
            items[1].as_ref().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
