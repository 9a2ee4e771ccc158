//! MIME structure checks: only a root-level RFC 3156 `multipart/signed` is
//! taken, split exactly (RFC 2046 delimiters) into the signed bytes and the
//! detached signature.

use mail_parser::{HeaderName, MessageParser, MimeHeaders};

use crate::secret::Secret;

use super::rejection::Rejection;

/// The parts of a PGP/MIME signed mail that the checks need.
#[derive(Debug)]
pub struct SignedMail {
    /// The single From address, lowercased.
    pub from: String,
    /// The outer Subject (unsigned; used only when no protected Subject is signed).
    pub outer_subject: Option<String>,
    /// The first body part, byte for byte as signed, MIME headers included.
    pub signed_part: Secret,
    /// The second body part, decoded: the detached signature.
    pub signature: Vec<u8>,
}

/// A mail as it arrives: its single From, its outer Subject, and the one
/// root-level protection that counts.
#[derive(Debug)]
pub struct Incoming {
    /// The single From address, lowercased.
    pub from: String,
    /// The outer Subject (unsigned; used only when no protected Subject is signed).
    pub outer_subject: Option<String>,
    /// The Message-IDs of In-Reply-To and the last of References
    /// (unsigned, without angle brackets, at most [`MAX_REFERENCES`]):
    /// which thread a reply belongs to.
    pub references: Vec<String>,
    pub body: Protected,
}

/// Message-IDs read from In-Reply-To and References.
pub const MAX_REFERENCES: usize = 32;

/// What the root of the mail is.
#[derive(Debug)]
pub enum Protected {
    /// RFC 3156 `multipart/signed`.
    Signed(SignedEntity),
    /// RFC 3156 `multipart/encrypted`: the OpenPGP message, as sent.
    Encrypted(Vec<u8>),
    /// A plain-text body that is a cleartext-signed (inline PGP) block.
    Inline(Vec<u8>),
    /// S/MIME `application/pkcs7-mime; smime-type=enveloped-data`: the
    /// CMS (DER), encrypted to the list's S/MIME certificate.
    SmimeEnveloped(Vec<u8>),
}

const INLINE_BEGIN: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";

/// A `multipart/signed` entity split into what was signed and the signature.
#[derive(Debug)]
pub struct SignedEntity {
    /// The first body part, byte for byte as signed, MIME headers included.
    pub signed_part: Secret,
    /// The second body part, decoded: the detached signature.
    pub signature: Vec<u8>,
    /// An S/MIME signature (`application/pkcs7-signature`, CMS), not OpenPGP.
    pub smime: bool,
}

pub use crate::config::MimeLimits;

/// Parses `raw` and holds it to `limits`: first a linear scan that counts
/// header fields and MIME delimiters without building anything (so a mail
/// of millions of tiny parts or headers is refused before the parser
/// allocates for each), then the exact checks on the parsed tree.
fn parse_bounded<'a>(
    raw: &'a [u8],
    limits: &MimeLimits,
    unreadable: &'static str,
) -> Result<mail_parser::Message<'a>, Rejection> {
    prescan(raw, limits)?;
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or(Rejection::Malformed(unreadable))?;
    check_limits(&msg, limits)?;
    Ok(msg)
}

fn over(what: &str, limit: usize, field: &str) -> Rejection {
    Rejection::Limit(format!("{what} over the limit of {limit} (policy.{field})"))
}

