//! Reading the client's bytes with bounds: a command line of at most so many bytes, a
//! message to the lone dot of at most `bounces.max_size`, each read within a timeout.
//!
//! Nothing here grows without a bound: a line is read in pieces of at most a fixed size,
//! the message keeps at most `max_size` bytes (the rest is read and dropped, so the reply
//! comes where the client expects it), and a command line that never ends is given up on.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// A command line, as read.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandLine {
    /// The line, its CRLF (or bare LF) removed.
    Line(Vec<u8>),
    /// Longer than the cap; read to its end and dropped.
    TooLong,
    /// Longer than the cap by far, without an end in sight: the session should close.
    Flood,
    /// The client closed the connection.
    Closed,
}

/// A message after DATA, as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Data {
    /// The message, dot-unstuffed, without the final dot line.
    Message(Vec<u8>),
    /// Over `max_size`: read to the final dot and dropped.
    TooBig,
    /// The client closed the connection before the final dot.
    Closed,
}

/// How much of an over-long command line is read and dropped before giving up on it.
const DISCARD_MAX: usize = 64 * 1024;
/// The piece a message line is read in (a line may be longer: it is then several pieces).
const PIECE: usize = 8 * 1024;

/// Reads up to and including the next `\n`, or `cap` bytes, whichever comes first, into
/// `out` (cleared first), within `timeout`. Returns the bytes read: 0 at end of input.
async fn read_piece<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
    cap: usize,
    timeout: Duration,
) -> std::io::Result<usize> {
    out.clear();
    tokio::time::timeout(timeout, async {
        loop {
            let buf = reader.fill_buf().await?;
            if buf.is_empty() {
                return Ok(out.len());
            }
            let room = cap - out.len();
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => (i + 1, true),
                _ => (buf.len().min(room), buf.len() >= room),
            };
            out.extend_from_slice(&buf[..take]);
            reader.consume(take);
            if done {
                return Ok(out.len());
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no input in time"))?
}

/// Reads one command line of at most `max` bytes (CRLF included).
pub async fn read_command<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    timeout: Duration,
) -> std::io::Result<CommandLine> {
    let mut line = Vec::with_capacity(128);
    if read_piece(reader, &mut line, max, timeout).await? == 0 {
        return Ok(CommandLine::Closed);
    }
    if line.ends_with(b"\n") {
        strip_eol(&mut line);
        return Ok(CommandLine::Line(line));
    }
    // Too long: drop the rest of it, within reason.
    let mut dropped = 0;
    let mut piece = Vec::with_capacity(PIECE);
    while dropped < DISCARD_MAX {
        match read_piece(reader, &mut piece, PIECE, timeout).await? {
            0 => return Ok(CommandLine::Closed),
            _ if piece.ends_with(b"\n") => return Ok(CommandLine::TooLong),
            n => dropped += n,
        }
    }
    Ok(CommandLine::Flood)
}

/// Reads a message to the lone dot (RFC 5321 §4.1.1.4), undoing dot-stuffing, keeping at
/// most `max_size` bytes.
pub async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max_size: usize,
    timeout: Duration,
) -> std::io::Result<Data> {
    let mut message = Vec::new();
    let mut too_big = false;
    let mut piece = Vec::with_capacity(PIECE);
    // Whether the next piece starts a line (only there do a dot and the end mean anything).
    let mut line_start = true;
    loop {
        if read_piece(reader, &mut piece, PIECE, timeout).await? == 0 {
            return Ok(Data::Closed);
        }
        let complete = piece.ends_with(b"\n");
        if line_start && complete && (piece == b".\r\n" || piece == b".\n") {
            break;
        }
        let content = if line_start && piece.starts_with(b".") {
            &piece[1..]
        } else {
            &piece[..]
        };
        if !too_big {
            if message.len() + content.len() > max_size {
                too_big = true;
                message = Vec::new();
            } else {
                message.extend_from_slice(content);
            }
        }
        line_start = complete;
    }
    Ok(if too_big {
        Data::TooBig
    } else {
        Data::Message(message)
    })
}

fn strip_eol(line: &mut Vec<u8>) {
    if line.ends_with(b"\n") {
        line.pop();
    }
    if line.ends_with(b"\r") {
        line.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    async fn commands(input: &[u8], max: usize) -> Vec<CommandLine> {
        let mut reader = tokio::io::BufReader::with_capacity(16, input);
        let mut out = Vec::new();
        loop {
            let line = read_command(&mut reader, max, T).await.unwrap();
            let closed = line == CommandLine::Closed;
            out.push(line);
            if closed {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn command_lines_are_split_and_an_over_long_one_is_dropped_whole() {
        let long = format!("NOOP {}\r\nQUIT\r\n", "x".repeat(100));
        assert_eq!(
            commands(format!("EHLO a\r\nRSET\n{long}").as_bytes(), 32).await,
            [
                CommandLine::Line(b"EHLO a".to_vec()),
                CommandLine::Line(b"RSET".to_vec()),
                CommandLine::TooLong,
                CommandLine::Line(b"QUIT".to_vec()),
                CommandLine::Closed,
            ]
        );
        let endless = "x".repeat(DISCARD_MAX + 2 * PIECE);
        assert_eq!(
            commands(endless.as_bytes(), 32).await[0],
            CommandLine::Flood
        );
    }

    async fn data(input: &[u8], max: usize) -> (Data, Vec<u8>) {
        let mut reader = tokio::io::BufReader::with_capacity(7, input);
        let d = read_data(&mut reader, max, T).await.unwrap();
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut rest)
            .await
            .unwrap();
        (d, rest)
    }

    #[tokio::test]
    async fn a_message_ends_at_the_lone_dot_and_is_unstuffed() {
        let (d, rest) = data(b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n", 1000).await;
        assert_eq!(d, Data::Message(b"Subject: x\r\n\r\n.dot\r\n".to_vec()));
        assert_eq!(
            rest, b"QUIT\r\n",
            "the next command is left for the session"
        );
        let (d, _) = data(b"a.\r\n. \r\n.x\r\n.\n", 1000).await;
        assert_eq!(d, Data::Message(b"a.\r\n \r\nx\r\n".to_vec()));
        let long_line = format!("{}\r\n.\r\n", "y".repeat(3 * PIECE));
        let (d, _) = data(long_line.as_bytes(), 4 * PIECE).await;
        assert_eq!(
            d,
            Data::Message(format!("{}\r\n", "y".repeat(3 * PIECE)).into_bytes())
        );
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_read_to_its_end_and_dropped() {
        let (d, rest) = data(b"0123456789\r\n0123456789\r\n.\r\nQUIT\r\n", 20).await;
        assert_eq!(d, Data::TooBig);
        assert_eq!(rest, b"QUIT\r\n");
        let (d, _) = data(b"0123456789\r\n.\r\n", 12).await;
        assert_eq!(
            d,
            Data::Message(b"0123456789\r\n".to_vec()),
            "exactly the limit"
        );
        let (d, _) = data(b"no end\r\n", 100).await;
        assert_eq!(d, Data::Closed);
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        let (_client, server) = tokio::io::duplex(64);
        let mut reader = tokio::io::BufReader::new(server);
        let err = read_command(&mut reader, 512, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    }
}
