//! The text a cleartext-signed message (RFC 9580 §7) signs, read the way
//! Sequoia's armor reader reads it, for the census to precheck the
//! signatures over before Sequoia's verifier reads the message again.
//!
//! Sequoia turns the text into a literal data packet line by line through
//! its buffered readers: 10 MiB of empty lines cost it over 100 ms, twice
//! (census and verifier), which anyone may send where inline PGP is on.
//! This reads the same text in one pass over the bytes. It is strict where
//! Sequoia is lenient (armor headers that are not `Key: value`, text after
//! the first line, quoting prefixes): such a message is refused as
//! malformed, which no client's output is. A unit test holds it to
//! Sequoia's literal over line ends, dash-escapes, Unicode dashes and
//! trailing whitespace.

/// The first line of a cleartext-signed message.
const HEADER: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
/// The line that starts its signature block.
const SIGNATURE_LABEL: &[u8] = b"-----BEGIN PGP SIGNATURE-----";

/// The signed text of a cleartext-signed message, and where its signature
/// block's line starts; `None` where Sequoia's reading could differ.
pub(super) fn signed_text(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut rest = bytes.strip_prefix(HEADER)?;
    rest = strip_line_end(rest)?;
    // Armor headers (`Hash: SHA512`), each `Key: value`, then a line of
    // whitespace alone.
    loop {
        let (line, next) = split_line(rest)?;
        rest = next;
        let line = std::str::from_utf8(line).ok()?;
        if line.trim_start().is_empty() {
            break;
        }
        if !line.contains(": ") {
            return None;
        }
    }
    let start = bytes.len() - rest.len();
    let body = rest;
    // Lines are copied as they are, in runs, except those Sequoia changes:
    // a dash-escape (`- `) taken off, trailing spaces and tabs taken off.
    // Octet by octet, not a search per line: a text of empty lines is
    // what an attacker sends.
    let mut text = Vec::with_capacity(body.len());
    let mut run = 0;
    let mut block = None;
    let mut i = 0;
    while i < body.len() {
        let line_start = i;
        let mut from = i;
        if body[i] == b'-' || body[i] >= 0xC0 {
            let line = &body[i..];
            let dashes = dash_prefix(line);
            if dashes > 2 && line[dashes..].starts_with(b"BEGIN PGP SIGNATURE") {
                // Where the text ends for Sequoia. The census reads the
                // signatures with the plain armor reader, which reads
                // anything after the label otherwise than Sequoia's
                // cleartext reader does (as a header line): only the label
                // alone is read here.
                let end = memchr::memchr(b'\n', line).map_or(line.len(), |n| n + 1);
                let rest = line[..end].strip_prefix(SIGNATURE_LABEL)?;
                if !rest.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                block = Some(line_start);
                break;
            }
            if line.starts_with(b"- ") {
                from += 2;
                i += 2;
            }
        }
        while i < body.len() && body[i] != b'\n' {
            i += 1;
        }
        if i == body.len() {
            break; // a last line without its line end: no signature block
        }
        let nl = i;
        i += 1;
        let crlf = nl > from && body[nl - 1] == b'\r';
        let to = nl - usize::from(crlf);
        let mut end = to;
        while end > from && matches!(body[end - 1], b' ' | b'\t') {
            end -= 1;
        }
        if from != line_start || end != to {
            text.extend_from_slice(&body[run..line_start]);
            text.extend_from_slice(&body[from..end]);
            text.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            run = i;
        }
    }
    let block = block?; // no signature block
    text.extend_from_slice(&body[run..block]);
    // The line end before the signature block is not signed.
    if text.pop().is_some() && text.last() == Some(&b'\r') {
        text.pop();
    }
    Some((text, start + block))
}

/// `line` without its `\r\n` or `\n` (it must have one, after optional
/// whitespace).
fn strip_line_end(rest: &[u8]) -> Option<&[u8]> {
    let (line, next) = split_line(rest)?;
    line.iter().all(u8::is_ascii_whitespace).then_some(next)
}

