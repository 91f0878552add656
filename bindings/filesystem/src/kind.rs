//! The `filesystem` stream kind: one operation on one file below a `filesystem` server's
//! `location`, as Zilla's `FileSystemBeginEx` describes it.
//!
//! A caller sends a [`FileRequest`] (a relative path, the [`Capabilities`] it wants, the tag
//! it already has and how long it is willing to wait for a change) and gets a
//! [`FileResponse`]: the file's metadata and, when [`Capabilities::READ_FILE`] was asked, its
//! content as a stream of chunks; or that it has not changed; or, for writes, the written
//! file's metadata; or why the operation was refused ([`FileSystemError`]).

use std::fmt;
use std::io;
use std::ops::{BitOr, BitOrAssign};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use zilla_engine::stream::{BoxFuture, StreamError, StreamKind};

/// What a request may do, as Zilla's `FileSystemCapabilities` bitmask (bit `n` is the `n`th
/// capability in Zilla's declaration order, so masks read the same on both sides).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u32);

impl Capabilities {
    /// Create a directory (not served by this build).
    pub const CREATE_DIRECTORY: Self = Self(1 << 0);
    /// Create a file that does not exist yet, with [`FileRequest::content`].
    pub const CREATE_FILE: Self = Self(1 << 1);
    /// Delete a directory (not served by this build).
    pub const DELETE_DIRECTORY: Self = Self(1 << 2);
    /// Delete a file.
    pub const DELETE_FILE: Self = Self(1 << 3);
    /// List a directory (not served by this build).
    pub const READ_DIRECTORY: Self = Self(1 << 4);
    /// Read the file's content.
    pub const READ_FILE: Self = Self(1 << 5);
    /// Wait up to [`FileRequest::timeout`] for the file to differ from [`FileRequest::tag`].
    pub const READ_FILE_CHANGES: Self = Self(1 << 6);
    /// Read the file's metadata (type, size, tag, modification time).
    pub const READ_METADATA: Self = Self(1 << 7);
    /// Replace an existing file's content with [`FileRequest::content`].
    pub const WRITE_FILE: Self = Self(1 << 8);

    const NAMES: [(Self, &'static str); 9] = [
        (Self::CREATE_DIRECTORY, "CREATE_DIRECTORY"),
        (Self::CREATE_FILE, "CREATE_FILE"),
        (Self::DELETE_DIRECTORY, "DELETE_DIRECTORY"),
        (Self::DELETE_FILE, "DELETE_FILE"),
        (Self::READ_DIRECTORY, "READ_DIRECTORY"),
        (Self::READ_FILE, "READ_FILE"),
        (Self::READ_FILE_CHANGES, "READ_FILE_CHANGES"),
        (Self::READ_METADATA, "READ_METADATA"),
        (Self::WRITE_FILE, "WRITE_FILE"),
    ];

    /// No capability.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The capabilities of a Zilla bitmask; unknown bits are kept.
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The Zilla bitmask.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every capability of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share a capability.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// The capabilities that change the filesystem.
    pub const fn writes() -> Self {
        Self(
            Self::CREATE_DIRECTORY.0
                | Self::CREATE_FILE.0
                | Self::DELETE_DIRECTORY.0
                | Self::DELETE_FILE.0
                | Self::WRITE_FILE.0,
        )
    }
}

impl BitOr for Capabilities {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl BitOrAssign for Capabilities {
    fn bitor_assign(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        for (capability, name) in Self::NAMES {
            if self.contains(capability) {
                set.entry(&format_args!("{name}"));
            }
        }
        let unknown = self.0 & !Self::NAMES.iter().fold(0, |all, (c, _)| all | c.0);
        if unknown != 0 {
            set.entry(&format_args!("{unknown:#x}"));
        }
        set.finish()
    }
}

/// One operation on one file.
#[non_exhaustive]
pub struct FileRequest {
    /// The file, relative to the server's `location`, `/`-separated. Absolute paths and `..`
    /// segments are refused (answered as [`FileSystemError::FileNotFound`]).
    pub path: String,
    /// What to do.
    pub capabilities: Capabilities,
    /// The tag the caller has. For reads: when it is still the file's tag, the answer is
    /// [`FileResponse::NotModified`] (after waiting for a change, see [`Self::timeout`]). For
    /// [`Capabilities::WRITE_FILE`] (where it is required) and [`Capabilities::DELETE_FILE`]:
    /// the file must still have this tag; `*` accepts any.
    pub tag: Option<String>,
    /// With [`Capabilities::READ_FILE_CHANGES`] and a current [`Self::tag`]: how long to wait
    /// for the file to change before answering not modified.
    pub timeout: Option<Duration>,
    /// The new content, for [`Capabilities::CREATE_FILE`] and [`Capabilities::WRITE_FILE`].
    pub content: Option<FileBody>,
}

impl fmt::Debug for FileRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRequest")
            .field("path", &self.path)
            .field("capabilities", &self.capabilities)
            .field("tag", &self.tag)
            .field("timeout", &self.timeout)
            .field("content", &self.content.as_ref().map(|_| ".."))
            .finish()
    }
}

impl FileRequest {
    /// A request for `path` with `capabilities`, no tag, no wait and no content.
    pub fn new(path: impl Into<String>, capabilities: Capabilities) -> Self {
        Self {
            path: path.into(),
            capabilities,
            tag: None,
            timeout: None,
            content: None,
        }
    }

