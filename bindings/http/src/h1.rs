//! HTTP/1.1 message framing (RFC 9112), for both sides of the binding: the origin leg's
//! request head, response head and chunked coding, and the server's simple request heads and
//! response heads.
//!
//! `httparse` parses heads and trailer fields; what is here is what no crate offers apart from
//! a whole client or server: how a body is delimited (§6.3), whether a connection can carry
//! another exchange (§9.3), and the chunked coding (§7.1). hyper has all of it, but reaches
//! its connections through a task and channels of its own, which a proxy whose request already
//! has a task pays for on every exchange (see [`client`](crate::client)). The functions here
//! do no I/O: they read from and write to buffers, so they are tested, property-tested and
//! fuzzed on bytes alone.
//!
//! A proxy that only passes an origin's response on need not parse its fields into a header
//! map to write them out again: [`ForwardedFields`] keeps the lines as they came, without the
//! framing and connection ones, when the head allows it.
//!
//! Framing is strict where laxness lets two parties disagree on where a message ends
//! (request smuggling, response splitting): `content-length` values must all be the same
//! decimal number; `transfer-encoding` wins over `content-length`, which is then removed and
//! the connection not reused; a chunk-size line must end with CRLF and hold no more than 16
//! hex digits; a chunk's data must be followed by CRLF. On the server side the parser here
//! takes only requests that carry no body at all (see [`parse_request_head`]); every request
//! with a framing field is left to hyper's server.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Header fields a response head may have, as hyper's client allows.
pub const MAX_HEADERS: usize = 100;

/// The longest response head read, in bytes: what hyper's client reads at most before it
/// gives up on a head (its default buffer bound).
pub const MAX_HEAD_SIZE: usize = 8192 + 4096 * 100;

/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The head did not end within [`MAX_HEAD_SIZE`] bytes.
    #[error("the response head is longer than {MAX_HEAD_SIZE} bytes")]
    HeadTooLarge,
    /// The head is not HTTP/1.x.
    #[error("malformed response head: {0}")]
    Head(httparse::Error),
    /// A field name httparse let through that `http` refuses.
    #[error("malformed response head: invalid header name")]
    HeaderName,
    /// A field value `http` refuses.
    #[error("malformed response head: invalid header value")]
    HeaderValue,
    /// `content-length` is not one decimal number.
    #[error("the response's content-length is not valid")]
    ContentLength,
    /// The chunked coding is broken.
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: a response to `HEAD`, a `1xx`, `204` or `304`.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked coding.
    Chunked,
    /// Everything until the origin closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    /// The reason phrase when it is not the status code's canonical one.
    pub reason: Option<Bytes>,
    pub headers: HeaderMap,
    pub framing: BodyFraming,
    /// Whether the connection may carry another exchange once this one has ended.
    pub keep_alive: bool,
    /// The fields to pass on as they came, when forwarding was asked for and the head allows
    /// it; `headers` is then empty (see [`ForwardedFields`]).
    pub forwarded: Option<ForwardedFields>,
}

/// A request extension: whoever answers may give the response's fields as [`ForwardedFields`]
/// (the origin's HTTP/1.1 leg does, when the head allows). The server puts it in a request its
/// own HTTP/1.1 loop answers, which writes such fields, when the exit takes them
/// ([`crate::HttpHandler::takes_forwarded_fields`]: only the http client, so no handler passes
/// it on) and nothing on the way back reads or adds to the response's header map (a CORS
/// policy, a `server` field to add, a telemetry attribute of a response header); the http
/// client removes it when it reads the fields itself (a response model, such an attribute).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TakesForwardedFields;

/// How many runs of consecutive lines a [`ForwardedFields`] holds at most: a head whose
/// forwarded lines are split by more framing fields than that is read into a header map.
const FORWARDED_RUNS: usize = 4;

/// The field lines of an origin's response head that a proxy passes on, kept as the bytes the
/// origin sent rather than parsed into a header map and written out again. They are every line
/// of the head but the framing and connection ones (`content-length`, `transfer-encoding`,
/// `connection`, `keep-alive`), which the response's sender writes for its own connection.
///
/// Only a head whose lines all end with CRLF and whose other fields are end-to-end is read this
/// way: one with `trailer`, `upgrade`, `te`, a `proxy-*` field or a `connection` naming other
/// fields is read into a header map, which the proxy then edits. `httparse` has checked every
/// name (a token) and value (no control character but tab) the same way the header map's
/// constructors would, and a property test holds the two readings to the same fields.
#[derive(Debug, Clone)]
pub struct ForwardedFields {
    head: Bytes,
    /// Byte ranges of `head` to write, in order, each a run of whole lines.
    runs: [(u32, u32); FORWARDED_RUNS],
    count: usize,
    has_date: bool,
}

impl ForwardedFields {
    /// Whether a `date` field is among them.
    pub fn has_date(&self) -> bool {
        self.has_date
    }

    /// Their length in bytes, as written.
    pub fn len(&self) -> usize {
        self.runs().map(<[u8]>::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the lines, each with its CRLF.
    pub fn write(&self, out: &mut BytesMut) {
        for run in self.runs() {
            out.put_slice(run);
        }
    }

    fn runs(&self) -> impl Iterator<Item = &[u8]> {
        self.runs[..self.count]
            .iter()
            .map(|&(start, end)| &self.head[start as usize..end as usize])
    }

    /// Adds the line at `start..end`, joined to the last run when it follows it; `None` when
    /// the runs are full.
    fn push(&mut self, start: usize, end: usize) -> Option<()> {
        let (start, end) = (u32::try_from(start).ok()?, u32::try_from(end).ok()?);
        match self.count.checked_sub(1).map(|last| &mut self.runs[last]) {
            Some(last) if last.1 == start => last.1 = end,
            _ => {
                *self.runs.get_mut(self.count)? = (start, end);
                self.count += 1;
            }
        }
        Some(())
    }
}

/// What a field of a response head is to this module, found from its name's bytes without
/// building a [`HeaderName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldRole {
    /// End to end, passed on as it is.
    Plain,
    /// `date`: passed on; the sender adds none.
    Date,
    /// `content-length`.
    Length,
    /// `transfer-encoding`.
    Encoding,
    /// `connection`.
    Connection,
    /// `keep-alive`.
    KeepAlive,
    /// A field a proxy edits or removes (`trailer`, `upgrade`, `te`, `proxy-*`): its head is
    /// read into a header map.
    Edited,
}

impl FieldRole {
    fn of(name: &[u8]) -> Self {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is(b"te") => Self::Edited,
            4 if is(b"date") => Self::Date,
            7 if is(b"trailer") || is(b"upgrade") => Self::Edited,
            10 if is(b"connection") => Self::Connection,
            10 if is(b"keep-alive") => Self::KeepAlive,
            14 if is(b"content-length") => Self::Length,
            16 if is(b"proxy-connection") => Self::Edited,
            17 if is(b"transfer-encoding") => Self::Encoding,
            18 if is(b"proxy-authenticate") => Self::Edited,
            19 if is(b"proxy-authorization") => Self::Edited,
            _ => Self::Plain,
        }
    }
}

/// What the framing and connection fields of a response head say, gathered field by field.
#[derive(Debug, Default)]
struct FramingFields {
    transfer_encoding: bool,
    chunked_last: bool,
    length: Option<Result<u64, ()>>,
    close: bool,
    keep_alive_token: bool,
}

impl FramingFields {
    fn transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_encoding = true;
        if let Some(last) = value_tokens(value).filter(|token| !token.is_empty()).last() {
            self.chunked_last = last.eq_ignore_ascii_case(b"chunked");
        }
    }

    /// Reads a `connection` value; whether it names fields other than `close` and
    /// `keep-alive`.
    fn connection(&mut self, value: &[u8]) -> bool {
        // What nearly every origin sends, read without splitting it.
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive_token = true;
            return false;
        }
        let mut names_others = false;
        for token in value_tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive_token = true;
            } else {
                names_others |= !token.is_empty();
            }
        }
        names_others
    }

    fn content_length(&mut self, value: &[u8]) {
        for token in value_tokens(value) {
            self.length = match (self.length, parse_decimal(token)) {
                (_, None) | (Some(Err(())), _) => Some(Err(())),
                (Some(Ok(known)), Some(value)) if known != value => Some(Err(())),
                (_, Some(value)) => Some(Ok(value)),
            };
        }
    }
}

/// The head's fields as [`ForwardedFields`], reading its framing fields into `framing`, or
/// `None` when the head must be read into a header map (`framing` is then left part-read).
fn forwarded_fields(
    head: &Bytes,
    fields: &[FieldIndices],
    framing: &mut FramingFields,
) -> Option<ForwardedFields> {
    if !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let mut forwarded = ForwardedFields {
        head: head.clone(),
        runs: [(0, 0); FORWARDED_RUNS],
        count: 0,
        has_date: false,
    };
    for (index, field) in fields.iter().enumerate() {
        let name = &head[range(field.name)];
        // The longest name a header map takes; a longer one is refused there.
        if name.len() > usize::from(u16::MAX) {
            return None;
        }
        let start = field.name.0;
        // A line ends where the next one starts; the last one before the blank line.
        let end = fields
            .get(index + 1)
            .map_or(head.len() - 2, |next| next.name.0);
        if end < start + 2 || head.get(end - 2..end) != Some(b"\r\n".as_slice()) {
            return None;
        }
        let value = &head[range(field.value)];
        match FieldRole::of(name) {
            FieldRole::Plain => forwarded.push(start, end)?,
            FieldRole::Date => {
                forwarded.has_date = true;
                forwarded.push(start, end)?;
            }
            FieldRole::Length => framing.content_length(value),
            FieldRole::Encoding => framing.transfer_encoding(value),
            FieldRole::Connection => {
                if framing.connection(value) {
                    return None;
                }
            }
            FieldRole::KeepAlive => {}
            FieldRole::Edited => return None,
        }
    }
    Some(forwarded)
}