/// Counts, in one pass and without allocating per line, the header fields
/// of each header block (the mail's, each part's, each attached message's)
/// and the opening delimiters of the boundaries the mail declares. It never
/// counts more than the parser would find, so it refuses nothing the exact
/// checks would accept.
fn prescan(raw: &[u8], limits: &MimeLimits) -> Result<(), Rejection> {
    // The boundaries declared anywhere (`boundary=` parameters), found from
    // each `=` (rare in armor, unlike the letters of "boundary").
    let mut boundaries: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    const NAME: &[u8] = b"boundary";
    for eq in memchr::memchr_iter(b'=', raw) {
        if eq < NAME.len() || !raw[eq - NAME.len()..eq].eq_ignore_ascii_case(NAME) {
            continue;
        }
        let start = eq + 1;
        let value = match raw.get(start) {
            Some(b'"') => {
                let rest = &raw[start + 1..];
                &rest[..rest.iter().position(|b| *b == b'"').unwrap_or(rest.len())]
            }
            _ => {
                let rest = &raw[start..];
                let end = rest
                    .iter()
                    .position(|b| matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n'))
                    .unwrap_or(rest.len());
                &rest[..end]
            }
        };
        if !value.is_empty() {
            boundaries.insert(value);
            if boundaries.len() > limits.max_parts {
                return Err(over(
                    "number of MIME parts",
                    limits.max_parts,
                    "mime_max_parts",
                ));
            }
        }
    }
    let (mut in_header, mut fields, mut field_size, mut message_follows) = (true, 0, 0, false);
    let mut delimiters = 0;
    // Line by line through header blocks; in a body, from one line that
    // starts with "--" to the next (a 25 MiB body is a few memchr calls).
    let mut pos = 0;
    while pos < raw.len() {
        if !in_header && !raw[pos..].starts_with(b"--") {
            match memchr::memmem::find(&raw[pos..], b"\n--") {
                Some(i) => pos += i + 1,
                None => break,
            }
        }
        let end = memchr::memchr(b'\n', &raw[pos..]).map_or(raw.len(), |i| pos + i);
        let line = &raw[pos..end];
        pos = end + 1;
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        if in_header {
            if text.is_empty() {
                // An attached message's own header follows its part's.
                (in_header, fields, field_size) = (message_follows, 0, 0);
                message_follows = false;
            } else if text[0] == b' ' || text[0] == b'\t' {
                field_size += line.len();
            } else {
                fields += 1;
                field_size = line.len();
                if fields > limits.max_headers {
                    return Err(over(
                        "header fields in one part",
                        limits.max_headers,
                        "mime_max_headers",
                    ));
                }
                if starts_with_ci(text, b"content-type:")
                    && find_ci(text, b"message/rfc822").is_some()
                {
                    message_follows = true;
                }
            }
            if field_size > limits.max_header_size {
                return Err(over(
                    "size of a header field (octets)",
                    limits.max_header_size,
                    "mime_max_header_size",
                ));
            }
        } else if let Some(rest) = text.strip_prefix(b"--") {
            let rest = rest.trim_ascii_end();
            if boundaries.contains(rest) {
                delimiters += 1;
                if delimiters > limits.max_parts {
                    return Err(over(
                        "number of MIME parts",
                        limits.max_parts,
                        "mime_max_parts",
                    ));
                }
                (in_header, fields, field_size, message_follows) = (true, 0, 0, false);
            }
        }
    }
    Ok(())
}

fn starts_with_ci(hay: &[u8], prefix: &[u8]) -> bool {
    hay.len() >= prefix.len() && hay[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The first position of `needle` (ASCII, any case) in `hay`. Jumps from
/// one occurrence of its first byte (either case) to the next with
/// `memchr2`, so a 25 MiB body is scanned at memory speed.
fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (lower, upper) = (
        needle[0].to_ascii_lowercase(),
        needle[0].to_ascii_uppercase(),
    );
    memchr::memchr2_iter(lower, upper, hay).find(|&at| starts_with_ci(&hay[at..], needle))
}

/// Walks the part tree without recursion, so a deep mail cannot exhaust the
/// stack, and stops at the first limit passed.
fn check_limits(msg: &mail_parser::Message<'_>, limits: &MimeLimits) -> Result<(), Rejection> {
    let over = |what: &str, limit: usize, field: &str| Err(over(what, limit, field));
    let mut parts = 0usize;
    // (message, part index, depth)
    let mut stack = vec![(msg, 0usize, 1usize)];
    while let Some((m, index, depth)) = stack.pop() {
        if depth > limits.max_depth {
            return over("MIME nesting", limits.max_depth, "mime_max_depth");
        }
        parts += 1;
        if parts > limits.max_parts {
            return over("number of MIME parts", limits.max_parts, "mime_max_parts");
        }
        let Some(part) = m.parts.get(index) else {
            continue;
        };
        if part.headers.len() > limits.max_headers {
            return over(
                "header fields in one part",
                limits.max_headers,
                "mime_max_headers",
            );
        }
        if part
            .headers
            .iter()
            .any(|h| h.offset_end.saturating_sub(h.offset_field) as usize > limits.max_header_size)
        {
            return over(
                "size of a header field (octets)",
                limits.max_header_size,
                "mime_max_header_size",
            );
        }
        match &part.body {
            mail_parser::PartType::Multipart(children) => {
                // Children always come after their parent: a malformed
                // index cannot make the walk loop.
                stack.extend(
                    children
                        .iter()
                        .map(|c| *c as usize)
                        .filter(|c| *c > index)
                        .map(|c| (m, c, depth + 1)),
                );
            }
            mail_parser::PartType::Message(inner) => stack.push((inner, 0, depth + 1)),
            _ => {}
        }
    }
    Ok(())
}

/// Splits a raw mail into its signed part and signature, or says why not.
pub fn parse_signed(raw: &[u8]) -> Result<SignedMail, Rejection> {
    let incoming = parse(raw, &MimeLimits::default())?;
    match incoming.body {
        Protected::Signed(e) => Ok(SignedMail {
            from: incoming.from,
            outer_subject: incoming.outer_subject,
            signed_part: e.signed_part,
            signature: e.signature,
        }),
        Protected::Encrypted(_) | Protected::Inline(_) | Protected::SmimeEnveloped(_) => {
            Err(Rejection::Unsigned)
        }
    }
}

/// Reads the From, the outer Subject and the root-level PGP/MIME structure.
/// Only the root counts: a signed or encrypted part anywhere else is not
/// looked for, so nothing unsigned around it can pass for signed.
pub fn parse(raw: &[u8], limits: &MimeLimits) -> Result<Incoming, Rejection> {
    let msg = parse_bounded(raw, limits, "not a parseable RFC 5322 message")?;
    let from = single_from(&msg)?;
    let outer_subject = msg.subject().map(sanitize_subject);
    let ids = |v: &mail_parser::HeaderValue<'_>| -> Vec<String> {
        v.as_text_list()
            .unwrap_or_default()
            .iter()
            .map(|id| {
                id.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
            .filter(|id| !id.is_empty())
            .collect()
    };
    // The parent (In-Reply-To) first, then the nearest ancestors: the
    // last of References, which lists the oldest first.
    let mut references = ids(msg.in_reply_to());
    references.truncate(MAX_REFERENCES);
    let ancestors = ids(msg.references());
    let room = MAX_REFERENCES - references.len();
    references.extend_from_slice(&ancestors[ancestors.len().saturating_sub(room)..]);
    let root = msg.root_part();
    let is_multipart = |sub: &str| {
        root.content_type().is_some_and(|c| {
            c.ctype().eq_ignore_ascii_case("multipart")
                && c.subtype().is_some_and(|s| s.eq_ignore_ascii_case(sub))
        })
    };
    let plain = root.content_type().is_none_or(|c| {
        c.ctype().eq_ignore_ascii_case("text")
            && c.subtype().is_none_or(|s| s.eq_ignore_ascii_case("plain"))
    });
    let enveloped = root.content_type().is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case("application")
            && c.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("pkcs7-mime") || s.eq_ignore_ascii_case("x-pkcs7-mime")
            })
            && c.attribute("smime-type").is_none_or(|t| {
                t.eq_ignore_ascii_case("enveloped-data")
                    || t.eq_ignore_ascii_case("authEnveloped-data")
            })
    });
    let body = if enveloped {
        Protected::SmimeEnveloped(root.contents().to_vec())
    } else if is_multipart("encrypted") {
        Protected::Encrypted(encrypted_payload(raw, &msg)?)
    } else if plain && has_inline_block(root.contents()) {
        Protected::Inline(root.contents().to_vec())
    } else {
        Protected::Signed(split_signed(raw, &msg)?)
    };
    Ok(Incoming {
        from,
        outer_subject,
        references,
        body,
    })
}

