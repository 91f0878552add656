//! Reading an HTTP/1.1 response that carries a `text/event-stream`, fed in whatever pieces the
//! socket returns: the response head, a chunked (or unframed) body, lines, and events. Every
//! buffer is bounded, so a misbehaving server costs a subscriber at most a few kilobytes.

use anyhow::{Result, bail};

/// The largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The longest line kept; a longer one spoils its event, which is then counted as oversized.
const MAX_LINE: usize = 4 * 1024;
/// The most data one event may carry.
const MAX_DATA: usize = 4 * 1024;
/// A chunk size has at most this many hex digits (2^60 bytes).
const MAX_SIZE_DIGITS: u32 = 15;

/// The state of one subscription's response.
#[derive(Debug, Default)]
pub struct SseReader {
    head: Vec<u8>,
    body: Option<Framing>,
    line: Vec<u8>,
    line_too_long: bool,
    data: Vec<u8>,
    has_data: bool,
    event_too_large: bool,
    oversized: u64,
    ended: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `transfer-encoding: chunked`.
    Chunked(Chunk),
    /// Everything until the connection closes.
    Unframed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the size line: the value so far, its digit count, and whether an extension
    /// (after `;`) is being skipped.
    Size {
        size: u64,
        digits: u32,
        extension: bool,
    },
    /// Bytes of chunk data left.
    Data(u64),
    /// The line break after a chunk's data.
    DataEnd,
    /// After the last (empty) chunk: the body is complete.
    Last,
}

const NEW_SIZE: Chunk = Chunk::Size {
    size: 0,
    digits: 0,
    extension: false,
};

impl SseReader {
    /// Whether the response head has been accepted (status 200).
    pub fn is_open(&self) -> bool {
        self.body.is_some()
    }

    /// Whether the server ended the body (the last chunk arrived).
    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Events dropped because a line or their data went past the bounds.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// Takes the next bytes from the socket and calls `on_event` with the data of every event
    /// they complete. An error for a response that is not a `200` event stream or is framed
    /// wrongly.
    pub fn feed(&mut self, input: &[u8], on_event: &mut impl FnMut(&[u8])) -> Result<()> {
        let body = if self.body.is_some() {
            input
        } else {
            match self.read_head(input)? {
                Some(rest) => rest,
                None => return Ok(()),
            }
        };
        self.read_body(body, on_event)
    }

    /// Adds to the head; once it is complete, checks it and returns what follows it.
    fn read_head<'a>(&mut self, input: &'a [u8]) -> Result<Option<&'a [u8]>> {
        // The head's end may straddle two reads: look again from a little before the new bytes.
        let search_from = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(input);
        let Some(end) = find(&self.head[search_from..], b"\r\n\r\n").map(|at| search_from + at + 4)
        else {
            if self.head.len() > MAX_HEAD {
                bail!("a response head longer than {MAX_HEAD} bytes");
            }
            return Ok(None);
        };
        let framing = parse_head(&self.head[..end])?;
        let consumed_before = self.head.len() - input.len();
        let rest = &input[end - consumed_before..];
        self.body = Some(framing);
        self.head = Vec::new();
        Ok(Some(rest))
    }

    fn read_body(&mut self, mut input: &[u8], on_event: &mut impl FnMut(&[u8])) -> Result<()> {
        let Some(Framing::Chunked(mut chunk)) = self.body else {
            self.read_text(input, on_event);
            return Ok(());
        };
        while !input.is_empty() {
            chunk = match chunk {
                Chunk::Size {
                    size,
                    digits,
                    extension,
                } => {
                    let byte = input[0];
                    input = &input[1..];
                    match byte {
                        b'\n' if digits == 0 => bail!("a chunk size line without a size"),
                        b'\n' if size == 0 => {
                            self.ended = true;
                            Chunk::Last
                        }
                        b'\n' => Chunk::Data(size),
                        b'\r' => chunk,
                        _ if extension => chunk,
                        b';' => Chunk::Size {
                            size,
                            digits,
                            extension: true,
                        },
                        b' ' | b'\t' => chunk,
                        _ => {
                            let Some(digit) = char::from(byte).to_digit(16) else {
                                bail!("{:?} in a chunk size", char::from(byte));
                            };
                            if digits == MAX_SIZE_DIGITS {
                                bail!("a chunk size with more than {MAX_SIZE_DIGITS} digits");
                            }
                            Chunk::Size {
                                size: size * 16 + u64::from(digit),
                                digits: digits + 1,
                                extension,
                            }
                        }
                    }
                }
                Chunk::Data(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    self.read_text(&input[..take], on_event);
                    input = &input[take..];
                    let left = left - take as u64;
                    if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    }
                }
                Chunk::DataEnd => {
                    let byte = input[0];
                    input = &input[1..];
                    match byte {
                        b'\r' => Chunk::DataEnd,
                        b'\n' => NEW_SIZE,
                        _ => bail!("chunk data longer than its size"),
                    }
                }
                // Trailers and anything after the body are of no interest.
                Chunk::Last => return Ok(()),
            };
        }
        self.body = Some(Framing::Chunked(chunk));
        Ok(())
    }

    /// Splits event-stream text into lines (ended by `\n`, with or without `\r`).
    fn read_text(&mut self, mut input: &[u8], on_event: &mut impl FnMut(&[u8])) {
        while let Some(at) = input.iter().position(|&byte| byte == b'\n') {
            let piece = &input[..at];
            input = &input[at + 1..];
            if self.line.is_empty() && !self.line_too_long {
                self.read_line(piece, on_event);
            } else {
                self.append_to_line(piece);
                let line = std::mem::take(&mut self.line);
                if self.line_too_long {
                    self.line_too_long = false;
                    self.event_too_large = true;
                } else {
                    self.read_line(&line, on_event);
                }
                self.line = line;
                self.line.clear();
            }
        }
        self.append_to_line(input);
    }

    fn append_to_line(&mut self, piece: &[u8]) {
        if self.line.len() + piece.len() > MAX_LINE {
            self.line_too_long = true;
            self.line.clear();
        } else if !self.line_too_long {
            self.line.extend_from_slice(piece);
        }
    }

    /// One line of the stream: a field, a comment, or the blank line that ends an event.
    fn read_line(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.event_too_large {
                self.oversized += 1;
            } else if self.has_data {
                on_event(&self.data);
            }
            self.data.clear();
            self.has_data = false;
            self.event_too_large = false;
            return;
        }
        let (field, value) = match line.iter().position(|&byte| byte == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field != b"data" {
            // Comments (empty field), `id`, `event` and `retry` are not counted.
            return;
        }
        let separator = usize::from(self.has_data);
        if self.data.len() + separator + value.len() > MAX_DATA {
            self.event_too_large = true;
            return;
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }
}