/// Where a field's name and value lie in the head.
#[derive(Debug, Clone, Copy)]
struct FieldIndices {
    name: (usize, usize),
    value: (usize, usize),
}

fn range((start, end): (usize, usize)) -> Range<usize> {
    start..end
}

/// Parses the response head at the start of `buffer`, answering `request_method`. Complete,
/// the head is taken off `buffer` and its values share its bytes; incomplete, `buffer` is
/// left as it was and `None` comes back. An interim (`1xx`) response is returned as any other:
/// the caller skips it and parses again.
pub fn parse_response_head(
    buffer: &mut BytesMut,
    request_method: &Method,
) -> Result<Option<ResponseHead>, FramingError> {
    parse_response_head_into(
        buffer,
        request_method,
        false,
        &mut HeaderMap::new(),
        &mut HeadScratch::default(),
    )
}

/// [`parse_response_head`], with the fields put in `spare` (cleared first) once the head is
/// complete: a map a connection has done with (its request's, say), so that its allocation
/// serves again; `scratch` is the connection's, kept from one head to the next. With
/// `forward`, a final response with a body whose head allows it comes back with its fields as
/// [`ForwardedFields`] and `spare`'s map empty; the fields are checked the same either way.
pub fn parse_response_head_into(
    buffer: &mut BytesMut,
    request_method: &Method,
    forward: bool,
    spare: &mut HeaderMap,
    scratch: &mut HeadScratch,
) -> Result<Option<ResponseHead>, FramingError> {
    // Where the fields lie, kept past the parse's borrow of `buffer`. A vector rather than a
    // stack array, which would be zeroed whole for every response.
    let HeadScratch { fields, names, .. } = scratch;
    fields.clear();
    let (length, code, version, reason) = {
        let mut uninit = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let base = buffer.as_ptr() as usize;
        let status = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut response, buffer, &mut uninit)
            .map_err(FramingError::Head)?;
        let length = match status {
            httparse::Status::Complete(length) => length,
            httparse::Status::Partial if buffer.len() >= MAX_HEAD_SIZE => {
                return Err(FramingError::HeadTooLarge);
            }
            httparse::Status::Partial => return Ok(None),
        };
        if length > MAX_HEAD_SIZE {
            return Err(FramingError::HeadTooLarge);
        }
        let offsets = |bytes: &[u8]| offsets_in(base, buffer.len(), bytes);
        fields.extend(response.headers.iter().map(|field| FieldIndices {
            name: offsets(field.name.as_bytes()),
            value: offsets(field.value),
        }));
        let code = response.code.unwrap_or_default();
        let reason = response.reason.map(|reason| offsets(reason.as_bytes()));
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        (length, code, version, reason)
    };
    let status =
        StatusCode::from_u16(code).map_err(|_| FramingError::Head(httparse::Error::Status))?;
    let head = buffer.split_to(length).freeze();
    let reason = reason
        .map(range)
        // No reason phrase: the canonical one is written.
        .filter(|reason| !reason.is_empty())
        .filter(|reason| {
            status.canonical_reason().map(str::as_bytes) != Some(&head[reason.clone()])
        })
        .map(|reason| head.slice(reason));
    // The fields that frame the message or describe the connection are read as the head is.
    // `transfer-encoding`, and `connection` and `keep-alive` when they name nothing else,
    // describe only the origin connection, which this module handles: they stay out of the
    // message's header map, the part a proxy passes on (RFC 9110 §7.6.1).
    let mut headers = std::mem::take(spare);
    headers.clear();
    let bodiless = *request_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut framing_fields = FramingFields::default();
    let forwarded = if forward && !bodiless {
        let forwarded = forwarded_fields(&head, fields, &mut framing_fields);
        if forwarded.is_none() {
            // Read again below, into the map.
            framing_fields = FramingFields::default();
        }
        forwarded
    } else {
        None
    };
    if forwarded.is_none() {
        headers.reserve(fields.len());
        for (index, field) in fields.iter().enumerate() {
            let name = names.name(index, &head[range(field.name)])?;
            let bytes = &head[range(field.value)];
            if name == header::TRANSFER_ENCODING {
                framing_fields.transfer_encoding(bytes);
                continue;
            }
            if name == header::CONNECTION {
                // Naming other fields, it stays for the proxy to remove them with it.
                if !framing_fields.connection(bytes) {
                    continue;
                }
            } else if name == KEEP_ALIVE {
                continue;
            } else if name == header::CONTENT_LENGTH {
                framing_fields.content_length(bytes);
            }
            let value = field_value(head.slice(range(field.value)))
                .map_err(|_| FramingError::HeaderValue)?;
            headers.append(name, value);
        }
    }
    let FramingFields {
        transfer_encoding,
        chunked_last,
        length,
        close,
        keep_alive_token,
    } = framing_fields;
    // HTTP/1.1 persists unless `close` is said; HTTP/1.0 only when `keep-alive` is (§9.3).
    let mut keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
    let framing = if bodiless {
        BodyFraming::Empty
    } else if transfer_encoding {
        // Both framings at once may be an attempt to split the response: the chunked coding
        // is what delimits it, the length goes, and so does the connection (§6.3 item 3).
        if length.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            keep_alive = false;
        }
        if version == Version::HTTP_10 {
            keep_alive = false;
        }
        if chunked_last {
            BodyFraming::Chunked
        } else {
            keep_alive = false;
            BodyFraming::UntilClose
        }
    } else if let Some(length) = length {
        BodyFraming::Length(length.map_err(|()| FramingError::ContentLength)?)
    } else {
        keep_alive = false;
        BodyFraming::UntilClose
    };
    Ok(Some(ResponseHead {
        status,
        version,
        reason,
        headers,
        framing,
        keep_alive,
        forwarded,
    }))
}

/// `keep-alive`, not among `http`'s standard names.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Whether a `te` value says the client takes trailer fields (`trailers`, RFC 9110 §10.1.4).
fn te_takes_trailers(value: &[u8]) -> bool {
    value_tokens(value).any(|token| token.eq_ignore_ascii_case(b"trailers"))
}

/// The comma-separated tokens of one field value, without the spaces around them.
fn value_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&byte| byte == b',').map(<[u8]>::trim_ascii)
}

/// The comma-separated tokens of every `name` field.
fn tokens<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value_tokens(value.as_bytes()))
}

/// The one length every `content-length` value states (§8.6: a list of equal values counts
/// as that value; anything else is an error).
fn content_length(headers: &HeaderMap) -> Result<u64, FramingError> {
    let mut length = None;
    for token in tokens(headers, &header::CONTENT_LENGTH) {
        let value = parse_decimal(token).ok_or(FramingError::ContentLength)?;
        if length.is_some_and(|length| length != value) {
            return Err(FramingError::ContentLength);
        }
        length = Some(value);
    }
    length.ok_or(FramingError::ContentLength)
}

/// A non-empty run of decimal digits that fits a `u64`; no sign, no spaces.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// What the chunked decoder found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section (only when it has fields).
    Trailers(HeaderMap),
    /// The body has ended; what follows in the buffer is not this response's.
    End,
    /// More bytes are needed.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Decodes the chunked coding (RFC 9112 §7.1) from a buffer the caller fills.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedDecoder {
    /// Whether the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The next piece of the body from the start of `buffer`, taking the bytes it used.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = buffer.iter().position(|&byte| byte == b'\n') else {
                        if buffer.len() > MAX_CHUNK_LINE {
                            return Err(FramingError::Chunk("chunk-size line too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err(FramingError::Chunk("chunk-size line too long"));
                    }
                    let size = chunk_size(&buffer[..end])?;
                    let _ = buffer.split_to(end + 1);
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    if buffer.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buffer.len());
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(buffer.split_to(take).freeze()));
                }
                ChunkState::DataEnd => {
                    if buffer.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buffer[..2] != b"\r\n" {
                        return Err(FramingError::Chunk("chunk data not followed by CRLF"));
                    }
                    let _ = buffer.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => return self.trailers(buffer),
                ChunkState::Done => return Ok(Decoded::End),
            }
        }
    }

    fn trailers(&mut self, buffer: &mut BytesMut) -> Result<Decoded, FramingError> {
        if buffer.len() < 2 {
            return Ok(Decoded::NeedMore);
        }
        if buffer.starts_with(b"\r\n") {
            let _ = buffer.split_to(2);
            self.state = ChunkState::Done;
            return Ok(Decoded::End);
        }
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(buffer, &mut fields) {
            Ok(httparse::Status::Complete((length, fields))) => {
                let mut trailers = HeaderMap::with_capacity(fields.len());
                for field in fields {
                    let name = HeaderName::from_bytes(field.name.as_bytes())
                        .map_err(|_| FramingError::HeaderName)?;
                    let value = HeaderValue::from_bytes(field.value)
                        .map_err(|_| FramingError::HeaderValue)?;
                    trailers.append(name, value);
                }
                let _ = buffer.split_to(length);
                self.state = ChunkState::Done;
                Ok(if trailers.is_empty() {
                    Decoded::End
                } else {
                    Decoded::Trailers(trailers)
                })
            }
            Ok(httparse::Status::Partial) if buffer.len() >= MAX_HEAD_SIZE => {
                Err(FramingError::Chunk("trailer section too long"))
            }
            Ok(httparse::Status::Partial) => Ok(Decoded::NeedMore),
            Err(_) => Err(FramingError::Chunk("malformed trailer section")),
        }
    }
}