/// The addresses a header field's value names: each mailbox's address of
/// an address list, or the text of a field mail-parser keeps as text
/// (`Delivered-To`, `X-Original-To`), without angle brackets.
pub fn header_addresses(value: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    let addresses = match value {
        mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
        mail_parser::HeaderValue::Address(a) => a
            .iter()
            .filter_map(|a| a.address.as_deref().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    addresses
        .into_iter()
        .map(|a| a.trim().trim_matches(['<', '>']).to_owned())
        .collect()
}

/// Holds a MIME entity (a decrypted one, say) to `limits`.
pub fn check_entity(raw: &[u8], limits: &MimeLimits) -> Result<(), Rejection> {
    parse_bounded(raw, limits, "not a parseable MIME entity").map(drop)
}

/// The CMS of an entity whose root is S/MIME opaque signed-data
/// (`application/pkcs7-mime; smime-type=signed-data`), decoded; `None` for
/// any other entity.
pub fn opaque_signed(raw: &[u8], limits: &MimeLimits) -> Result<Option<Vec<u8>>, Rejection> {
    let msg = parse_bounded(raw, limits, "not a parseable MIME entity")?;
    let root = msg.root_part();
    let opaque = root.content_type().is_some_and(|c| {
        c.ctype().eq_ignore_ascii_case("application")
            && c.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("pkcs7-mime") || s.eq_ignore_ascii_case("x-pkcs7-mime")
            })
            && c.attribute("smime-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("signed-data"))
    });
    Ok(opaque.then(|| root.contents().to_vec()))
}

/// Splits a MIME entity (a whole mail, or a decrypted entity without From)
/// whose root is `multipart/signed`.
pub fn signed_entity(raw: &[u8], limits: &MimeLimits) -> Result<SignedEntity, Rejection> {
    let msg = parse_bounded(raw, limits, "not a parseable MIME entity")?;
    split_signed(raw, &msg)
}

fn split_signed(raw: &[u8], msg: &mail_parser::Message<'_>) -> Result<SignedEntity, Rejection> {
    let root = msg.root_part();
    let ctype = root.content_type().ok_or(Rejection::Unsigned)?;
    if !(ctype.ctype().eq_ignore_ascii_case("multipart")
        && ctype
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("signed")))
    {
        return Err(Rejection::Unsigned);
    }
    let protocol = ctype.attribute("protocol").unwrap_or("");
    let smime = [
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
    ]
    .iter()
    .any(|p| protocol.eq_ignore_ascii_case(p));
    if !smime && !protocol.eq_ignore_ascii_case("application/pgp-signature") {
        return Err(Rejection::Malformed(
            "multipart/signed without protocol=\"application/pgp-signature\" (OpenPGP) or \"application/pkcs7-signature\" (S/MIME)",
        ));
    }
    let boundary = ctype
        .attribute("boundary")
        .ok_or(Rejection::Malformed("multipart/signed without a boundary"))?;
    let body = raw
        .get(root.raw_body_offset() as usize..)
        .ok_or(Rejection::Malformed("message has no body"))?;
    let parts = split_multipart(body, boundary).ok_or(Rejection::Malformed(
        "multipart/signed body is not properly delimited",
    ))?;
    let [signed, signature] = parts[..] else {
        return Err(Rejection::Malformed(
            "multipart/signed must have exactly two parts",
        ));
    };
    let sig_msg = MessageParser::default()
        .parse(signature)
        .ok_or(Rejection::Malformed("signature part unreadable"))?;
    let sig_part = sig_msg.root_part();
    if smime {
        if !(sig_part.is_content_type("application", "pkcs7-signature")
            || sig_part.is_content_type("application", "x-pkcs7-signature"))
        {
            return Err(Rejection::Malformed(
                "second part of an S/MIME multipart/signed is not application/pkcs7-signature",
            ));
        }
    } else if !sig_part.is_content_type("application", "pgp-signature") {
        return Err(Rejection::Malformed(
            "second part of multipart/signed is not application/pgp-signature",
        ));
    }
    Ok(SignedEntity {
        signed_part: Secret::new(signed.to_vec()),
        signature: sig_part.contents().to_vec(),
        smime,
    })
}