/// Checks the status line and finds how the body is framed.
fn parse_head(head: &[u8]) -> Result<Framing> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(' ');
    let version = words.next().unwrap_or_default();
    let status = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    if status != "200" {
        bail!("the subscription was answered {status_line:?}");
    }
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("transfer-encoding")
            && value
                .split(',')
                .any(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
        {
            chunked = true;
        }
    }
    Ok(if chunked {
        Framing::Chunked(NEW_SIZE)
    } else {
        Framing::Unframed
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

    /// Chunk-frames each piece as a server would.
    fn chunked(pieces: &[&str]) -> String {
        pieces
            .iter()
            .map(|piece| format!("{:x}\r\n{piece}\r\n", piece.len()))
            .collect()
    }

    /// Feeds `input` in slices of `step` bytes and returns the events' data.
    fn events(input: &[u8], step: usize) -> Result<(Vec<String>, SseReader)> {
        let mut reader = SseReader::default();
        let mut seen = Vec::new();
        for piece in input.chunks(step) {
            reader.feed(piece, &mut |data: &[u8]| {
                seen.push(String::from_utf8_lossy(data).into_owned())
            })?;
        }
        Ok((seen, reader))
    }

    #[test]
    fn events_are_read_from_chunks_split_anywhere() -> Result<()> {
        let body = chunked(&[
            "retry:2000\n\n",
            "id:AQIAAg==\ndata:{\"seq\":1}\n\n",
            "id:AQIABA==\ndata:two\n",
            "data: lines\n\n: a comment\n\nevent:delete\ndata\n\n",
            "data:cr lf\r\n\r\n",
        ]);
        let stream = format!("{HEAD}{body}");
        for step in [1, 2, 3, 7, 64, stream.len()] {
            let (seen, reader) = events(stream.as_bytes(), step)?;
            assert_eq!(
                seen,
                ["{\"seq\":1}", "two\nlines", "", "cr lf"],
                "in slices of {step}"
            );
            assert!(reader.is_open());
            assert!(!reader.has_ended());
        }
        Ok(())
    }

    #[test]
    fn chunk_extensions_and_the_last_chunk_are_understood() -> Result<()> {
        let stream = format!("{HEAD}9;name=value\r\ndata:one\n\r\n1\r\n\n\r\n0\r\n\r\n");
        let (seen, reader) = events(stream.as_bytes(), 1)?;
        assert_eq!(seen, ["one"]);
        assert!(reader.has_ended());
        Ok(())
    }

    #[test]
    fn a_body_without_chunks_is_read_until_the_end() -> Result<()> {
        let stream =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata:a\n\ndata:b\n\n";
        let (seen, _) = events(stream.as_bytes(), 5)?;
        assert_eq!(seen, ["a", "b"]);
        Ok(())
    }

    #[test]
    fn the_head_is_open_only_once_complete() -> Result<()> {
        let mut reader = SseReader::default();
        reader.feed(&HEAD.as_bytes()[..HEAD.len() - 1], &mut |_: &[u8]| {})?;
        assert!(!reader.is_open());
        reader.feed(b"\n", &mut |_: &[u8]| {})?;
        assert!(reader.is_open());
        Ok(())
    }

    #[test]
    fn refusals_and_broken_framing_are_errors() {
        let refused = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert!(events(refused.as_bytes(), 4).is_err());
        assert!(events(b"SSH-2.0-OpenSSH\r\n\r\n", 4).is_err());
        let bad_size = format!("{HEAD}zz\r\n");
        assert!(events(bad_size.as_bytes(), 1).is_err());
        let overlong = format!("{HEAD}3\r\ndata\r\n");
        assert!(events(overlong.as_bytes(), 1).is_err());
        let endless_head = "X".repeat(MAX_HEAD + 10);
        assert!(events(endless_head.as_bytes(), 100).is_err());
    }

    #[test]
    fn oversized_events_are_dropped_and_counted() -> Result<()> {
        let long_line = format!("data:{}\n\n", "x".repeat(MAX_LINE + 1));
        let long_data = format!("data:{}\ndata:{}\n\n", "y".repeat(3000), "z".repeat(3000));
        let body = format!("{long_line}{long_data}data:fine\n\n");
        let stream = format!("{HEAD}{}", chunked(&[&body]));
        for step in [1, 100, stream.len()] {
            let (seen, reader) = events(stream.as_bytes(), step)?;
            assert_eq!(seen, ["fine"], "in slices of {step}");
            assert_eq!(reader.oversized(), 2, "in slices of {step}");
        }
        Ok(())
    }
}
