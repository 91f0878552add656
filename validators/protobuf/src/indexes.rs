//! Confluent's message indexes: which message of the schema's file a framed message is,
//! written after the schema registry prefix as an array of zigzag varints (its length, then
//! each index), with the common `[0]` (the file's first message) shortened to one `0` byte.
//! The same layout as confluent-kafka's `ProtobufSerializer` writes and Zilla's protobuf
//! model reads; Zilla writes it whatever the catalog, so messages of catalogs without a
//! prefix (`inline`, `filesystem`) carry it too.

/// The most indexes one message may name: deeper nesting than this is not a schema anyone
/// writes, and the bound keeps a hostile array from costing more than a few bytes of work.
pub const MAX_INDEXES: usize = 64;

/// Appends the index array naming `indexes` to `out`.
pub fn encode(indexes: &[i32], out: &mut Vec<u8>) {
    if indexes == [0] {
        out.push(0);
        return;
    }
    write_zigzag(i64::try_from(indexes.len()).unwrap_or(i64::MAX), out);
    for index in indexes {
        write_zigzag(i64::from(*index), out);
    }
}

/// Reads the index array at the start of `data`: the indexes and the message after them.
pub fn decode(data: &[u8]) -> Result<(Vec<i32>, &[u8]), String> {
    let (count, mut rest) = read_zigzag(data)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|count| *count <= MAX_INDEXES)
        .ok_or_else(|| format!("message index array of {count} entries"))?;
    let mut indexes = Vec::with_capacity(count);
    for _ in 0..count {
        let (index, after) = read_zigzag(rest)?;
        let index = i32::try_from(index)
            .ok()
            .filter(|index| *index >= 0)
            .ok_or_else(|| format!("message index {index} out of range"))?;
        indexes.push(index);
        rest = after;
    }
    Ok((indexes, rest))
}

fn write_zigzag(value: i64, out: &mut Vec<u8>) {
    let mut value = ((value << 1) ^ (value >> 63)) as u64;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_zigzag(data: &[u8]) -> Result<(i64, &[u8]), String> {
    let mut value: u64 = 0;
    for (position, byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * position);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Ok((decoded, &data[position + 1..]));
        }
    }
    Err("no message indexes (a truncated or overlong varint)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layouts_match_confluent() {
        let encoded = |indexes: &[i32]| {
            let mut out = Vec::new();
            encode(indexes, &mut out);
            out
        };
        assert_eq!(encoded(&[0]), [0]);
        assert_eq!(encoded(&[1]), [2, 2]);
        assert_eq!(encoded(&[1, 0]), [4, 2, 0]);
        assert_eq!(encoded(&[64]), [2, 0x80, 0x01]);
        // Zilla's and Confluent's readers take a zero count for `[0]`.
        assert_eq!(decode(&[0, 9]).unwrap(), (vec![0], &[9][..]));
        assert_eq!(decode(&[4, 2, 0, 7]).unwrap(), (vec![1, 0], &[7][..]));
    }

    #[test]
    fn hostile_arrays_are_refused() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0x80]).is_err(), "truncated varint");
        assert!(decode(&[0xff; 11]).is_err(), "overlong varint");
        assert!(decode(&[1]).is_err(), "negative count");
        assert!(decode(&[2, 1]).is_err(), "negative index");
        assert!(decode(&[4, 2]).is_err(), "missing index");
        assert!(decode(&[0xfe, 0x01]).is_err(), "count of 127");
        assert!(
            decode(&[2, 0xfe, 0xff, 0xff, 0xff, 0x1f]).is_err(),
            "beyond i32"
        );
    }

    proptest! {
        #[test]
        fn round_trips(indexes in proptest::collection::vec(0..i32::MAX, 1..MAX_INDEXES), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut out = Vec::new();
            encode(&indexes, &mut out);
            out.extend_from_slice(&tail);
            let (decoded, rest) = decode(&out).unwrap();
            prop_assert_eq!(decoded, indexes);
            prop_assert_eq!(rest, &tail[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = decode(&data);
        }
    }
}
