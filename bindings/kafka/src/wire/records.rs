//! Record batches, magic v2: the unit Kafka stores, produces and fetches.
//!
//! ```text
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 (2) | crc u32 (crc32c)
//! attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records...
//! record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint
//!         key varint-bytes | value varint-bytes | headers varint count, (name, value)...
//! ```
//!
//! Everything after `recordCount` is compressed as one block when the batch is compressed.
//! Decoding bounds the decompressed size, so a small compressed batch cannot expand without
//! limit.

use std::io::{self, Read, Write};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before the CRC-covered part of a batch.
const CRC_OFFSET: usize = 17;
/// Bytes from `attributes` to the end of `recordCount`.
const HEADER_AFTER_CRC: usize = 40;
/// The fixed batch header.
pub const BATCH_HEADER_SIZE: usize = 61;
/// Bytes of `baseOffset` and `batchLength`, which `batchLength` does not count.
const LOG_OVERHEAD: usize = 12;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_SIZE: usize = 16;
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;

/// Why a batch did not encode or decode.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// The bytes end inside a structure they announce.
    #[error("record batch truncated: {0}")]
    Truncated(&'static str),
    /// A field holds a value the format does not allow.
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// The batch uses a message format other than v2.
    #[error("unsupported message format (magic {0})")]
    UnsupportedMagic(i8),
    /// The CRC does not match the content.
    #[error("record batch CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc {
        /// The CRC in the batch header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The compression codec id is unknown.
    #[error("unknown compression codec {0}")]
    UnknownCompression(i16),
    /// Decompressed records, or the records decoded from them, would exceed the configured
    /// bound.
    #[error("decompressed or decoded records exceed {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// The compressed block is corrupt.
    #[error("{codec} decompression failed: {source}")]
    Decompress {
        /// The codec.
        codec: Compression,
        /// What the codec said.
        #[source]
        source: io::Error,
    },
    /// Compressing failed.
    #[error("{codec} compression failed: {source}")]
    Compress {
        /// The codec.
        codec: Compression,
        /// What the codec said.
        #[source]
        source: io::Error,
    },
    /// A batch must hold at least one record.
    #[error("a record batch needs at least one record")]
    Empty,
}

/// Compression codec of a batch (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Uncompressed.
    #[default]
    None,
    /// gzip (deflate with gzip framing).
    Gzip,
    /// snappy: written in the xerial framing Java clients use; raw snappy is read too.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// zstd.
    Zstd,
}

impl Compression {
    fn id(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    fn from_id(id: i16) -> Result<Self, RecordsError> {
        Ok(match id {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            other => return Err(RecordsError::UnknownCompression(other)),
        })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        })
    }
}

/// Whether record timestamps were set by the producer or by the broker on append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Set by the producer.
    #[default]
    CreateTime,
    /// Set by the broker.
    LogAppendTime,
}

/// A record header. Names may repeat; order is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name (UTF-8 in practice; kept as bytes).
    pub name: Bytes,
    /// The value; `None` is a null value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value.
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: Some(value.into()),
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The key; `None` is a null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<Header>,
}

/// A record read from a batch, with its absolute offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    /// Absolute offset in the partition.
    pub offset: i64,
    /// Milliseconds since the epoch (the batch's max timestamp for log-append time).
    pub timestamp: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<Header>,
}

/// Batch-level settings of an encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Compression of the records.
    pub compression: Compression,
    /// Producer id, `-1` when not idempotent.
    pub producer_id: i64,
    /// Producer epoch, `-1` when not idempotent.
    pub producer_epoch: i16,
    /// Sequence of the first record, `-1` when not idempotent.
    pub base_sequence: i32,
    /// Whether the batch is part of a transaction.
    pub transactional: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            compression: Compression::None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
        }
    }
}

/// A decoded batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Offset of the last record the batch covered when written (compaction may have removed
    /// records, so it can exceed the last offset in `records`).
    pub last_offset: i64,
    /// Leader epoch when appended.
    pub partition_leader_epoch: i32,
    /// Codec the batch was compressed with.
    pub compression: Compression,
    /// Timestamp type.
    pub timestamp_type: TimestampType,
    /// Part of a transaction.
    pub transactional: bool,
    /// A control batch (transaction markers), not application data.
    pub control: bool,
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// First sequence number.
    pub base_sequence: i32,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// The records.
    pub records: Vec<FetchedRecord>,
}