/// The OpenPGP message of an RFC 3156 `multipart/encrypted` root: exactly
/// two parts, `application/pgp-encrypted` then `application/octet-stream`.
fn encrypted_payload(raw: &[u8], msg: &mail_parser::Message<'_>) -> Result<Vec<u8>, Rejection> {
    let root = msg.root_part();
    let ctype = root
        .content_type()
        .ok_or(Rejection::Malformed("multipart/encrypted without a type"))?;
    if !ctype
        .attribute("protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("application/pgp-encrypted"))
    {
        return Err(Rejection::Malformed(
            "multipart/encrypted without protocol=\"application/pgp-encrypted\"",
        ));
    }
    let boundary = ctype.attribute("boundary").ok_or(Rejection::Malformed(
        "multipart/encrypted without a boundary",
    ))?;
    let body = raw
        .get(root.raw_body_offset() as usize..)
        .ok_or(Rejection::Malformed("message has no body"))?;
    let parts = split_multipart(body, boundary).ok_or(Rejection::Malformed(
        "multipart/encrypted body is not properly delimited",
    ))?;
    let [control, payload] = parts[..] else {
        return Err(Rejection::Malformed(
            "multipart/encrypted must have exactly two parts",
        ));
    };
    let control = MessageParser::default()
        .parse(control)
        .ok_or(Rejection::Malformed("encrypted control part unreadable"))?;
    if !control
        .root_part()
        .is_content_type("application", "pgp-encrypted")
    {
        return Err(Rejection::Malformed(
            "first part of multipart/encrypted is not application/pgp-encrypted",
        ));
    }
    let payload = MessageParser::default()
        .parse(payload)
        .ok_or(Rejection::Malformed("encrypted payload unreadable"))?;
    let part = payload.root_part();
    if !part.is_content_type("application", "octet-stream") {
        return Err(Rejection::Malformed(
            "second part of multipart/encrypted is not application/octet-stream",
        ));
    }
    Ok(part.contents().to_vec())
}

pub use crate::entity::to_crlf;

/// The first OpenPGP certificate attached to a (signed) entity: a part of
/// type `application/pgp-keys`, or any part that holds an armored public key.
pub fn attached_keys(entity: &[u8]) -> Option<Vec<u8>> {
    let msg = MessageParser::default().parse(entity)?;
    msg.parts
        .iter()
        .filter(|part| !part.is_multipart())
        .map(|part| (part, part.contents()))
        .find(|(part, contents)| {
            part.is_content_type("application", "pgp-keys")
                || contents.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
        })
        .map(|(_, contents)| contents.to_vec())
}

/// What a join request says: its sender, subject and plain text.
#[derive(Debug)]
pub struct PlainRequest {
    pub from: String,
    pub subject: String,
    /// The first text part, at most 64 KiB of it.
    pub text: String,
}

/// Reads an (unsigned) request mail: one From, the Subject, the text.
pub fn plain_request(raw: &[u8], limits: &MimeLimits) -> Result<PlainRequest, Rejection> {
    const MAX_TEXT: usize = 64 * 1024;
    let msg = parse_bounded(raw, limits, "not a parseable RFC 5322 message")?;
    let from = single_from(&msg)?;
    let subject = msg
        .subject()
        .map(sanitize_subject)
        .unwrap_or_else(|| "(no subject)".to_owned());
    let mut text: String = msg
        .body_text(0)
        .map(|t| t.into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| *c == '\n' || *c == '\t' || !c.is_control())
        .collect();
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n[... cut at 64 KiB]");
    }
    Ok(PlainRequest {
        from,
        subject,
        text,
    })
}