/// The size of a chunk-size line (without its `\n`): hex digits, then optional extensions
/// (`;name[=value]`, which carry nothing a proxy needs), then `\r`.
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let Some(line) = line.strip_suffix(b"\r") else {
        return Err(FramingError::Chunk("chunk-size line not ended by CRLF"));
    };
    let digits = line
        .iter()
        .take_while(|byte| byte.is_ascii_hexdigit())
        .count();
    if digits == 0 {
        return Err(FramingError::Chunk("chunk size is not hexadecimal"));
    }
    let (size, rest) = line.split_at(digits);
    // Leading zeros aside, 16 hex digits fill a u64.
    let significant = size.iter().skip_while(|&&byte| byte == b'0').count();
    if significant > 16 {
        return Err(FramingError::Chunk("chunk size too large"));
    }
    let size = size.iter().fold(0u64, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => digit - b'A' + 10,
        };
        (value << 4) | u64::from(nibble)
    });
    // Extensions: optional whitespace, then `;` and field characters; nothing else.
    let rest = rest.trim_ascii_start();
    if !rest.is_empty()
        && (rest[0] != b';'
            || rest
                .iter()
                .any(|&byte| byte != b'\t' && (byte < 0x20 || byte == 0x7f)))
    {
        return Err(FramingError::Chunk("invalid chunk extension"));
    }
    Ok(size)
}

/// How a request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, no framing field.
    None,
    /// `content-length`.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

impl RequestFraming {
    /// The framing for a request whose body is known to be `exact` bytes long, if known, and
    /// which carried `content-length: declared`, if it did.
    pub fn choose(method: &Method, exact: Option<u64>, declared: Option<u64>) -> Self {
        match (exact, declared) {
            (Some(0), None) if !method_has_body(method) => RequestFraming::None,
            (Some(length), _) => RequestFraming::Length(length),
            (None, Some(length)) => RequestFraming::Length(length),
            (None, None) => RequestFraming::Chunked,
        }
    }
}

/// Methods whose requests are expected to carry content, and so say when it is empty.
fn method_has_body(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT
    )
}

/// The declared `content-length` of a request, if it has exactly one valid one.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(header::CONTENT_LENGTH) {
        content_length(headers).ok()
    } else {
        None
    }
}

/// Writes a request head: the request line with `target`, `host: authority`, the fields
/// (but `host` and the framing ones, which this writes itself), the framing, and the blank
/// line.
pub fn encode_request_head(
    method: &Method,
    target: &str,
    authority: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
    out: &mut BytesMut,
) {
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + target.len() + authority.len() + fields + 64);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\nhost: ");
    out.put_slice(authority.as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(length) => {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa::Buffer::new().format(length).as_bytes());
            out.put_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.put_slice(b"\r\n");
}

/// Writes a chunk's size line; its data and `\r\n` follow.
pub fn encode_chunk_start(length: usize, out: &mut BytesMut) {
    use std::fmt::Write as _;
    // Formatted into the buffer itself: no allocation per chunk. Writing to a `BytesMut`
    // cannot fail.
    let _ = write!(out, "{length:x}\r\n");
}

/// Writes the last chunk and the trailer section, without the fields a trailer may not carry
/// (RFC 9110 §6.5.1: framing, routing, authentication and content fields).
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, out: &mut BytesMut) {
    out.put_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        if !may_trail(name) {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

fn may_trail(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
    )
}

/// The field names of the last head read on a connection, in order, each with its parsed
/// [`HeaderName`]. A peer sends the same names in the same order head after head (a client its
/// `host`, `user-agent`, `accept`; an origin its `server`, `date`, `content-type`), and
/// comparing a name's bytes costs a fraction of parsing it again (lower-casing it, looking it up
/// among the standard names). At most [`NAMES_KEPT`] names are kept.
#[derive(Debug, Default)]
struct FieldNames {
    names: Vec<(Box<[u8]>, HeaderName)>,
}

/// How many field names a [`FieldNames`] keeps.
const NAMES_KEPT: usize = 32;

/// The longest field name a [`FieldNames`] keeps: the standard names and most others are
/// shorter, and a peer sending long names at changing positions cannot make a connection hold
/// more than `NAMES_KEPT` of them.
const NAME_KEPT_MAX: usize = 64;

/// The most fields a header map kept for the next head may have room for: one that grew for an
/// unusual head is let go rather than held by an idle connection.
const SPARE_FIELDS_MAX: usize = 32;

/// The most entries an extensions map kept for the next request may have held: a request
/// carries a few (the connection's info, its guard sessions), and one that gathered more is
/// let go rather than held by an idle connection.
const SPARE_EXTENSIONS_MAX: usize = 8;

impl FieldNames {
    /// The name of field `index` of a head, whose bytes are `raw`.
    fn name(&mut self, index: usize, raw: &[u8]) -> Result<HeaderName, FramingError> {
        if let Some((kept, name)) = self.names.get(index)
            && **kept == *raw
        {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| FramingError::HeaderName)?;
        if index < NAMES_KEPT && raw.len() <= NAME_KEPT_MAX {
            let entry = (Box::from(raw), name.clone());
            if index < self.names.len() {
                self.names[index] = entry;
            } else if index == self.names.len() {
                self.names.push(entry);
            }
        }
        Ok(name)
    }
}

/// Where `part`, a slice `httparse` returned, lies in the buffer of `length` bytes at address
/// `base`. An empty part may be a static empty slice outside the buffer (`httparse` gives one
/// for a status line without a reason phrase): it lies at 0.
fn offsets_in(base: usize, length: usize, part: &[u8]) -> (usize, usize) {
    (part.as_ptr() as usize)
        .checked_sub(base)
        .and_then(|start| Some((start, start.checked_add(part.len())?)))
        .filter(|(_, end)| *end <= length)
        .unwrap_or((0, 0))
}

/// Where the fields of a head lie, kept from one request to the next so that parsing a head
/// allocates nothing for them.
#[derive(Debug, Default)]
pub struct HeadScratch {
    fields: Vec<FieldIndices>,
    names: FieldNames,
    /// A header map done with, whose allocation the next head's fields go in.
    spare: HeaderMap,
    /// An extensions map done with (emptied), given to the next request: a request's first
    /// extension would otherwise allocate the map and its table anew.
    spare_extensions: http::Extensions,
}

impl HeadScratch {
    /// Keeps `headers` (cleared) for the next head, unless it grew larger than heads usually
    /// need.
    pub fn recycle(&mut self, mut headers: HeaderMap) {
        if headers.capacity() <= SPARE_FIELDS_MAX {
            headers.clear();
            self.spare = headers;
        }
    }

    /// Keeps `extensions`, emptied, for the next request, unless it held more than requests
    /// usually carry.
    pub fn recycle_extensions(&mut self, extensions: http::Extensions) {
        if extensions.len() <= SPARE_EXTENSIONS_MAX {
            self.spare_extensions = emptied(extensions);
        }
    }
}

/// `extensions` with every entry dropped and its allocation kept.
pub fn emptied(mut extensions: http::Extensions) -> http::Extensions {
    extensions.clear();
    extensions
}

/// What [`parse_request_head`] found at the start of a buffer.
#[derive(Debug)]
pub enum RequestHead {
    /// A complete HTTP/1.1 request that carries no body and asks for nothing but an answer,
    /// taken off the buffer; its values share the buffer's bytes.
    Simple {
        request: http::Request<()>,
        /// Whether the client lets the connection carry another exchange afterwards.
        keep_alive: bool,
        /// Whether the client takes trailer fields (`te: trailers`), found while the head
        /// is read rather than looked up again.
        accepts_trailers: bool,
    },
    /// The head has not ended yet (and is shorter than the limit).
    Partial,
    /// Anything else: a request with a body (`content-length` other than a single `0`, or
    /// `transfer-encoding`), `expect`, an upgrade, `CONNECT`, HTTP/1.0, a head longer than
    /// the limit or one this parser refuses. The bytes of the head already taken off the
    /// buffer (none, or all of it) come back, to go first before the rest.
    Other(Bytes),
}

/// Parses the request head at the start of `buffer` if it is a simple one (see
/// [`RequestHead::Simple`]): what a server can answer without reading anything more of the
/// connection. Anything else is left to a full HTTP/1.1 server, which answers malformed
/// heads the protocol's way; nothing here decides such an answer.
pub fn parse_request_head(
    buffer: &mut BytesMut,
    max_head: usize,
    scratch: &mut HeadScratch,
) -> RequestHead {
    let fields = &mut scratch.fields;
    fields.clear();
    let (length, method, path) = {
        let mut uninit = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let base = buffer.as_ptr() as usize;
        let status = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut request,
            buffer,
            &mut uninit,
        );
        let length = match status {
            Ok(httparse::Status::Complete(length)) if length <= max_head => length,
            Ok(httparse::Status::Partial) if buffer.len() < max_head => {
                return RequestHead::Partial;
            }
            _ => return RequestHead::Other(Bytes::new()),
        };
        if request.version != Some(1) {
            return RequestHead::Other(Bytes::new());
        }
        let Some(method) = request
            .method
            .and_then(|method| Method::from_bytes(method.as_bytes()).ok())
            .filter(|method| *method != Method::CONNECT)
        else {
            return RequestHead::Other(Bytes::new());
        };
        let offsets = |bytes: &[u8]| offsets_in(base, buffer.len(), bytes);
        let mut lengths = 0;
        for field in request.headers.iter() {
            let name = field.name.as_bytes();
            let simple = if name.eq_ignore_ascii_case(b"content-length") {
                lengths += 1;
                field.value == b"0" && lengths == 1
            } else {
                !(name.eq_ignore_ascii_case(b"transfer-encoding")
                    || name.eq_ignore_ascii_case(b"expect")
                    || name.eq_ignore_ascii_case(b"upgrade")
                    || name.eq_ignore_ascii_case(b"connection")
                        && value_tokens(field.value)
                            .any(|token| token.eq_ignore_ascii_case(b"upgrade")))
            };
            if !simple {
                return RequestHead::Other(Bytes::new());
            }
            fields.push(FieldIndices {
                name: offsets(name),
                value: offsets(field.value),
            });
        }
        let path = request.path.map(|path| offsets(path.as_bytes()));
        (length, method, path)
    };
    let head = buffer.split_to(length).freeze();
    let Some(uri) =
        path.and_then(|path| http::Uri::from_maybe_shared(head.slice(range(path))).ok())
    else {
        return RequestHead::Other(head);
    };
    let mut headers = std::mem::take(&mut scratch.spare);
    // Room for what routes add on the way (`host` from an override, `traceparent`) without
    // growing the map.
    headers.reserve(fields.len() + 2);
    let (mut keep_alive, mut takes_trailers) = (true, false);
    for (index, field) in fields.iter().enumerate() {
        let (Ok(name), Ok(value)) = (
            scratch.names.name(index, &head[range(field.name)]),
            field_value(head.slice(range(field.value))),
        ) else {
            return RequestHead::Other(head);
        };
        if name == header::CONNECTION
            && value_tokens(value.as_bytes()).any(|token| token.eq_ignore_ascii_case(b"close"))
        {
            keep_alive = false;
        } else if name == header::TE && te_takes_trailers(value.as_bytes()) {
            takes_trailers = true;
        }
        headers.append(name, value);
    }
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    *request.extensions_mut() = std::mem::take(&mut scratch.spare_extensions);
    RequestHead::Simple {
        request,
        keep_alive,
        accepts_trailers: takes_trailers,
    }
}