/// Bounds applied while decoding.
///
/// Decoded records cost memory of their own besides the bytes they point into: a record's
/// fields and each header's (see [`decoded_bytes`]), many times the wire size of a record
/// with many empty headers (a header takes two bytes on the wire). Both bounds count them
/// with the decompressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Maximum decompressed size of one batch's records, and maximum size of the records
    /// decoded from it.
    pub max_decompressed_bytes: usize,
    /// Maximum decompressed and decoded size of all the batches of one fetch response
    /// together ([`DecompressBudget`]); the first batch of a response is always decoded
    /// (within `max_decompressed_bytes`), so a fetch always makes progress.
    pub max_fetch_decompressed_bytes: usize,
}

/// The memory a decoded record takes besides the bytes its key, value and headers point
/// into.
pub fn decoded_bytes(headers: usize) -> usize {
    std::mem::size_of::<FetchedRecord>() + headers * std::mem::size_of::<Header>()
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_fetch_decompressed_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What the rest of one fetch response may still decompress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecompressBudget {
    remaining: usize,
    per_batch: usize,
    first: bool,
}

impl DecompressBudget {
    /// The budget of one fetch response under `limits`.
    pub fn new(limits: &DecodeLimits) -> Self {
        Self {
            remaining: limits.max_fetch_decompressed_bytes,
            per_batch: limits.max_decompressed_bytes,
            first: true,
        }
    }

    /// What the next batch may use without stopping the response: nothing bounds the first
    /// but the per-batch bound.
    fn left(&self) -> Option<usize> {
        (!self.first).then_some(self.remaining)
    }
}

/// Encodes `records` as one batch with base offset 0 (the broker assigns offsets).
pub fn encode_batch(records: &[Record], options: &BatchOptions) -> Result<Bytes, RecordsError> {
    let first = records.first().ok_or(RecordsError::Empty)?;
    let count = i32::try_from(records.len())
        .map_err(|_| RecordsError::Invalid("too many records".into()))?;
    let base_timestamp = first.timestamp;
    let max_timestamp = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .unwrap_or(base_timestamp);

    let mut body = BytesMut::new();
    for (delta, record) in records.iter().enumerate() {
        encode_record(&mut body, record, delta as i64, base_timestamp)?;
    }
    let body = compress(options.compression, &body)?;

    let mut attributes = options.compression.id();
    if options.transactional {
        attributes |= TRANSACTIONAL_FLAG;
    }
    let batch_length = BATCH_HEADER_SIZE - LOG_OVERHEAD + body.len();
    let batch_length = i32::try_from(batch_length)
        .map_err(|_| RecordsError::Invalid("batch larger than 2 GiB".into()))?;

    let mut out = BytesMut::with_capacity(BATCH_HEADER_SIZE + body.len());
    out.put_i64(0);
    out.put_i32(batch_length);
    out.put_i32(-1);
    out.put_i8(2);
    out.put_u32(0);
    out.put_i16(attributes);
    out.put_i32(count - 1);
    out.put_i64(base_timestamp);
    out.put_i64(max_timestamp);
    out.put_i64(options.producer_id);
    out.put_i16(options.producer_epoch);
    out.put_i32(options.base_sequence);
    out.put_i32(count);
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[CRC_OFFSET + 4..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

fn encode_record(
    out: &mut BytesMut,
    record: &Record,
    offset_delta: i64,
    base_timestamp: i64,
) -> Result<(), RecordsError> {
    let mut body = BytesMut::new();
    body.put_i8(0);
    put_varlong(&mut body, record.timestamp.wrapping_sub(base_timestamp));
    put_varlong(&mut body, offset_delta);
    put_nullable(&mut body, record.key.as_deref())?;
    put_nullable(&mut body, record.value.as_deref())?;
    put_varlong(&mut body, record.headers.len() as i64);
    for header in &record.headers {
        put_nullable(&mut body, Some(&header.name))?;
        put_nullable(&mut body, header.value.as_deref())?;
    }
    let length = i32::try_from(body.len())
        .map_err(|_| RecordsError::Invalid("record larger than 2 GiB".into()))?;
    put_varlong(out, i64::from(length));
    out.extend_from_slice(&body);
    Ok(())
}

fn put_nullable(out: &mut BytesMut, bytes: Option<&[u8]>) -> Result<(), RecordsError> {
    match bytes {
        None => put_varlong(out, -1),
        Some(bytes) => {
            let length = i32::try_from(bytes.len())
                .map_err(|_| RecordsError::Invalid("field larger than 2 GiB".into()))?;
            put_varlong(out, i64::from(length));
            out.extend_from_slice(bytes);
        }
    }
    Ok(())
}

fn put_varlong(out: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.put_u8(zigzag as u8);
}

/// Decodes every complete batch in `bytes`. A partial batch at the end, which brokers send
/// when a fetch size limit cuts a batch, is ignored.
pub fn decode_batches(
    bytes: Bytes,
    limits: &DecodeLimits,
) -> Result<Vec<RecordBatch>, RecordsError> {
    let mut budget = DecompressBudget {
        remaining: usize::MAX,
        ..DecompressBudget::new(limits)
    };
    Ok(decode_batches_within(bytes, &mut budget)?.0)
}

/// Decodes the complete batches in `bytes` while `budget` allows, taking what their
/// decompression and decoding used from it. Returns the batches, and whether it stopped before the end
/// because the budget ran out (the rest is for the next fetch).
pub fn decode_batches_within(
    mut bytes: Bytes,
    budget: &mut DecompressBudget,
) -> Result<(Vec<RecordBatch>, bool), RecordsError> {
    let mut batches = Vec::new();
    while bytes.len() >= LOG_OVERHEAD {
        let batch_length = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let batch_length = usize::try_from(batch_length)
            .map_err(|_| RecordsError::Invalid(format!("negative batch length {batch_length}")))?;
        let total = LOG_OVERHEAD + batch_length;
        if bytes.len() < total {
            break;
        }
        let batch = bytes.split_to(total);
        match decode_bounded(batch, budget.per_batch, budget.left())? {
            Some((batch, used)) => {
                budget.remaining = budget.remaining.saturating_sub(used);
                budget.first = false;
                batches.push(batch);
            }
            None => return Ok((batches, true)),
        }
    }
    Ok((batches, false))
}

/// Decodes one complete batch.
pub fn decode_batch(batch: Bytes, limits: &DecodeLimits) -> Result<RecordBatch, RecordsError> {
    match decode_bounded(batch, limits.max_decompressed_bytes, None)? {
        Some((batch, _)) => Ok(batch),
        None => Err(RecordsError::TooLarge {
            limit: limits.max_decompressed_bytes,
        }),
    }
}

/// Decodes one complete batch. Its records may decompress to `per_batch` bytes and decode to
/// `per_batch` bytes ([`decoded_bytes`]), or it is an error; with `left`, the two together
/// may use that much, or the batch is left for the next fetch (`None`). Returns it with the
/// bytes it used: decompressed (for a compressed batch) and decoded.
fn decode_bounded(
    mut batch: Bytes,
    per_batch: usize,
    left: Option<usize>,
) -> Result<Option<(RecordBatch, usize)>, RecordsError> {
    if batch.len() < BATCH_HEADER_SIZE {
        // A batch too short for its header may still be an old-format message set.
        if batch.len() > CRC_OFFSET - 1 && batch[16] != 2 {
            return Err(RecordsError::UnsupportedMagic(batch[16] as i8));
        }
        return Err(RecordsError::Truncated("batch header"));
    }
    let base_offset = batch.get_i64();
    let _batch_length = batch.get_i32();
    let partition_leader_epoch = batch.get_i32();
    let magic = batch.get_i8();
    if magic != 2 {
        return Err(RecordsError::UnsupportedMagic(magic));
    }
    let stored = batch.get_u32();
    let computed = crc32c::crc32c(&batch);
    if stored != computed {
        return Err(RecordsError::Crc { stored, computed });
    }
    let attributes = batch.get_i16();
    let last_offset_delta = batch.get_i32();
    let base_timestamp = batch.get_i64();
    let max_timestamp = batch.get_i64();
    let producer_id = batch.get_i64();
    let producer_epoch = batch.get_i16();
    let base_sequence = batch.get_i32();
    let count = batch.get_i32();
    debug_assert_eq!(HEADER_AFTER_CRC, 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4);
    let count = usize::try_from(count)
        .map_err(|_| RecordsError::Invalid(format!("negative record count {count}")))?;

    let compression = Compression::from_id(attributes & COMPRESSION_MASK)?;
    let timestamp_type = if attributes & TIMESTAMP_TYPE_FLAG != 0 {
        TimestampType::LogAppendTime
    } else {
        TimestampType::CreateTime
    };
    // Decompressing stops at what is left when that is less than the per-batch bound: past
    // it the batch is for the next fetch, and decompressing it all would be wasted.
    let cap = left.map_or(per_batch, |left| left.min(per_batch));
    let mut body = match decompress(compression, batch, cap) {
        Err(RecordsError::TooLarge { .. }) if cap < per_batch => return Ok(None),
        body => body?,
    };
    let decompressed = if compression == Compression::None {
        0
    } else {
        body.len()
    };
    let mut decoded = 0usize;

    // Every record takes at least seven bytes, which bounds what an inflated count reserves.
    let mut records = Vec::with_capacity(count.min(body.len() / 7));
    for _ in 0..count {
        let record = decode_record(&mut body, base_offset, base_timestamp)?;
        decoded += decoded_bytes(record.headers.len());
        if decoded > per_batch {
            return Err(RecordsError::TooLarge { limit: per_batch });
        }
        if left.is_some_and(|left| decompressed + decoded > left) {
            return Ok(None);
        }
        records.push(FetchedRecord {
            timestamp: match timestamp_type {
                TimestampType::LogAppendTime => max_timestamp,
                TimestampType::CreateTime => record.timestamp,
            },
            ..record
        });
    }
    let batch = RecordBatch {
        base_offset,
        last_offset: base_offset.wrapping_add(i64::from(last_offset_delta)),
        partition_leader_epoch,
        compression,
        timestamp_type,
        transactional: attributes & TRANSACTIONAL_FLAG != 0,
        control: attributes & CONTROL_FLAG != 0,
        producer_id,
        producer_epoch,
        base_sequence,
        max_timestamp,
        records,
    };
    Ok(Some((batch, decompressed + decoded)))
}

fn decode_record(
    body: &mut Bytes,
    base_offset: i64,
    base_timestamp: i64,
) -> Result<FetchedRecord, RecordsError> {
    let length = get_varlong(body)?;
    let length = usize::try_from(length)
        .map_err(|_| RecordsError::Invalid(format!("negative record length {length}")))?;
    if length > body.len() {
        return Err(RecordsError::Truncated("record"));
    }
    let mut record = body.split_to(length);
    if record.is_empty() {
        return Err(RecordsError::Truncated("record attributes"));
    }
    record.advance(1);
    let timestamp_delta = get_varlong(&mut record)?;
    let offset_delta = get_varlong(&mut record)?;
    let key = get_nullable(&mut record)?;
    let value = get_nullable(&mut record)?;
    let header_count = get_varlong(&mut record)?;
    let header_count = usize::try_from(header_count)
        .map_err(|_| RecordsError::Invalid(format!("negative header count {header_count}")))?;
    // Every header takes at least two bytes.
    let mut headers = Vec::with_capacity(header_count.min(record.len() / 2));
    for _ in 0..header_count {
        let name = get_nullable(&mut record)?
            .ok_or_else(|| RecordsError::Invalid("null header name".into()))?;
        let value = get_nullable(&mut record)?;
        headers.push(Header { name, value });
    }
    if !record.is_empty() {
        return Err(RecordsError::Invalid(
            "record length does not match its content".into(),
        ));
    }
    Ok(FetchedRecord {
        offset: base_offset.wrapping_add(offset_delta),
        timestamp: base_timestamp.wrapping_add(timestamp_delta),
        key,
        value,
        headers,
    })
}

fn get_varlong(bytes: &mut Bytes) -> Result<i64, RecordsError> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        if bytes.is_empty() {
            return Err(RecordsError::Truncated("varint"));
        }
        let byte = bytes.get_u8();
        if shift == 63 && byte > 1 {
            return Err(RecordsError::Invalid("varint overflows 64 bits".into()));
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(RecordsError::Invalid("varint longer than 10 bytes".into()))
}

fn get_nullable(bytes: &mut Bytes) -> Result<Option<Bytes>, RecordsError> {
    let length = get_varlong(bytes)?;
    if length < 0 {
        return Ok(None);
    }
    let length = length as u64;
    if length > bytes.len() as u64 {
        return Err(RecordsError::Truncated("key, value or header"));
    }
    Ok(Some(bytes.split_to(length as usize)))
}

fn compress(codec: Compression, body: &[u8]) -> Result<Bytes, RecordsError> {
    let failed = |source| RecordsError::Compress { codec, source };
    Ok(match codec {
        Compression::None => Bytes::copy_from_slice(body),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(body).map_err(failed)?;
            Bytes::from(encoder.finish().map_err(failed)?)
        }
        Compression::Snappy => Bytes::from(xerial_compress(body).map_err(failed)?),
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(body).map_err(failed)?;
            Bytes::from(encoder.finish().map_err(|e| failed(io::Error::other(e)))?)
        }
        Compression::Zstd => Bytes::from(zstd::stream::encode_all(body, 3).map_err(failed)?),
    })
}

/// Snappy in the framing of snappy-java's `SnappyOutputStream`, which Java clients write.
fn xerial_compress(body: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_SIZE + body.len());
    out.extend_from_slice(XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for chunk in body.chunks(XERIAL_BLOCK_SIZE) {
        let block = encoder.compress_vec(chunk).map_err(io::Error::other)?;
        let length = i32::try_from(block.len()).map_err(io::Error::other)?;
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

fn decompress(codec: Compression, body: Bytes, limit: usize) -> Result<Bytes, RecordsError> {
    let failed = |source| RecordsError::Decompress { codec, source };
    let bounded = |reader: &mut dyn Read| -> Result<Bytes, RecordsError> {
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(failed)?;
        if out.len() > limit {
            return Err(RecordsError::TooLarge { limit });
        }
        Ok(Bytes::from(out))
    };
    match codec {
        Compression::None => Ok(body),
        Compression::Gzip => bounded(&mut flate2::read::MultiGzDecoder::new(&body[..])),
        Compression::Snappy => snappy_decompress(&body, limit),
        Compression::Lz4 => bounded(&mut lz4_flex::frame::FrameDecoder::new(&body[..])),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(&body[..]).map_err(failed)?;
            bounded(&mut decoder)
        }
    }
}

fn snappy_decompress(body: &[u8], limit: usize) -> Result<Bytes, RecordsError> {
    let failed = |e: snap::Error| RecordsError::Decompress {
        codec: Compression::Snappy,
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    };
    let mut out = Vec::new();
    let append = |block: &[u8], out: &mut Vec<u8>| -> Result<(), RecordsError> {
        let size = snap::raw::decompress_len(block).map_err(failed)?;
        if size > limit.saturating_sub(out.len()) {
            return Err(RecordsError::TooLarge { limit });
        }
        let start = out.len();
        out.resize(start + size, 0);
        let written = snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(failed)?;
        out.truncate(start + written);
        Ok(())
    };
    if body.len() >= XERIAL_HEADER_SIZE && body.starts_with(XERIAL_MAGIC) {
        let mut rest = &body[XERIAL_HEADER_SIZE..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(RecordsError::Truncated("xerial snappy block length"));
            }
            let length = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let length = usize::try_from(length)
                .map_err(|_| RecordsError::Invalid("negative xerial block length".into()))?;
            rest = &rest[4..];
            if length > rest.len() {
                return Err(RecordsError::Truncated("xerial snappy block"));
            }
            append(&rest[..length], &mut out)?;
            rest = &rest[length..];
        }
    } else {
        append(body, &mut out)?;
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample() -> Vec<Record> {
        vec![
            Record {
                timestamp: 1_700_000_000_000,
                key: Some(Bytes::from_static(b"k1")),
                value: Some(Bytes::from_static(b"v1")),
                headers: vec![Header::new("h", "a"), Header::new("h", "b")],
            },
            Record {
                timestamp: 1_700_000_000_005,
                key: Some(Bytes::from_static(b"k1")),
                value: None,
                headers: vec![Header {
                    name: Bytes::from_static(b"n"),
                    value: None,
                }],
            },
            Record {
                timestamp: 1_699_999_999_000,
                key: None,
                value: Some(Bytes::from(vec![7u8; 100_000])),
                headers: vec![],
            },
        ]
    }

    fn to_fetched(records: &[Record], base: i64) -> Vec<FetchedRecord> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| FetchedRecord {
                offset: base + i as i64,
                timestamp: r.timestamp,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            })
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in CODECS {
            let options = BatchOptions {
                compression: codec,
                ..BatchOptions::default()
            };
            let bytes = encode_batch(&sample(), &options).unwrap();
            let batches = decode_batches(bytes, &DecodeLimits::default()).unwrap();
            assert_eq!(batches.len(), 1, "{codec}");
            assert_eq!(batches[0].compression, codec);
            assert_eq!(batches[0].records, to_fetched(&sample(), 0), "{codec}");
            assert_eq!(batches[0].last_offset, 2);
            assert_eq!(batches[0].max_timestamp, 1_700_000_000_005);
        }
    }

    #[test]
    fn raw_snappy_decodes_too() {
        let data = b"hello hello hello hello".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(snappy_decompress(&raw, 1 << 20).unwrap(), Bytes::from(data));
    }

    #[test]
    fn decompressed_size_is_bounded() {
        let records = vec![Record {
            value: Some(Bytes::from(vec![0u8; 1 << 20])),
            ..Record::default()
        }];
        for codec in &CODECS[1..] {
            let options = BatchOptions {
                compression: *codec,
                ..BatchOptions::default()
            };
            let bytes = encode_batch(&records, &options).unwrap();
            assert!(bytes.len() < 64 * 1024, "{codec} compresses zeros");
            let limits = DecodeLimits {
                max_decompressed_bytes: 512 * 1024,
                ..DecodeLimits::default()
            };
            let error = decode_batches(bytes, &limits).unwrap_err();
            assert!(
                matches!(error, RecordsError::TooLarge { .. }),
                "{codec}: {error}"
            );
        }
    }

    /// Batches that each decompress within the per-batch bound, many of them in one
    /// response: decoding stops when the response's budget is spent, after at least one.
    #[test]
    fn decompressed_size_is_bounded_per_fetch() {
        let records = vec![Record {
            value: Some(Bytes::from(vec![0u8; 1 << 20])),
            ..Record::default()
        }];
        for codec in &CODECS[1..] {
            let options = BatchOptions {
                compression: *codec,
                ..BatchOptions::default()
            };
            let one = encode_batch(&records, &options).unwrap();
            let mut response = BytesMut::new();
            for _ in 0..100 {
                response.extend_from_slice(&one);
            }
            let limits = DecodeLimits {
                max_decompressed_bytes: 2 << 20,
                max_fetch_decompressed_bytes: (5 << 20) / 2,
            };
            let mut budget = DecompressBudget::new(&limits);
            let (batches, stopped) =
                decode_batches_within(response.clone().freeze(), &mut budget).unwrap();
            assert!(stopped, "{codec}");
            assert_eq!(batches.len(), 2, "{codec}: 2.5 MiB holds two 1 MiB batches");
            // A response whose first batch alone passes the fetch budget still gets it.
            let limits = DecodeLimits {
                max_decompressed_bytes: 2 << 20,
                max_fetch_decompressed_bytes: 1,
            };
            let mut budget = DecompressBudget::new(&limits);
            let (batches, stopped) = decode_batches_within(response.freeze(), &mut budget).unwrap();
            assert_eq!((batches.len(), stopped), (1, true), "{codec}");
        }
    }

    /// Uncompressed batches of records with many empty headers (two bytes each on the wire,
    /// a [`Header`] each decoded): what they decode to counts against the bounds, per batch
    /// and per response, as decompressed bytes do.
    #[test]
    fn decoded_size_is_bounded_per_batch_and_per_fetch() {
        let records: Vec<Record> = (0..1000)
            .map(|_| Record {
                headers: vec![
                    Header {
                        name: Bytes::new(),
                        value: None,
                    };
                    100
                ],
                ..Record::default()
            })
            .collect();
        let one = encode_batch(&records, &BatchOptions::default()).unwrap();
        let decoded = 1000 * decoded_bytes(100);
        assert!(
            decoded > 25 * one.len(),
            "{decoded} from {} bytes",
            one.len()
        );
        let mut response = BytesMut::new();
        for _ in 0..10 {
            response.extend_from_slice(&one);
        }
        // A response's budget of one and a half batches' records: the first batch only.
        let limits = DecodeLimits {
            max_decompressed_bytes: 2 * decoded,
            max_fetch_decompressed_bytes: decoded * 3 / 2,
        };
        let mut budget = DecompressBudget::new(&limits);
        let (batches, stopped) = decode_batches_within(response.freeze(), &mut budget).unwrap();
        assert_eq!((batches.len(), stopped), (1, true));
        assert_eq!(batches[0].records.len(), 1000);
        // A compressed batch after the first whose decompressed and decoded bytes each fit
        // the per-batch bound, and together only the response's budget, is decoded.
        let records: Vec<Record> = (0..100)
            .map(|_| Record {
                value: Some(Bytes::from(vec![0u8; 1000])),
                headers: vec![
                    Header {
                        name: Bytes::new(),
                        value: None,
                    };
                    10
                ],
                ..Record::default()
            })
            .collect();
        let options = BatchOptions {
            compression: Compression::Gzip,
            ..BatchOptions::default()
        };
        let gzipped = encode_batch(&records, &options).unwrap();
        let (inflated, decoded) = (100 * 1000, 100 * decoded_bytes(10));
        let per_batch = inflated.max(decoded) + (16 << 10);
        assert!(per_batch < inflated + decoded);
        let limits = DecodeLimits {
            max_decompressed_bytes: per_batch,
            max_fetch_decompressed_bytes: 4 * per_batch,
        };
        let two = [gzipped.clone(), gzipped].concat();
        let mut budget = DecompressBudget::new(&limits);
        let (batches, stopped) = decode_batches_within(Bytes::from(two), &mut budget).unwrap();
        assert_eq!((batches.len(), stopped), (2, false));
        // One batch decoding to more than the per-batch bound is refused.
        let limits = DecodeLimits {
            max_decompressed_bytes: decoded / 2,
            ..DecodeLimits::default()
        };
        let error = decode_batch(one, &limits).unwrap_err();
        assert!(matches!(error, RecordsError::TooLarge { .. }), "{error}");
    }

    #[test]
    fn trailing_partial_batch_is_ignored() {
        let one = encode_batch(&sample(), &BatchOptions::default()).unwrap();
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one[..one.len() - 10]);
        let batches = decode_batches(two.freeze(), &DecodeLimits::default()).unwrap();
        assert_eq!(batches.len(), 1);
    }

    #[test]
    fn corruption_is_detected_by_crc() {
        let bytes = encode_batch(&sample(), &BatchOptions::default()).unwrap();
        let mut corrupt = BytesMut::from(&bytes[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let error = decode_batches(corrupt.freeze(), &DecodeLimits::default()).unwrap_err();
        assert!(matches!(error, RecordsError::Crc { .. }));
    }

    #[test]
    fn varlong_edges() {
        for value in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut buf = BytesMut::new();
            put_varlong(&mut buf, value);
            assert_eq!(get_varlong(&mut buf.freeze()).unwrap(), value);
        }
    }

    fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from))
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            any::<i64>(),
            arb_bytes(),
            arb_bytes(),
            proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from),
                    arb_bytes(),
                ),
                0..4,
            ),
        )
            .prop_map(|(timestamp, key, value, headers)| Record {
                timestamp,
                key,
                value,
                headers: headers
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip(
            records in proptest::collection::vec(arb_record(), 1..16),
            codec in proptest::sample::select(CODECS.to_vec()),
        ) {
            let options = BatchOptions { compression: codec, ..BatchOptions::default() };
            let bytes = encode_batch(&records, &options).unwrap();
            let batches = decode_batches(bytes, &DecodeLimits::default()).unwrap();
            prop_assert_eq!(batches.len(), 1);
            prop_assert_eq!(&batches[0].records, &to_fetched(&records, 0));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_batches(Bytes::from(bytes), &DecodeLimits::default());
        }

        #[test]
        fn mutated_batches_never_panic(
            index in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            codec in proptest::sample::select(CODECS.to_vec()),
        ) {
            let options = BatchOptions { compression: codec, ..BatchOptions::default() };
            let bytes = encode_batch(&sample(), &options).unwrap();
            let mut mutated = BytesMut::from(&bytes[..]);
            let at = index.index(mutated.len());
            mutated[at] = byte;
            // Re-sign the batch so the mutation reaches the record decoder.
            if at >= CRC_OFFSET + 4 {
                let crc = crc32c::crc32c(&mutated[CRC_OFFSET + 4..]);
                mutated[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
            }
            let _ = decode_batches(mutated.freeze(), &DecodeLimits::default());
        }
    }
}
