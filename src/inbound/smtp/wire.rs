//! Lines and DATA read off the wire: strict line ends (no smuggling), the
//! RFC 5321 line limits, dot-unstuffing, the data budget held as read.

use super::admission::{Held, over_budget};
use super::*;

/// What reading one line found. The whole line is inspected, including
/// any part of an over-long line that was discarded.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LineRead {
    /// The connection closed before a line feed.
    pub(super) eof: bool,
    /// Longer than the limit; only the first `max` bytes were kept.
    pub(super) too_long: bool,
    /// Ended in CR LF (rather than a bare LF).
    pub(super) ends_crlf: bool,
    /// Held a CR not followed by LF.
    pub(super) bare_cr: bool,
}

impl LineRead {
    /// Ended in CRLF with no other CR or LF in it.
    pub(super) fn clean(&self) -> bool {
        self.ends_crlf && !self.bare_cr
    }
}

/// Reads bytes up to and including `\n` into `buf`, keeping at most `max`
/// bytes; the rest of an over-long line is read and discarded.
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut read = LineRead::default();
    let mut prev = 0u8;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            read.eof = true;
            return Ok(read);
        }
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let seg = &chunk[..take];
        // A bare CR: one followed by anything but LF, here or (a CR that
        // ended the chunk before) at the start of this one.
        if prev == b'\r' && seg[0] != b'\n' {
            read.bare_cr = true;
        }
        if memchr::memchr_iter(b'\r', seg).any(|i| seg.get(i + 1).is_some_and(|&b| b != b'\n')) {
            read.bare_cr = true;
        }
        if done {
            read.ends_crlf = match take {
                1 => prev == b'\r',
                _ => seg[take - 2] == b'\r',
            };
        }
        prev = seg[take - 1];
        let room = max.saturating_sub(buf.len());
        read.too_long |= take > room;
        buf.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(take);
        if done {
            return Ok(read);
        }
    }
}

/// What was wrong with a DATA section (its reply is sent after the final dot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DataFault {
    BareLineEnding,
    LineTooLong,
    TooBig,
    OverBudget,
}

impl DataFault {
    pub(super) fn reply(self, max: usize) -> Reply {
        match self {
            DataFault::BareLineEnding => Reply::new(
                554,
                "5.6.0",
                "bare CR or LF in message: lines must end in CRLF; message refused",
            ),
            DataFault::LineTooLong => Reply::new(
                554,
                "5.6.0",
                "line longer than 1000 octets; message refused",
            ),
            DataFault::TooBig => Reply::new(
                552,
                "5.3.4",
                format!("message exceeds the size limit of {max} octets"),
            ),
            DataFault::OverBudget => over_budget(),
        }
    }
}

/// How much of the [`DataBudget`] a message takes at a time as it grows.
const BUDGET_STEP: usize = 64 * 1024;

/// Reads a DATA section up to the only terminator RFC 5321 allows: the
/// bytes `<CRLF>.<CRLF>`, i.e. a line that is exactly `.` CRLF after a line
/// that ended in CRLF (never after a bare LF, whatever the line's length).
/// Any bare CR or LF makes the whole message invalid; it is read to that
/// terminator and refused (and the session then closed), so one DATA can
/// never become two messages.
pub(super) async fn read_data<'b, R: AsyncBufRead + Unpin>(
    r: &mut R,
    max_size: usize,
    (budget, trusted): (&'b DataBudget, bool),
    line_timeout: Duration,
    deadline: Instant,
) -> std::io::Result<Result<(Vec<u8>, Held<'b>), DataFault>> {
    let mut held = Held { budget, bytes: 0 };
    let mut msg = Vec::new();
    let mut fault = None;
    let mut bare_line_ending = false;
    let mut line = Vec::with_capacity(MAX_TEXT_LINE);
    let mut after_crlf = true; // the DATA command ended in CRLF
    // One timer for the whole DATA, moved on only when it fires: a line
    // that is already buffered costs no timer (a fresh one per line was
    // a quarter of the time a 1 MB message took to read).
    let mut last_line = Instant::now();
    let timer = tokio::time::sleep_until(deadline.min(last_line + line_timeout));
    tokio::pin!(timer);
    loop {
        let read = {
            let next = read_line(r, &mut line, MAX_TEXT_LINE);
            tokio::pin!(next);
            loop {
                tokio::select! {
                    biased;
                    read = &mut next => break read?,
                    // Unconstrained: with tokio's budget spent by a client
                    // that keeps the socket full, a plain timer would wait
                    // as the read does, and never be seen to fire.
                    () = tokio::task::unconstrained(&mut timer) => {
                        let limit = deadline.min(last_line + line_timeout);
                        if Instant::now() >= limit {
                            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "DATA timeout"));
                        }
                        timer.as_mut().reset(limit);
                    }
                }
            }
        };
        last_line = Instant::now();
        // Checked here too: a client that never lets the read wait would
        // otherwise never have the timer looked at (tokio's budget makes
        // both the read and the timer wait alike).
        if last_line >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "DATA timeout",
            ));
        }
        if read.eof {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed in DATA",
            ));
        }
        if after_crlf && !read.too_long && line == b".\r\n" {
            return Ok(match (bare_line_ending, fault) {
                (true, _) => Err(DataFault::BareLineEnding),
                (false, Some(f)) => Err(f),
                (false, None) => Ok((msg, held)),
            });
        }
        after_crlf = read.ends_crlf;
        bare_line_ending |= !read.clean();
        if read.too_long {
            fault.get_or_insert(DataFault::LineTooLong);
        }
        if bare_line_ending || fault.is_some() {
            continue;
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        if msg.len() + unstuffed.len() > max_size {
            fault = Some(DataFault::TooBig);
            msg = Vec::new();
            // Nothing more is kept of this message: its bytes are free.
            budget.give_back(std::mem::take(&mut held.bytes));
            continue;
        }
        // The budget is taken ahead, a step at a time, not line by line
        // (one shared counter that every session updated at each line).
        let need = (msg.len() + unstuffed.len()).saturating_sub(held.bytes);
        let ahead = need.max(BUDGET_STEP.min(max_size.saturating_sub(held.bytes)));
        if need > 0
            && !budget.take(&mut held.bytes, ahead, trusted)
            && !budget.take(&mut held.bytes, need, trusted)
        {
            fault = Some(DataFault::OverBudget);
            msg = Vec::new();
            budget.give_back(std::mem::take(&mut held.bytes));
            continue;
        }
        msg.extend_from_slice(unstuffed);
    }
}