/// A header value from a parsed head's bytes.
///
/// `HeaderValue::from_maybe_shared` costs about twice what this does on the fields of a
/// typical head (seven values of nginx's response head: 172 against 82 to 103 ns; a 586-byte
/// token: 51 against 37 ns), most of it a fixed cost per value. A value of visible ASCII and
/// spaces only, nearly every value, is recognised here sixteen bytes at a time; any other goes
/// through that constructor, which takes tabs and obs-text (0x80 to 0xFF) and refuses control
/// characters.
#[allow(unsafe_code)]
fn field_value(bytes: Bytes) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    if !is_visible_ascii(&bytes) {
        return HeaderValue::from_maybe_shared(bytes);
    }
    // SAFETY: the one requirement of the unchecked constructor is UTF-8, which bytes from
    // 0x20 to 0x7E are; they are also every one a valid header value byte (no CR, LF or
    // other control character), so the value is what the checked constructor would build.
    Ok(unsafe { HeaderValue::from_maybe_shared_unchecked(bytes) })
}

/// Whether every byte is in 0x20..=0x7E (space and visible ASCII).
fn is_visible_ascii(bytes: &[u8]) -> bool {
    let outside = |byte: u8| byte.wrapping_sub(0x20) > 0x7E - 0x20;
    // No early exit within a block of sixteen, so that it compiles to vector instructions.
    let mut blocks = bytes.chunks_exact(16);
    blocks
        .by_ref()
        .all(|block| !block.iter().fold(false, |any, &byte| any | outside(byte)))
        && !blocks.remainder().iter().any(|&byte| outside(byte))
}

/// What a response body is known to be before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// It has ended already.
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// Unknown until it ends.
    Unknown,
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body is sent (a response to `HEAD`, a `204`, a `304`, or an empty body).
    None,
    /// `content-length`: exactly this many bytes.
    Length(u64),
    /// The chunked coding; the trailer fields the response announced in `trailer`, if any,
    /// go in its trailer section.
    Chunked(Option<Vec<HeaderName>>),
}

/// A response head as written by [`encode_response_head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedHead {
    pub framing: ResponseFraming,
    /// Whether the connection closes after this response.
    pub close: bool,
}