fn single_from(msg: &mail_parser::Message<'_>) -> Result<String, Rejection> {
    let count = msg
        .headers()
        .iter()
        .filter(|h| h.name == HeaderName::From)
        .count();
    if count != 1 {
        return Err(Rejection::FromHeader(
            "mail must have exactly one From header",
        ));
    }
    let addrs: Vec<_> = msg.from().map(|a| a.iter().collect()).unwrap_or_default();
    match addrs[..] {
        [one] => one
            .address()
            .map(str::to_ascii_lowercase)
            .ok_or(Rejection::FromHeader("From header has no address")),
        _ => Err(Rejection::FromHeader(
            "From header must name exactly one address",
        )),
    }
}

/// The body parts of a multipart body, exactly as RFC 2046 delimits them:
/// the CRLF before a delimiter belongs to the delimiter, not to the part.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<&'a [u8]>> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut pos = if body.starts_with(delim) {
        0
    } else {
        find_delimiter(body, 0, delim)? + 2
    };
    let mut parts = Vec::new();
    loop {
        let after = pos + delim.len();
        let rest = &body[after..];
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        let eol = find(rest, b"\r\n")?;
        if !rest[..eol].iter().all(|b| *b == b' ' || *b == b'\t') {
            return None;
        }
        let start = after + eol + 2;
        let next = find_delimiter(body, start, delim)?;
        parts.push(&body[start..next]);
        pos = next + 2;
    }
}