/// The first line of `data` with its `\n`, and what follows; `None` where
/// no `\n` ends it.
fn split_line(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(b'\n', data)? + 1;
    Some(data.split_at(end))
}

/// The length in octets of the dashes (Unicode's dash punctuation, as
/// Sequoia counts them) that start `line`, decoded one character at a
/// time (a search over the line for each would cost as much as the line).
fn dash_prefix(line: &[u8]) -> usize {
    let mut n = 0;
    loop {
        let rest = &line[n..];
        let len = match rest.first() {
            Some(b'-') => 1,
            Some(&b) if b >= 0xF0 => 4,
            Some(&b) if b >= 0xE0 => 3,
            Some(&b) if b >= 0xC0 => 2,
            _ => return n,
        };
        let c = rest
            .get(..len)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.chars().next());
        let dash = c.is_some_and(|c| {
            matches!(
                c,
                '\u{002D}' | '\u{058A}' | '\u{05BE}' | '\u{1400}' | '\u{1806}' | '\u{2010}'
                    ..='\u{2015}'
                        | '\u{2E17}'
                        | '\u{2E1A}'
                        | '\u{2E3A}'
                        | '\u{2E3B}'
                        | '\u{2E40}'
                        | '\u{301C}'
                        | '\u{3030}'
                        | '\u{30A0}'
                        | '\u{FE31}'
                        | '\u{FE32}'
                        | '\u{FE58}'
                        | '\u{FE63}'
                        | '\u{FF0D}'
            )
        });
        if !dash {
            return n;
        }
        n += len;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use openpgp::Packet;
    use openpgp::parse::{PacketParserBuilder, PacketParserResult, Parse};
    use sequoia_openpgp as openpgp;

    use super::signed_text;

    /// Sequoia's literal data for a cleartext-signed message, or `None`.
    fn sequoias(bytes: &[u8]) -> Option<Vec<u8>> {
        let mut ppr = PacketParserBuilder::from_bytes(bytes)
            .ok()?
            .process_csf_message(true)
            .build()
            .ok()?;
        while let PacketParserResult::Some(mut pp) = ppr {
            if let Packet::Literal(_) = pp.packet {
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut pp, &mut body).ok()?;
                return Some(body);
            }
            ppr = pp.recurse().ok()?.1;
        }
        None
    }

    /// The signatures Sequoia's cleartext reader finds.
    fn sequoias_signatures(bytes: &[u8]) -> Vec<openpgp::packet::Signature> {
        let mut ppr = PacketParserBuilder::from_bytes(bytes)
            .unwrap()
            .process_csf_message(true)
            .build()
            .unwrap();
        let mut sigs = Vec::new();
        while let PacketParserResult::Some(pp) = ppr {
            let (packet, next) = pp.recurse().unwrap();
            if let Packet::Signature(sig) = packet {
                sigs.push(sig);
            }
            ppr = next;
        }
        sigs
    }

    #[test]
    fn the_signed_text_is_sequoias() {
        let key = openpgp::cert::CertBuilder::general_purpose(Some("P <p@example.org>"))
            .generate()
            .unwrap()
            .0;
        let policy = openpgp::policy::StandardPolicy::new();
        let signer = || {
            key.keys()
                .with_policy(&policy, None)
                .secret()
                .for_signing()
                .next()
                .unwrap()
                .key()
                .clone()
                .into_keypair()
                .unwrap()
        };
        let clearsign = |text: &[u8]| {
            let mut out = Vec::new();
            let m = openpgp::serialize::stream::Message::new(&mut out);
            let mut s = openpgp::serialize::stream::Signer::new(m, signer())
                .unwrap()
                .cleartext()
                .build()
                .unwrap();
            s.write_all(text).unwrap();
            s.finalize().unwrap();
            out
        };
        let pieces: [&[u8]; 17] = [
            b"a",
            b"\n",
            b"\r\n",
            b"\r",
            b" ",
            b"\t",
            b"-",
            b"- ",
            b"\xe2\x80\x93", // an en dash
            b"BEGIN PGP SIGNATURE",
            b"From ",
            b"\xff",
            b"\xd6\x8a",         // an Armenian hyphen
            b"\xe2\x80",         // an en dash cut short
            b"\xe2\x82\xac",     // a euro sign
            b"\xf0\x9f\x98\x80", // a four-octet character
            b"---",
        ];
        let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
        for i in 0..6000usize {
            let mut x = i;
            let mut text = Vec::new();
            for _ in 0..(i % 11) {
                text.extend_from_slice(pieces[x % pieces.len()]);
                x = x / pieces.len() + i;
            }
            texts.push(text);
        }
        texts.push(b"\n".repeat(100_000));
        let mut compared = 0;
        let mut unread = 0;
        for text in &texts {
            let signed = clearsign(text);
            // As Sequoia writes it, and with the line ends made CRLF (as
            // a mail carries it).
            let crlf = String::from_utf8_lossy(&signed)
                .replace("\r\n", "\n")
                .replace('\n', "\r\n")
                .into_bytes();
            let hand_made: Vec<u8> = [
                &b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"[..],
                text,
                b"\n-----BEGIN PGP SIGNATURE-----\n",
                &signed[memchr::memmem::find(&signed, b"-----BEGIN PGP SIGNATURE-----\n")
                    .unwrap()
                    + 30..],
            ]
            .concat();
            for bytes in [&signed, &crlf, &hand_made] {
                let ours = signed_text(bytes);
                if let Some((_, at)) = &ours {
                    assert_eq!(bytes[*at - 1], b'\n', "the block starts a line");
                }
                let theirs = sequoias(bytes);
                match (ours.map(|(t, _)| t), theirs) {
                    (Some(o), Some(t)) => {
                        assert_eq!(o, t, "{:?}", String::from_utf8_lossy(bytes));
                        compared += 1;
                    }
                    // Refused here: never a text Sequoia reads otherwise,
                    // only where the block's framing is odd.
                    (None, _) => {}
                    // Sequoia reads none: its verifier refuses the mail
                    // as malformed after the precheck (odd texts only).
                    (Some(_), None) => unread += 1,
                }
            }
        }
        assert!(compared > 3 * texts.len() * 9 / 10, "{compared} compared");
        // The signature block's line: the label alone (trailing whitespace
        // allowed), never anything Sequoia's cleartext reader would read
        // otherwise than the census's armor reader.
        let signed = clearsign(b"text\n");
        let label = b"-----BEGIN PGP SIGNATURE-----\n";
        let at = memchr::memmem::find(&signed, label).unwrap();
        let with_line = |line: &[u8]| [&signed[..at], line, &signed[at + label.len()..]].concat();
        for (line, read) in [
            (&b"-----BEGIN PGP SIGNATURE-----\n"[..], true),
            (b"-----BEGIN PGP SIGNATURE-----  \t\n", true),
            (b"-----BEGIN PGP SIGNATURE-----\r\n", true),
            (b"-----BEGIN PGP SIGNATURE----- X: y\n", false),
            (b"-----BEGIN PGP SIGNATURE-----X: y\n", false),
            (b"---BEGIN PGP SIGNATURE---\n", false),
            (b"\xe2\x80\x93-BEGIN PGP SIGNATURE-----\n", false),
        ] {
            let bytes = with_line(line);
            let ours = signed_text(&bytes);
            assert_eq!(ours.is_some(), read, "{:?}", String::from_utf8_lossy(line));
            if let Some((_, block)) = ours {
                // The census reads the very signatures Sequoia verifies.
                let theirs = sequoias_signatures(&bytes);
                let census = crate::crypto::census::census_detached(
                    &bytes[block..],
                    &crate::crypto::Keyring::default(),
                    chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                )
                .unwrap();
                assert_eq!(census.read, theirs, "{:?}", String::from_utf8_lossy(line));
            }
        }
        assert!(unread < texts.len() / 10, "{unread} unread by Sequoia");
    }
}
