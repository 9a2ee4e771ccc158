//! Builds PGP/MIME signed mail (RFC 3156 `multipart/signed`) the way a PST
//! member's client does: for the demo, the tests and the benchmarks. The
//! daemon does not use it (its own entities are in `entity`).

use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use sequoia_openpgp::policy::Policy;

use crate::crypto;

/// The part a mail client signs: a text/plain entity with CRLF line endings.
/// With `subject` set, the Subject is carried inside as a protected header.
pub fn text_part(subject: Option<&str>, body: &str) -> Vec<u8> {
    match subject {
        Some(s) => crate::entity::text_plain_with(
            &[("; protected-headers=", "\"v1\""), ("Subject", s)],
            body,
        ),
        None => crate::entity::text_plain(body),
    }
}

/// The entity a PST signs when a public advisory goes with the announcement,
/// as Thunderbird builds it: `multipart/mixed` with protected headers, the
/// text, and the advisory as the attachment `public-advisory.txt`.
pub fn text_with_advisory(subject: &str, body: &str, advisory: &str) -> Vec<u8> {
    let boundary = format!("mix-{}", crypto::random_hex(8));
    let crlf = crate::entity::crlf_lines;
    let wrapped = String::from_utf8(crate::lines::base64_lines(crlf(advisory).as_bytes()))
        .unwrap_or_default();
    format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"; protected-headers=\"v1\"\r\nSubject: {subject}\r\n\r\n\
--{boundary}\r\nContent-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\
--{boundary}\r\nContent-Type: text/plain; charset=\"utf-8\"; name=\"public-advisory.txt\"\r\n\
Content-Disposition: attachment; filename=\"public-advisory.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{wrapped}\
--{boundary}--\r\n",
        crlf(body)
    )
    .into_bytes()
}

/// Wraps a signed part and its detached signature into a complete mail.
pub fn multipart_signed(
    from: &str,
    to: &str,
    subject: &str,
    signed_part: &[u8],
    signature: &[u8],
) -> Vec<u8> {
    let (content_type, body) = crate::entity::signed_body(signed_part, signature);
    let mut out = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@pst.example>\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n",
        crypto::random_hex(8)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// An RFC 3156 `multipart/encrypted` mail around an armored OpenPGP
/// message, as a mail client sends an encrypted post to the list.
pub fn multipart_encrypted(from: &str, to: &str, subject: &str, armored: &[u8]) -> Vec<u8> {
    let boundary = format!("enc-{}", crypto::random_hex(12));
    let mut out = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{}@pst.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{boundary}\"\r\n\r\n\
This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n--{boundary}\r\n\
Content-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n\
--{boundary}\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n",
        crypto::random_hex(8)
    )
    .into_bytes();
    out.extend_from_slice(&crate::entity::to_crlf(armored));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// A complete announcement signed by `pst_tsk`, as a PST member would send it.
pub fn signed_announcement(
    p: &dyn Policy,
    pst_tsk: &Cert,
    now: DateTime<Utc>,
    from: &str,
    to: &str,
    subject: &str,
    body: &str,
) -> anyhow::Result<Vec<u8>> {
    let part = text_part(Some(subject), body);
    let sig = crypto::sign_detached(p, pst_tsk, now, &part)?;
    Ok(multipart_signed(from, to, subject, &part, &sig))
}