/// Finds the next `CRLF--boundary` at or after `from` that is a whole delimiter.
fn find_delimiter(body: &[u8], from: usize, delim: &[u8]) -> Option<usize> {
    let mut line_delim = Vec::with_capacity(delim.len() + 2);
    line_delim.extend_from_slice(b"\r\n");
    line_delim.extend_from_slice(delim);
    memchr::memmem::find_iter(&body[from..], &line_delim)
        .map(|i| from + i)
        .find(|&i| {
            let tail = &body[i + line_delim.len()..];
            tail.starts_with(b"--")
                || tail.starts_with(b"\r\n")
                || tail.starts_with(b" ")
                || tail.starts_with(b"\t")
        })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The Subject the relay will use: a signed protected-headers Subject if the
/// signed part carries one (`protected-headers="v1"`), else the outer one.
pub fn protected_subject(signed_part: &[u8]) -> Option<String> {
    let part = MessageParser::default().parse_headers(signed_part)?;
    let root = part.root_part();
    let protected = root
        .content_type()
        .and_then(|c| c.attribute("protected-headers"))
        .is_some_and(|v| v.eq_ignore_ascii_case("v1"));
    if protected {
        part.subject().map(sanitize_subject)
    } else {
        None
    }
}

/// The addresses in the signed entity's own To and Cc header fields
/// (protected headers, as Thunderbird signs them), lowercased; `None` when
/// it carries neither field.
pub fn protected_recipients(signed_part: &[u8]) -> Option<Vec<String>> {
    let part = MessageParser::default().parse_headers(signed_part)?;
    let fields = [part.to(), part.cc()];
    if fields.iter().all(Option::is_none) {
        return None;
    }
    Some(
        fields
            .into_iter()
            .flatten()
            .flat_map(|a| a.iter())
            .filter_map(|a| a.address())
            .map(str::to_ascii_lowercase)
            .collect::<Vec<_>>(),
    )
    // `To: undisclosed-recipients:;` names no one: nothing to hold to.
    .filter(|named| !named.is_empty())
}

/// One line of printable text, at most 400 characters.
pub fn sanitize_subject(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(400)
        .collect()
}

/// Whether a plain-text body holds a cleartext-signed block anywhere.
fn has_inline_block(body: &[u8]) -> bool {
    body.trim_ascii_start().starts_with(INLINE_BEGIN) || lines_starting(body, INLINE_BEGIN) > 0
}

/// How many lines after the first start with `needle` (memchr's search:
/// these scans run over whole 25 MiB bodies).
fn lines_starting(hay: &[u8], needle: &[u8]) -> usize {
    let mut at_line = Vec::with_capacity(needle.len() + 1);
    at_line.push(b'\n');
    at_line.extend_from_slice(needle);
    memchr::memmem::find_iter(hay, &at_line).count()
}

/// The one cleartext-signed block an inline-PGP body must be, nothing
/// before or after it (whitespace aside), or why not.
pub fn whole_inline_block(body: &[u8]) -> Result<&[u8], Rejection> {
    let block = body.trim_ascii();
    let at_line_start =
        |needle: &[u8]| usize::from(block.starts_with(needle)) + lines_starting(block, needle);
    if !block.starts_with(INLINE_BEGIN)
        || !block.ends_with(b"-----END PGP SIGNATURE-----")
        || at_line_start(INLINE_BEGIN) != 1
        || at_line_start(b"-----BEGIN PGP SIGNATURE-----") != 1
    {
        return Err(Rejection::Malformed(
            "inline PGP: the body must be exactly one signed block, with nothing outside it",
        ));
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parent first, then the nearest ancestors, at most
    /// `MAX_REFERENCES`, for any length of References.
    #[test]
    fn the_parent_and_the_nearest_ancestors_are_kept() {
        for n in [0usize, 1, 31, 32, 40] {
            let refs: Vec<String> = (0..n).map(|i| format!("<r{i}@x.example>")).collect();
            let mut raw = "From: a@x.example\r\nIn-Reply-To: <parent@x.example>\r\n".to_owned();
            if n > 0 {
                raw.push_str(&format!("References: {}\r\n", refs.join(" ")));
            }
            // (A root that parses: an inline-signed body.)
            raw.push_str("Content-Type: text/plain\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n");
            let got = parse(raw.as_bytes(), &MimeLimits::default())
                .unwrap()
                .references;
            assert_eq!(got.len(), (n + 1).min(MAX_REFERENCES), "{n}");
            assert_eq!(got[0], "parent@x.example", "{n}");
            if n > 0 {
                assert_eq!(got.last().unwrap(), &format!("r{}@x.example", n - 1), "{n}");
            }
        }
    }

    #[test]
    fn the_prescan_counts_declared_delimiters_and_each_header_block() {
        let limits = MimeLimits::default();
        // Dashed lines in the text are not delimiters.
        let mut art = b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\r\n"
            .to_vec();
        for _ in 0..500 {
            art.extend_from_slice(b"--------------------\r\n-- \r\n");
        }
        art.extend_from_slice(b"--b--\r\n");
        assert_eq!(prescan(&art, &limits), Ok(()));
        // An attached message's header counts as a header block of its own.
        let mut nested = b"From: a@example.org\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
        for i in 0..=limits.max_headers {
            nested.extend_from_slice(format!("X-{i}: x\r\n").as_bytes());
        }
        nested.extend_from_slice(b"\r\nbody\r\n");
        let err = prescan(&nested, &limits).unwrap_err().to_string();
        assert!(err.contains("policy.mime_max_headers"), "{err}");
        // So does each part's, after its delimiter.
        let mut part = b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n".to_vec();
        part.extend_from_slice(
            format!("X-Long: {}\r\n", "a".repeat(limits.max_header_size)).as_bytes(),
        );
        let err = prescan(&part, &limits).unwrap_err().to_string();
        assert!(err.contains("policy.mime_max_header_size"), "{err}");
    }

    #[test]
    fn delimiters_follow_rfc_2046() {
        let body = b"preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b \r\nsig\r\n--b--\r\nepilogue";
        let parts = split_multipart(body, "b").unwrap();
        assert_eq!(
            parts,
            vec![&b"Content-Type: text/plain\r\n\r\nhi"[..], b"sig"]
        );
        // A longer boundary that starts with ours is not a delimiter.
        let body = b"--b\r\nx\r\n--bb\r\ny\r\n--b\r\nz\r\n--b--";
        assert_eq!(
            split_multipart(body, "b").unwrap(),
            vec![&b"x\r\n--bb\r\ny"[..], b"z"]
        );
        assert!(split_multipart(b"--b\r\nunterminated", "b").is_none());
    }

    #[test]
    fn only_root_multipart_signed_counts() {
        let plain = b"From: a@b.org\r\nSubject: s\r\n\r\nhello\r\n";
        assert!(matches!(parse_signed(plain), Err(Rejection::Unsigned)));
        let two_from = b"From: a@b.org\r\nFrom: c@d.org\r\n\r\nx\r\n";
        assert!(matches!(
            parse_signed(two_from),
            Err(Rejection::FromHeader(_))
        ));
    }

    #[test]
    fn subjects_are_one_clean_line() {
        assert_eq!(
            sanitize_subject("x\r\nBcc: evil@x.org\0"),
            "x Bcc: evil@x.org"
        );
        let part =
            b"Content-Type: text/plain; protected-headers=\"v1\"\r\nSubject: Real one\r\n\r\nbody";
        assert_eq!(protected_subject(part).as_deref(), Some("Real one"));
        assert_eq!(
            protected_subject(b"Content-Type: text/plain\r\nSubject: no\r\n\r\nb"),
            None
        );
    }
}