/// Writes the head of an HTTP/1.1 response to a request with `request_method`: the status
/// line (with `reason`, else the canonical one), the `forwarded` lines an origin sent, the
/// fields but the framing ones, the framing chosen for `body` (the response's
/// `content-length` when its body's size is not known), `connection: close` when
/// `keep_alive` is false, and `date` unless the response has one. These are hyper's server
/// rules, which clients of the binding already see.
#[allow(clippy::too_many_arguments)]
pub fn encode_response_head(
    response: &http::response::Parts,
    reason: Option<&[u8]>,
    forwarded: Option<&ForwardedFields>,
    request_method: &Method,
    body: BodySize,
    keep_alive: bool,
    date: &[u8],
    out: &mut BytesMut,
) -> EncodedHead {
    let status = response.status;
    let headers = &response.headers;
    let can_have_length = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let can_have_body = can_have_length && *request_method != Method::HEAD;
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    out.reserve(fields + forwarded.map_or(0, ForwardedFields::len) + 128);
    if status == StatusCode::OK && reason.is_none() {
        out.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(reason.unwrap_or(status.canonical_reason().unwrap_or("").as_bytes()));
        out.put_slice(b"\r\n");
    }
    let mut has_date = false;
    if let Some(forwarded) = forwarded {
        forwarded.write(out);
        has_date = forwarded.has_date();
    }
    let mut declared: Option<&HeaderValue> = None;
    let mut close = !keep_alive;
    let mut said_close = false;
    let mut announced: Option<Vec<HeaderName>> = None;
    for (name, value) in headers {
        match *name {
            header::CONTENT_LENGTH => {
                declared = declared.or(Some(value));
                continue;
            }
            header::TRANSFER_ENCODING => continue,
            header::TRAILER => {
                if !can_have_body {
                    continue;
                }
                let names = value_tokens(value.as_bytes())
                    .filter_map(|token| HeaderName::from_bytes(token).ok());
                announced.get_or_insert_with(Vec::new).extend(names);
            }
            header::CONNECTION
                if value_tokens(value.as_bytes())
                    .any(|token| token.eq_ignore_ascii_case(b"close")) =>
            {
                said_close = true;
                close = true;
            }
            header::DATE => has_date = true,
            _ => {}
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    let declared = declared.and_then(|value| parse_decimal(value.as_bytes()));
    let length = |out: &mut BytesMut, length: u64| {
        out.put_slice(b"content-length: ");
        out.put_slice(itoa::Buffer::new().format(length).as_bytes());
        out.put_slice(b"\r\n");
    };
    let framing = match body {
        BodySize::Empty => {
            if *request_method == Method::HEAD {
                // A `HEAD` answer tells the length a `GET` would have had.
                if let (Some(declared), true) = (declared, can_have_length) {
                    length(out, declared);
                }
            } else if can_have_length {
                length(out, 0);
            }
            ResponseFraming::None
        }
        BodySize::Known(known) => {
            if can_have_length {
                // A `HEAD` answer's body is not the representation: its length is declared.
                let head_length = declared.filter(|_| *request_method == Method::HEAD);
                length(out, head_length.unwrap_or(known));
            }
            if can_have_body {
                ResponseFraming::Length(known)
            } else {
                ResponseFraming::None
            }
        }
        BodySize::Unknown => match declared {
            Some(declared) if can_have_length => {
                length(out, declared);
                if can_have_body {
                    ResponseFraming::Length(declared)
                } else {
                    ResponseFraming::None
                }
            }
            _ if can_have_body => {
                out.put_slice(b"transfer-encoding: chunked\r\n");
                ResponseFraming::Chunked(announced)
            }
            _ => ResponseFraming::None,
        },
    };
    if close && !said_close {
        out.put_slice(b"connection: close\r\n");
    }
    if !has_date {
        out.put_slice(b"date: ");
        out.put_slice(date);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    EncodedHead { framing, close }
}

/// Writes the last chunk with the trailer fields of `trailers` that the response announced
/// in `announced` (hyper's rule: unannounced trailer fields are not sent).
pub fn encode_announced_trailers(
    trailers: Option<&HeaderMap>,
    announced: Option<&[HeaderName]>,
    out: &mut BytesMut,
) {
    match (trailers, announced) {
        (Some(trailers), Some(announced)) => {
            let mut sent = HeaderMap::new();
            for (name, value) in trailers {
                if announced.contains(name) {
                    sent.append(name.clone(), value.clone());
                }
            }
            encode_last_chunk(Some(&sent), out);
        }
        _ => encode_last_chunk(None, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(bytes: &[u8], method: &Method) -> Result<Option<ResponseHead>, FramingError> {
        parse_response_head(&mut BytesMut::from(bytes), method)
    }

    fn framing(bytes: &str) -> (BodyFraming, bool) {
        let head = head(bytes.as_bytes(), &Method::GET)
            .expect("parses")
            .expect("complete");
        (head.framing, head.keep_alive)
    }

    #[test]
    fn a_complete_head_is_taken_off_the_buffer_and_its_values_kept() {
        let mut buffer = BytesMut::from(
            &b"HTTP/1.1 200 Fine\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"[..],
        );
        let head = parse_response_head(&mut buffer, &Method::GET)
            .expect("parses")
            .expect("complete");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.reason.as_deref(), Some(&b"Fine"[..]));
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert!(head.keep_alive);
        let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&buffer[..], b"hello");
        let canonical = head_of("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(canonical.reason, None);
    }

    fn head_of(text: &str) -> ResponseHead {
        head(text.as_bytes(), &Method::GET)
            .expect("parses")
            .expect("complete")
    }

    #[test]
    fn fields_of_the_origin_connection_stay_out_of_the_header_map() {
        let head = head_of(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\n\
             transfer-encoding: chunked\r\nx-kept: 1\r\n\r\n",
        );
        assert_eq!(head.headers.len(), 1, "{:?}", head.headers);
        assert_eq!(head.headers["x-kept"], "1");
        assert_eq!(
            (head.framing, head.keep_alive),
            (BodyFraming::Chunked, true)
        );
        // A `connection` naming another field stays, for the proxy to remove both.
        let head = head_of(
            "HTTP/1.1 200 OK\r\nconnection: close, x-private\r\nx-private: 1\r\ncontent-length: 0\r\n\r\n",
        );
        assert_eq!(head.headers["connection"], "close, x-private");
        assert!(!head.keep_alive);
    }

    #[test]
    fn an_incomplete_head_leaves_the_buffer_alone() {
        let mut buffer = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-len"[..]);
        assert!(
            parse_response_head(&mut buffer, &Method::GET)
                .expect("parses")
                .is_none()
        );
        assert_eq!(buffer.len(), 28);
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n"),
            (BodyFraming::Length(7), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\ncontent-length: 7\r\n\r\n"),
            (BodyFraming::Length(7), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n"),
            (BodyFraming::Chunked, true)
        );
        // Both framings: chunked wins, the length is dropped and the connection not reused.
        let both =
            head_of("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(
            (both.framing, both.keep_alive),
            (BodyFraming::Chunked, false)
        );
        assert!(!both.headers.contains_key(header::CONTENT_LENGTH));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n"),
            (BodyFraming::UntilClose, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n"),
            (BodyFraming::UntilClose, false)
        );
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
            (BodyFraming::Empty, true)
        );
        assert_eq!(
            framing("HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"),
            (BodyFraming::Empty, true)
        );
        assert_eq!(
            framing("HTTP/1.1 100 Continue\r\n\r\n"),
            (BodyFraming::Empty, true)
        );
        let to_head = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
            &Method::HEAD,
        )
        .expect("parses")
        .expect("complete");
        assert_eq!(to_head.framing, BodyFraming::Empty);
        // Persistence: HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive`.
        assert!(!framing("HTTP/1.1 200 OK\r\nconnection: x, Close\r\ncontent-length: 1\r\n\r\n").1);
        assert!(!framing("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").1);
        assert!(
            framing("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n").1
        );
        assert!(
            !framing(
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            .1
        );
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nfolded: a\r\n b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad name: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx: a\0b\r\n\r\n",
        ] {
            assert!(
                head(bad, &Method::GET).is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(bad)
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let text = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(head(text.as_bytes(), &Method::GET).is_err());
    }

    #[test]
    fn a_head_longer_than_the_bound_is_an_error_even_before_its_end() {
        let mut text = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        text.resize(MAX_HEAD_SIZE + 1, b'a');
        assert_eq!(
            head(&text, &Method::GET).err(),
            Some(FramingError::HeadTooLarge)
        );
    }

    /// The body, the trailers and what followed the body.
    type DecodedBody = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    fn decode_all(encoded: &[u8], pieces: &[usize]) -> Result<DecodedBody, FramingError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buffer = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        let mut piece = pieces.iter().cycle();
        loop {
            match decoder.decode(&mut buffer)? {
                Decoded::Data(data) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                Decoded::Trailers(map) => trailers = Some(map),
                Decoded::End => {
                    buffer.extend_from_slice(&encoded[fed..]);
                    return Ok((body, trailers, buffer.to_vec()));
                }
                Decoded::NeedMore => {
                    if fed == encoded.len() {
                        return Err(FramingError::Chunk("input ended"));
                    }
                    let take = piece
                        .next()
                        .copied()
                        .unwrap_or(1)
                        .clamp(1, encoded.len() - fed);
                    buffer.extend_from_slice(&encoded[fed..fed + take]);
                    fed += take;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let encoded = b"5;name=value\r\nhello\r\n1 ; ext\r\n \r\n00000a\r\n0123456789\r\n0\r\nx-sum: abc\r\n\r\nNEXT";
        let (body, trailers, rest) = decode_all(encoded, &[3]).expect("decodes");
        assert_eq!(body, b"hello 0123456789");
        assert_eq!(trailers.expect("trailers")["x-sum"], "abc");
        assert_eq!(rest, b"NEXT");
        let (body, trailers, _) = decode_all(b"0\r\n\r\n", &[1]).expect("decodes");
        assert!(body.is_empty() && trailers.is_none());
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"fffffffffffffffffffff\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5;a\x01\r\nhello\r\n0\r\n\r\n",
            b"-5\r\n",
            b"0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(
                matches!(
                    decode_all(bad, &[64]),
                    Err(FramingError::Chunk(_) | FramingError::HeaderName)
                ),
                "{:?} decoded",
                String::from_utf8_lossy(bad)
            );
        }
        // 16 significant digits fit; leading zeros do not count.
        let (body, _, _) =
            decode_all(b"00000000000000000001\r\nx\r\n0\r\n\r\n", &[64]).expect("decodes");
        assert_eq!(body, b"x");
        let long = vec![b'1'; MAX_CHUNK_LINE + 2];
        assert!(decode_all(&long, &[long.len()]).is_err());
    }

    #[test]
    fn request_heads_carry_host_and_one_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("client.test"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut out = BytesMut::new();
        encode_request_head(
            &Method::POST,
            "/p?q=1",
            "origin:80",
            &headers,
            RequestFraming::Length(3),
            &mut out,
        );
        assert_eq!(
            &out[..],
            b"POST /p?q=1 HTTP/1.1\r\nhost: origin:80\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(
            RequestFraming::choose(&Method::GET, Some(0), None),
            RequestFraming::None
        );
        assert_eq!(
            RequestFraming::choose(&Method::GET, Some(0), Some(0)),
            RequestFraming::Length(0)
        );
        assert_eq!(
            RequestFraming::choose(&Method::POST, Some(0), None),
            RequestFraming::Length(0)
        );
        assert_eq!(
            RequestFraming::choose(&Method::PUT, None, Some(9)),
            RequestFraming::Length(9)
        );
        assert_eq!(
            RequestFraming::choose(&Method::PUT, None, None),
            RequestFraming::Chunked
        );
    }

    fn encode_chunked(body: &[u8], sizes: &[usize], trailers: Option<&HeaderMap>) -> BytesMut {
        let mut out = BytesMut::new();
        let mut rest = body;
        let mut size = sizes.iter().cycle();
        while !rest.is_empty() {
            let take = size.next().copied().unwrap_or(1).clamp(1, rest.len());
            encode_chunk_start(take, &mut out);
            out.put_slice(&rest[..take]);
            out.put_slice(b"\r\n");
            rest = &rest[take..];
        }
        encode_last_chunk(trailers, &mut out);
        out
    }

    fn parse_request(bytes: &[u8]) -> (RequestHead, BytesMut) {
        let mut buffer = BytesMut::from(bytes);
        let parsed = parse_request_head(&mut buffer, 8192, &mut HeadScratch::default());
        (parsed, buffer)
    }

    #[test]
    fn simple_requests_are_taken_off_the_buffer_one_at_a_time() {
        let (parsed, rest) = parse_request(
            b"GET /items/1?x=y HTTP/1.1\r\nHost: example.com\r\nX-Many: a\r\nx-many: b\r\ncontent-length: 0\r\n\r\nDELETE /items/2 HTTP/1.1\r\n",
        );
        let RequestHead::Simple {
            request,
            keep_alive,
            accepts_trailers,
        } = parsed
        else {
            panic!("simple: {parsed:?}");
        };
        assert!(keep_alive);
        assert!(!accepts_trailers);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/items/1?x=y");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "example.com");
        let many: Vec<_> = request.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["a", "b"]);
        assert_eq!(&rest[..], b"DELETE /items/2 HTTP/1.1\r\n");
        let (parsed, rest) = parse_request(&rest);
        assert!(matches!(parsed, RequestHead::Partial), "{parsed:?}");
        assert_eq!(&rest[..], b"DELETE /items/2 HTTP/1.1\r\n");
    }

    #[test]
    fn field_names_of_the_last_head_serve_only_where_they_match() {
        let mut scratch = HeadScratch::default();
        for (head, expected) in [
            (
                "GET / HTTP/1.1\r\nHost: a\r\nX-One: 1\r\n\r\n",
                ["host", "x-one"],
            ),
            (
                "GET / HTTP/1.1\r\nX-One: 1\r\nHost: a\r\n\r\n",
                ["x-one", "host"],
            ),
            (
                "GET / HTTP/1.1\r\nHOST: a\r\nX-Two: 2\r\n\r\n",
                ["host", "x-two"],
            ),
            (
                "GET / HTTP/1.1\r\nHOST: a\r\nX-Two: 2\r\n\r\n",
                ["host", "x-two"],
            ),
        ] {
            let mut buffer = BytesMut::from(head.as_bytes());
            let RequestHead::Simple { request, .. } =
                parse_request_head(&mut buffer, 8192, &mut scratch)
            else {
                panic!("simple: {head}");
            };
            let names: Vec<&str> = request.headers().keys().map(HeaderName::as_str).collect();
            assert_eq!(names, expected, "{head}");
        }
        let mut scratch = HeadScratch::default();
        for (head, expected) in [
            (
                "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\n\r\n",
                ["server", "content-length"],
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nServer: x\r\n\r\n",
                ["content-length", "server"],
            ),
        ] {
            let mut buffer = BytesMut::from(head.as_bytes());
            let parsed = parse_response_head_into(
                &mut buffer,
                &Method::GET,
                false,
                &mut HeaderMap::new(),
                &mut scratch,
            )
            .expect("parses")
            .expect("complete");
            let got: Vec<&str> = parsed.headers.keys().map(HeaderName::as_str).collect();
            assert_eq!(got, expected, "{head}");
            assert_eq!(parsed.framing, BodyFraming::Length(0));
        }
    }

    #[test]
    fn what_a_connection_keeps_between_heads_is_bounded() {
        let mut scratch = HeadScratch::default();
        let long = "x".repeat(NAME_KEPT_MAX + 1);
        let head = format!("GET / HTTP/1.1\r\nhost: a\r\n{long}: 1\r\n\r\n");
        let mut buffer = BytesMut::from(head.as_bytes());
        let RequestHead::Simple { request, .. } =
            parse_request_head(&mut buffer, 8192, &mut scratch)
        else {
            panic!("simple");
        };
        assert!(request.headers().contains_key(long.as_str()));
        assert_eq!(scratch.names.names.len(), 1, "only the short name is kept");
        let mut large = HeaderMap::with_capacity(SPARE_FIELDS_MAX * 2);
        large.insert("x-a", HeaderValue::from_static("1"));
        scratch.recycle(large);
        assert_eq!(scratch.spare.capacity(), 0, "a grown map is let go");
        scratch.recycle(request.into_parts().0.headers);
        assert!(scratch.spare.is_empty() && scratch.spare.capacity() > 0);
    }

    #[test]
    fn a_status_line_without_a_reason_phrase_is_read_without_one() {
        for head in [
            &b"HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n"[..],
            &b"HTTP/1.0 204\n\n"[..],
            &b"HTTP/1.1 404 \r\n\r\n"[..],
        ] {
            let mut buffer = BytesMut::from(head);
            let mut spare = HeaderMap::new();
            let mut scratch = HeadScratch::default();
            let parsed = parse_response_head_into(
                &mut buffer,
                &Method::GET,
                false,
                &mut spare,
                &mut scratch,
            )
            .unwrap()
            .unwrap();
            assert!(parsed.reason.is_none(), "{head:?}");
        }
        // A status the http crate refuses is an error, not a panic.
        let mut buffer = BytesMut::from(&b"HTTP/1.0 010\n\n"[..]);
        let mut spare = HeaderMap::new();
        let mut scratch = HeadScratch::default();
        assert!(
            parse_response_head_into(&mut buffer, &Method::GET, false, &mut spare, &mut scratch)
                .is_err()
        );
    }

    #[test]
    fn a_recycled_extensions_map_carries_nothing_into_the_next_request() {
        let held = std::sync::Arc::new(());
        let mut scratch = HeadScratch::default();
        let mut extensions = http::Extensions::new();
        extensions.insert(held.clone());
        extensions.insert(7_u32);
        scratch.recycle_extensions(extensions);
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            1,
            "entries are dropped"
        );
        let mut buffer = BytesMut::from(&b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"[..]);
        let RequestHead::Simple { request, .. } =
            parse_request_head(&mut buffer, 8192, &mut scratch)
        else {
            panic!("simple");
        };
        assert!(request.extensions().is_empty());
        assert!(request.extensions().get::<std::sync::Arc<()>>().is_none());
        assert!(request.extensions().get::<u32>().is_none());
        // One that held more than requests carry is not kept; its entries are dropped all the
        // same.
        let mut many = http::Extensions::new();
        many.insert(1_u8);
        many.insert(2_u16);
        many.insert(3_u32);
        many.insert(4_u64);
        many.insert(5_i8);
        many.insert(6_i16);
        many.insert(7_i32);
        many.insert(8_i64);
        many.insert(held.clone());
        scratch.recycle_extensions(many);
        assert_eq!(std::sync::Arc::strong_count(&held), 1);
        assert!(scratch.spare_extensions.is_empty());
        assert!(emptied(request.into_parts().0.extensions).is_empty());
    }

    #[test]
    fn trailers_are_taken_when_te_says_so() {
        assert!(te_takes_trailers(b"gzip, Trailers"));
        assert!(!te_takes_trailers(b"gzip, trailersx"));
        // Found as a simple request's head is read.
        for (head, expected) in [
            (&b"GET / HTTP/1.1\r\nte: gzip, Trailers\r\n\r\n"[..], true),
            (b"GET / HTTP/1.1\r\nte: gzip\r\nte: trailers\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nte: gzip\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nx-te: trailers\r\n\r\n", false),
        ] {
            let (parsed, _) = parse_request(head);
            let RequestHead::Simple {
                accepts_trailers, ..
            } = parsed
            else {
                panic!("not simple: {head:?}");
            };
            assert_eq!(accepts_trailers, expected, "{head:?}");
        }
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        let (parsed, _) = parse_request(b"GET / HTTP/1.1\r\nconnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(
            parsed,
            RequestHead::Simple {
                keep_alive: false,
                ..
            }
        ));
    }

    #[test]
    fn requests_with_a_body_or_more_to_negotiate_are_left_whole() {
        for head in [
            &b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: +0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nconnection: Upgrade\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"GET / HTTP/1.1\r\nfolded: a\r\n b\r\n\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            let (parsed, rest) = parse_request(head);
            match parsed {
                RequestHead::Other(taken) => {
                    assert!(taken.is_empty());
                    assert_eq!(&rest[..], head, "{}", String::from_utf8_lossy(head));
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(head)),
            }
        }
    }

    #[test]
    fn a_head_refused_after_it_was_taken_comes_back_whole() {
        let head = b"GET /a\x7fb HTTP/1.1\r\nx: y\r\n\r\nrest";
        let (parsed, rest) = parse_request(head);
        let RequestHead::Other(taken) = parsed else {
            panic!("other: {parsed:?}");
        };
        let mut whole = taken.to_vec();
        whole.extend_from_slice(&rest);
        assert_eq!(whole, head);
    }

    #[test]
    fn a_head_over_the_limit_is_left_to_the_full_server() {
        let mut long = b"GET / HTTP/1.1\r\nx: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 200));
        let mut buffer = BytesMut::from(&long[..]);
        let parsed = parse_request_head(&mut buffer, 100, &mut HeadScratch::default());
        assert!(matches!(&parsed, RequestHead::Other(taken) if taken.is_empty()));
        assert_eq!(buffer.len(), long.len());
        long.extend_from_slice(b"\r\n\r\n");
        let mut buffer = BytesMut::from(&long[..]);
        let parsed = parse_request_head(&mut buffer, 100, &mut HeadScratch::default());
        assert!(matches!(&parsed, RequestHead::Other(taken) if taken.is_empty()));
    }

    fn response_head(
        status: u16,
        headers: &[(&str, &str)],
        method: &Method,
        body: BodySize,
        keep_alive: bool,
    ) -> (String, EncodedHead) {
        let mut response = http::Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).expect("status");
        for (name, value) in headers {
            response.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        let (parts, ()) = response.into_parts();
        let mut out = BytesMut::new();
        let encoded = encode_response_head(
            &parts,
            None,
            None,
            method,
            body,
            keep_alive,
            b"Mon, 07 Dec 2026 04:00:00 GMT",
            &mut out,
        );
        (String::from_utf8(out.to_vec()).expect("text"), encoded)
    }

    #[test]
    fn response_heads_follow_the_body_and_the_request() {
        let date = "date: Mon, 07 Dec 2026 04:00:00 GMT\r\n";
        let (text, encoded) = response_head(
            200,
            &[("content-type", "text/plain")],
            &Method::GET,
            BodySize::Known(5),
            true,
        );
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n{date}\r\n"
            )
        );
        assert_eq!(encoded.framing, ResponseFraming::Length(5));
        assert!(!encoded.close);
        // Unknown size: the response's own length, else chunked.
        let (text, encoded) = response_head(
            200,
            &[("content-length", "7"), ("transfer-encoding", "chunked")],
            &Method::GET,
            BodySize::Unknown,
            true,
        );
        assert_eq!(
            text,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n{date}\r\n")
        );
        assert_eq!(encoded.framing, ResponseFraming::Length(7));
        let (text, encoded) = response_head(
            404,
            &[("trailer", "x-sum, grpc-status")],
            &Method::GET,
            BodySize::Unknown,
            false,
        );
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 404 Not Found\r\ntrailer: x-sum, grpc-status\r\ntransfer-encoding: chunked\r\nconnection: close\r\n{date}\r\n"
            )
        );
        assert_eq!(
            encoded.framing,
            ResponseFraming::Chunked(Some(vec![
                HeaderName::from_static("x-sum"),
                HeaderName::from_static("grpc-status")
            ]))
        );
        assert!(encoded.close);
        // An empty body says so, but not to HEAD, which keeps the length a GET would get.
        let (text, encoded) = response_head(200, &[], &Method::GET, BodySize::Empty, true);
        assert_eq!(
            text,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{date}\r\n")
        );
        assert_eq!(encoded.framing, ResponseFraming::None);
        let (text, encoded) = response_head(
            200,
            &[("content-length", "42")],
            &Method::HEAD,
            BodySize::Empty,
            true,
        );
        assert_eq!(
            text,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 42\r\n{date}\r\n")
        );
        assert_eq!(encoded.framing, ResponseFraming::None);
        let (text, encoded) = response_head(200, &[], &Method::HEAD, BodySize::Known(9), true);
        assert_eq!(
            text,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n{date}\r\n")
        );
        assert_eq!(encoded.framing, ResponseFraming::None);
        let (text, _) = response_head(
            200,
            &[("content-length", "42")],
            &Method::HEAD,
            BodySize::Known(0),
            true,
        );
        assert_eq!(
            text,
            format!("HTTP/1.1 200 OK\r\ncontent-length: 42\r\n{date}\r\n")
        );
        // 204 and 304 carry neither a body nor a length.
        for status in [204, 304] {
            let (text, encoded) = response_head(
                status,
                &[("content-length", "3")],
                &Method::GET,
                BodySize::Known(3),
                true,
            );
            assert!(!text.contains("content-length"), "{text}");
            assert!(!text.contains("transfer-encoding"), "{text}");
            assert_eq!(encoded.framing, ResponseFraming::None);
        }
        // The response's own `connection: close` and `date` are kept, not doubled.
        let (text, encoded) = response_head(
            503,
            &[
                ("connection", "close"),
                ("date", "Sun, 06 Dec 2026 00:00:00 GMT"),
            ],
            &Method::GET,
            BodySize::Empty,
            false,
        );
        assert_eq!(
            text,
            "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ndate: Sun, 06 Dec 2026 00:00:00 GMT\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(encoded.close);
        let (text, _) = response_head(599, &[], &Method::GET, BodySize::Empty, true);
        assert!(text.starts_with("HTTP/1.1 599 \r\n"), "{text}");
    }

    #[test]
    fn only_announced_trailers_are_sent() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("12"));
        trailers.insert("x-other", HeaderValue::from_static("no"));
        let mut out = BytesMut::new();
        encode_announced_trailers(
            Some(&trailers),
            Some(&[HeaderName::from_static("x-sum")]),
            &mut out,
        );
        assert_eq!(&out[..], b"0\r\nx-sum: 12\r\n\r\n");
        out.clear();
        encode_announced_trailers(Some(&trailers), None, &mut out);
        assert_eq!(&out[..], b"0\r\n\r\n");
    }

    proptest! {
        #[test]
        fn a_field_value_is_checked_as_the_http_crate_checks_it(
            bytes in proptest::collection::vec(
                prop_oneof![0x1Fu8..=0x21, 0x7Du8..=0x81, Just(b'\t'), Just(b'\r'), any::<u8>()],
                0..40,
            ),
        ) {
            // Bytes near each edge of the visible range, at every position of a block of
            // sixteen and of the remainder.
            let visible = bytes.iter().all(|byte| (0x20..=0x7E).contains(byte));
            prop_assert_eq!(is_visible_ascii(&bytes), visible);
            let ours = field_value(Bytes::from(bytes.clone()));
            let theirs = HeaderValue::from_maybe_shared(Bytes::from(bytes));
            prop_assert_eq!(ours.is_ok(), theirs.is_ok());
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                prop_assert_eq!(ours.as_bytes(), theirs.as_bytes());
            }
        }
    }

    #[test]
    fn a_control_character_anywhere_in_a_field_value_is_refused() {
        for length in 1..=24 {
            for position in 0..length {
                for control in [0x00u8, b'\n', b'\r', 0x1F, 0x7F] {
                    let mut bytes = vec![b'a'; length];
                    bytes[position] = control;
                    assert!(!is_visible_ascii(&bytes), "{bytes:?}");
                    assert!(field_value(Bytes::from(bytes)).is_err());
                }
            }
        }
        assert!(is_visible_ascii(b""));
        assert!(is_visible_ascii(b" ~ longer than one block of sixteen ~"));
        // Tabs and obs-text are valid, through the byte-wise check.
        assert!(field_value(Bytes::from_static(b"a\tb")).is_ok());
        assert!(field_value(Bytes::from_static(b"caf\xE9")).is_ok());
    }

    proptest! {
        #[test]
        fn chunked_coding_round_trips_however_the_bytes_arrive(
            body in proptest::collection::vec(any::<u8>(), 0..4096),
            sizes in proptest::collection::vec(1usize..700, 1..8),
            pieces in proptest::collection::vec(1usize..300, 1..8),
            with_trailers in any::<bool>(),
        ) {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc"));
            let encoded = encode_chunked(&body, &sizes, with_trailers.then_some(&trailers));
            let (decoded, got, rest) = decode_all(&encoded, &pieces).expect("decodes");
            prop_assert_eq!(decoded, body);
            prop_assert_eq!(got, with_trailers.then_some(trailers));
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_progress(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = head(&bytes, &Method::GET);
            let _ = decode_all(&bytes, &[7]);
        }

        #[test]
        fn arbitrary_request_bytes_never_panic_and_keep_every_byte(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let (parsed, rest) = parse_request(&bytes);
            match parsed {
                RequestHead::Simple { request, .. } => {
                    prop_assert!(request.method() != Method::CONNECT);
                    prop_assert!(!request.headers().contains_key(header::TRANSFER_ENCODING));
                    prop_assert!(bytes.ends_with(&rest));
                }
                RequestHead::Partial => prop_assert_eq!(&rest[..], &bytes[..]),
                RequestHead::Other(taken) => {
                    let mut whole = taken.to_vec();
                    whole.extend_from_slice(&rest);
                    prop_assert_eq!(whole, bytes);
                }
            }
        }

        #[test]
        fn a_request_split_anywhere_parses_the_same(split in 0usize..64) {
            let text = b"GET /a?b=c HTTP/1.1\r\nhost: h\r\nte: trailers\r\nx-y: z\r\n\r\n";
            let split = split.min(text.len());
            let mut buffer = BytesMut::from(&text[..split]);
            let mut scratch = HeadScratch::default();
            let mut parsed = parse_request_head(&mut buffer, 8192, &mut scratch);
            if split < text.len() {
                prop_assert!(matches!(parsed, RequestHead::Partial));
                buffer.extend_from_slice(&text[split..]);
                parsed = parse_request_head(&mut buffer, 8192, &mut scratch);
            }
            let RequestHead::Simple {
                request,
                keep_alive,
                accepts_trailers: trailers,
            } = parsed
            else {
                return Err(TestCaseError::fail("not simple"));
            };
            prop_assert!(keep_alive);
            prop_assert!(trailers);
            prop_assert_eq!(request.uri(), "/a?b=c");
            prop_assert_eq!(&request.headers()["x-y"], "z");
            prop_assert!(buffer.is_empty());
        }

        #[test]
        fn a_response_split_anywhere_parses_the_same(split in 0usize..60) {
            let text = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-y: z\r\n\r\nhello";
            let mut buffer = BytesMut::from(&text[..split.min(text.len())]);
            let first = parse_response_head(&mut buffer, &Method::GET).expect("parses");
            if first.is_none() {
                buffer.extend_from_slice(&text[split.min(text.len())..]);
            }
            let head = match first {
                Some(head) => head,
                None => parse_response_head(&mut buffer, &Method::GET).expect("parses").expect("complete"),
            };
            prop_assert_eq!(head.framing, BodyFraming::Length(5));
            prop_assert_eq!(&head.headers["x-y"], "z");
        }
    }

    /// `head` parsed for a `method` request, fields forwarded when `forward`.
    fn parsed(head: &[u8], method: &Method, forward: bool) -> Result<ResponseHead, FramingError> {
        let mut buffer = BytesMut::from(head);
        let parsed = parse_response_head_into(
            &mut buffer,
            method,
            forward,
            &mut HeaderMap::new(),
            &mut HeadScratch::default(),
        )?;
        Ok(parsed.expect("complete"))
    }

    /// The lines of `forwarded`, as written.
    fn forwarded_text(forwarded: &ForwardedFields) -> String {
        let mut out = BytesMut::new();
        forwarded.write(&mut out);
        assert_eq!(out.len(), forwarded.len());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `head` parsed for a `GET` with its fields forwarded, and the lines forwarded.
    fn forwarded_head(head: &[u8]) -> (ResponseHead, String) {
        let parsed = parsed(head, &Method::GET, true).expect("parses");
        let text = forwarded_text(parsed.forwarded.as_ref().expect("forwarded"));
        (parsed, text)
    }

    #[test]
    fn an_end_to_end_head_is_forwarded_without_its_framing_lines() {
        let (head, text) = forwarded_head(
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 07 Dec 2026 04:00:00 GMT\r\n\
              Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
        );
        assert_eq!(
            text,
            "Server: nginx\r\nDate: Mon, 07 Dec 2026 04:00:00 GMT\r\nContent-Type: text/plain\r\n"
        );
        let forwarded = head.forwarded.as_ref().expect("forwarded");
        assert_eq!(forwarded.count, 1, "one run of lines");
        assert!(forwarded.has_date());
        assert!(head.headers.is_empty());
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert!(head.keep_alive);
        // Framing lines between others split the runs; `keep-alive` goes, `close` is read.
        let (head, text) = forwarded_head(
            b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 5\r\nB: 2\r\nKeep-Alive: timeout=5\r\n\
              set-cookie: a=1\r\nconnection: close\r\nset-cookie: b=2\r\n\r\n",
        );
        assert_eq!(
            text,
            "A: 1\r\nB: 2\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n"
        );
        let forwarded = head.forwarded.as_ref().expect("forwarded");
        assert_eq!(forwarded.count, 4);
        assert!(!forwarded.has_date());
        assert!(!head.keep_alive);
        // Chunked: the coding line goes too.
        let (head, text) =
            forwarded_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx: y\r\n\r\n");
        assert_eq!(text, "x: y\r\n");
        assert_eq!(head.framing, BodyFraming::Chunked);
        // Not asked for: the map, as before.
        let head = parsed(
            b"HTTP/1.1 200 OK\r\nx: y\r\ncontent-length: 0\r\n\r\n",
            &Method::GET,
            false,
        )
        .expect("parses");
        assert!(head.forwarded.is_none());
        assert_eq!(head.headers.len(), 2);
    }

    #[test]
    fn a_head_a_proxy_edits_or_without_a_body_is_read_into_the_map() {
        let five_runs = "HTTP/1.1 200 OK\r\na: 1\r\nkeep-alive: 1\r\nb: 1\r\nkeep-alive: 1\r\n\
                         c: 1\r\nkeep-alive: 1\r\nd: 1\r\nkeep-alive: 1\r\ne: 1\r\n\
                         content-length: 0\r\n\r\n";
        for (head, method) in [
            (
                "HTTP/1.1 200 OK\r\ntrailer: x-sum\r\ntransfer-encoding: chunked\r\n\r\n",
                Method::GET,
            ),
            (
                "HTTP/1.1 200 OK\r\nUpgrade: h2c\r\ncontent-length: 0\r\n\r\n",
                Method::GET,
            ),
            (
                "HTTP/1.1 200 OK\r\nTE: trailers\r\ncontent-length: 0\r\n\r\n",
                Method::GET,
            ),
            (
                "HTTP/1.1 200 OK\r\nProxy-Connection: x\r\ncontent-length: 0\r\n\r\n",
                Method::GET,
            ),
            (
                "HTTP/1.1 200 OK\r\nProxy-Authenticate: x\r\ncontent-length: 0\r\n\r\n",
                Method::GET,
            ),
            (
                "HTTP/1.1 200 OK\r\nProxy-Authorization: x\r\ncontent-length: 0\r\n\r\n",
                Method::GET,
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: close, x-a\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
                Method::GET,
            ),
            // A line ending in a bare LF is not passed on as it came.
            (
                "HTTP/1.1 200 OK\r\nx: 1\ncontent-length: 0\r\n\r\n",
                Method::GET,
            ),
            ("HTTP/1.1 200 OK\nx: 1\n\n", Method::GET),
            (five_runs, Method::GET),
            (
                "HTTP/1.1 200 OK\r\nx: 1\r\ncontent-length: 5\r\n\r\n",
                Method::HEAD,
            ),
            ("HTTP/1.1 204 No Content\r\nx: 1\r\n\r\n", Method::GET),
            ("HTTP/1.1 304 Not Modified\r\nx: 1\r\n\r\n", Method::GET),
            ("HTTP/1.1 103 Early Hints\r\nx: 1\r\n\r\n", Method::GET),
        ] {
            let head = parsed(head.as_bytes(), &method, true).expect(head);
            assert!(head.forwarded.is_none(), "{head:?}");
            assert!(!head.headers.is_empty(), "{head:?}");
        }
    }

    /// A generated response head: fields from names a proxy treats apart (in any case) and
    /// others, values from what each usually carries and from bytes near the edges of what a
    /// value may hold, lines ending in CRLF or a bare LF.
    fn generated_head() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just("server"),
            Just("date"),
            Just("content-type"),
            Just("content-length"),
            Just("transfer-encoding"),
            Just("connection"),
            Just("keep-alive"),
            Just("set-cookie"),
            Just("x-a"),
            Just("trailer"),
            Just("upgrade"),
            Just("te"),
            Just("proxy-connection"),
            Just("proxy-authenticate"),
            Just("proxy-authorization"),
        ];
        let value = prop_oneof![
            Just(b"5".to_vec()),
            Just(b"5, 5".to_vec()),
            Just(b"7".to_vec()),
            Just(b"chunked".to_vec()),
            Just(b"gzip, chunked".to_vec()),
            Just(b"close".to_vec()),
            Just(b"keep-alive".to_vec()),
            Just(b"close, x-a".to_vec()),
            Just(b"keep-alive, te".to_vec()),
            Just(b"Keep-Alive".to_vec()),
            proptest::collection::vec(
                prop_oneof![0x1Fu8..=0x21, 0x7Du8..=0x81, Just(b'\t'), b'a'..=b'z'],
                0..12,
            ),
        ];
        let field = (name, any::<u32>(), value, proptest::bool::weighted(0.9));
        (
            prop_oneof![
                Just("200 OK"),
                Just("404 Not Found"),
                Just("204 No Content"),
                Just("200 Fine")
            ],
            proptest::collection::vec(field, 0..10),
        )
            .prop_map(|(status, fields)| {
                let mut head = format!("HTTP/1.1 {status}\r\n").into_bytes();
                for (name, case, value, crlf) in fields {
                    // Each letter upper-cased or not by a bit of `case`.
                    head.extend(name.bytes().enumerate().map(|(index, byte)| {
                        if case >> (index % 32) & 1 == 1 {
                            byte.to_ascii_uppercase()
                        } else {
                            byte
                        }
                    }));
                    head.extend_from_slice(b": ");
                    head.extend_from_slice(&value);
                    head.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
                head.extend_from_slice(b"\r\n");
                head
            })
    }

    /// The fields of a head's lines, names lower-cased, each name's values in order.
    fn fields_of(lines: &[u8]) -> std::collections::BTreeMap<String, Vec<Vec<u8>>> {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        head.extend_from_slice(lines);
        head.extend_from_slice(b"\r\n");
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut fields);
        assert!(
            response
                .parse(&head)
                .expect("written lines parse")
                .is_complete()
        );
        let mut map = std::collections::BTreeMap::<String, Vec<Vec<u8>>>::new();
        for field in response.headers.iter() {
            map.entry(field.name.to_ascii_lowercase())
                .or_default()
                .push(field.value.to_vec());
        }
        map
    }

    proptest! {
        #[test]
        fn forwarded_fields_are_the_fields_the_map_would_carry(
            head in generated_head(),
            head_request in proptest::bool::weighted(0.2),
        ) {
            let method = if head_request { Method::HEAD } else { Method::GET };
            let mapped = parsed(&head, &method, false);
            let forwarded = parsed(&head, &method, true);
            // The same heads are refused, for the same reason.
            let (mapped, forwarded) = match (mapped, forwarded) {
                (Ok(mapped), Ok(forwarded)) => (mapped, forwarded),
                (mapped, forwarded) => {
                    prop_assert_eq!(mapped.err(), forwarded.err());
                    return Ok(());
                }
            };
            prop_assert_eq!(mapped.status, forwarded.status);
            prop_assert_eq!(&mapped.reason, &forwarded.reason);
            prop_assert_eq!(mapped.framing, forwarded.framing);
            prop_assert_eq!(mapped.keep_alive, forwarded.keep_alive);
            let Some(lines) = &forwarded.forwarded else {
                prop_assert_eq!(&forwarded.headers, &mapped.headers);
                return Ok(());
            };
            prop_assert!(forwarded.headers.is_empty());
            // What the map would carry once the proxy has removed the fields of the origin's
            // connection, but the `content-length` the sender writes itself.
            let mut expected = mapped.headers.clone();
            crate::client::strip_hop_by_hop(&mut expected, false);
            expected.remove(header::CONTENT_LENGTH);
            let mut written = BytesMut::new();
            for (name, value) in &expected {
                written.put_slice(name.as_str().as_bytes());
                written.put_slice(b": ");
                written.put_slice(value.as_bytes());
                written.put_slice(b"\r\n");
            }
            let mut out = BytesMut::new();
            lines.write(&mut out);
            // Whole lines, each ending in CRLF, with no other CR or LF.
            prop_assert!(out.is_empty() || out.ends_with(b"\r\n"));
            for line in out[..].split(|&byte| byte == b'\n').filter(|line| !line.is_empty()) {
                prop_assert!(line.ends_with(b"\r") && !line[..line.len() - 1].contains(&b'\r'));
            }
            prop_assert_eq!(fields_of(&out), fields_of(&written));
            prop_assert_eq!(lines.has_date(), expected.contains_key(header::DATE));
            // Written out for a client, both give the same head but for the names' case and
            // the order of different names.
            let body = match mapped.framing {
                BodyFraming::Length(length) => BodySize::Known(length),
                _ => BodySize::Unknown,
            };
            let encode = |head: &ResponseHead| {
                let mut response = http::Response::new(());
                *response.status_mut() = head.status;
                *response.headers_mut() = head.headers.clone();
                let (parts, ()) = response.into_parts();
                let mut out = BytesMut::new();
                let encoded = encode_response_head(
                    &parts,
                    head.reason.as_deref(),
                    head.forwarded.as_ref(),
                    &method,
                    body,
                    head.keep_alive,
                    b"Mon, 07 Dec 2026 04:00:00 GMT",
                    &mut out,
                );
                let status_line = out.iter().position(|&byte| byte == b'\n').map_or(0, |at| at + 1);
                (encoded, out[..status_line].to_vec(), fields_of(&out[status_line..out.len() - 2]))
            };
            prop_assert_eq!(encode(&forwarded), encode(&mapped));
        }
    }
}