    /// The tag the caller has.
    #[must_use]
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Waits up to `timeout` for a change of a file whose tag the caller has (adds
    /// [`Capabilities::READ_FILE_CHANGES`]).
    #[must_use]
    pub fn with_wait(mut self, timeout: Duration) -> Self {
        self.capabilities |= Capabilities::READ_FILE_CHANGES;
        self.timeout = Some(timeout);
        self
    }

    /// The content to write.
    #[must_use]
    pub fn with_content(mut self, content: FileBody) -> Self {
        self.content = Some(content);
        self
    }
}

/// What is known about a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    /// The media type guessed from the file name's extension, `application/octet-stream` when
    /// unknown.
    pub content_type: String,
    /// The size in bytes.
    pub size: u64,
    /// An opaque tag that changes whenever the file is replaced or modified (see the crate
    /// documentation for how it is derived). Usable as an HTTP strong entity tag value.
    pub tag: String,
    /// The last modification time, when the platform reports one.
    pub modified: Option<SystemTime>,
}

/// A file's content, in chunks of bounded size; ends with an error if the file turns out
/// shorter than its [`FileMetadata::size`].
pub type FileBody = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The answer to a [`FileRequest`].
#[non_exhaustive]
pub enum FileResponse {
    /// The file; `body` is present when [`Capabilities::READ_FILE`] was asked.
    Found {
        /// Its metadata.
        metadata: FileMetadata,
        /// Its content, read as the stream is polled.
        body: Option<FileBody>,
    },
    /// The file still has the tag the caller sent (after waiting, when asked to).
    NotModified {
        /// Its metadata.
        metadata: FileMetadata,
    },
    /// The file was created or its content replaced.
    Written {
        /// Its metadata once written.
        metadata: FileMetadata,
    },
    /// The file was deleted.
    Deleted,
    /// The operation was refused; nothing changed.
    Failed(FileSystemError),
}

/// Why an operation was refused, as Zilla's `FileSystemError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileSystemError {
    /// No such regular file below `location` (including paths that would leave it, and
    /// symbolic links the server does not follow).
    #[error("file not found")]
    FileNotFound,
    /// The file to create exists already.
    #[error("file exists")]
    FileExists,
    /// The file no longer has the tag the caller sent.
    #[error("file modified")]
    FileModified,
    /// Replacing a file needs the tag the caller has.
    #[error("file tag missing")]
    FileTagMissing,
    /// The directory to create exists already.
    #[error("directory exists")]
    DirectoryExists,
    /// The directory (of a file to create) does not exist.
    #[error("directory not found")]
    DirectoryNotFound,
    /// The directory to delete is not empty.
    #[error("directory not empty")]
    DirectoryNotEmpty,
}

impl fmt::Debug for FileResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Found { metadata, body } => f
                .debug_struct("Found")
                .field("metadata", metadata)
                .field("body", &body.as_ref().map(|_| ".."))
                .finish(),
            Self::NotModified { metadata } => f
                .debug_struct("NotModified")
                .field("metadata", metadata)
                .finish(),
            Self::Written { metadata } => f
                .debug_struct("Written")
                .field("metadata", metadata)
                .finish(),
            Self::Deleted => f.write_str("Deleted"),
            Self::Failed(error) => f.debug_tuple("Failed").field(error).finish(),
        }
    }
}

/// Handler of the `filesystem` stream kind.
pub trait FileSystemHandler: Send + Sync + 'static {
    /// Answers `request`. Errors are failures (an I/O error, unsupported capabilities), not
    /// outcomes such as a missing file, which are [`FileResponse::Failed`].
    fn handle(&self, request: FileRequest) -> BoxFuture<'_, Result<FileResponse, StreamError>>;
}

/// The `filesystem` stream kind.
#[derive(Debug)]
pub struct FileSystem;

impl StreamKind for FileSystem {
    const NAME: &'static str = "filesystem";
    type Handler = dyn FileSystemHandler;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_use_zillas_bit_positions() {
        // Zilla's spec scripts send READ_FILE | READ_METADATA for a GET.
        let get = Capabilities::READ_FILE | Capabilities::READ_METADATA;
        assert_eq!(get.bits(), 0b1010_0000);
        assert!(get.contains(Capabilities::READ_FILE));
        assert!(!get.contains(Capabilities::READ_FILE_CHANGES));
        assert!(!get.intersects(Capabilities::writes()));
        assert_eq!(
            format!("{get:?}"),
            r#"{READ_FILE, READ_METADATA}"#.to_owned()
        );
        assert_eq!(
            format!("{:?}", Capabilities::from_bits(1 << 12)),
            "{0x1000}".to_owned()
        );
    }

    #[test]
    fn wait_adds_the_changes_capability() {
        let request = FileRequest::new("a.txt", Capabilities::READ_FILE)
            .with_tag("t")
            .with_wait(Duration::from_secs(2));
        assert!(
            request
                .capabilities
                .contains(Capabilities::READ_FILE | Capabilities::READ_FILE_CHANGES)
        );
        assert_eq!(request.tag.as_deref(), Some("t"));
        assert_eq!(request.timeout, Some(Duration::from_secs(2)));
    }
}
