//! The MIME entities the relay writes itself, each rule once: a UTF-8
//! text entity with CRLF line ends, the CRLF line ends themselves, and the
//! RFC 3156 `multipart/signed` body around a signed part and its detached
//! signature.

use crate::crypto;

/// A `text/plain; charset="utf-8"` entity (8bit) of `text`, every line
/// ended by CRLF.
pub fn text_plain(text: &str) -> Vec<u8> {
    text_plain_with(&[], text)
}

/// [`text_plain`] with more header fields (`Name: value`, e.g. a protected
/// Subject) and, for a name starting with `;`, Content-Type parameters
/// after the charset.
pub fn text_plain_with(more: &[(&str, &str)], text: &str) -> Vec<u8> {
    let mut out = String::from("Content-Type: text/plain; charset=\"utf-8\"");
    for (name, value) in more.iter().filter(|(n, _)| n.starts_with(';')) {
        out.push_str(&format!("{name}{value}"));
    }
    out.push_str("\r\n");
    for (name, value) in more.iter().filter(|(n, _)| !n.starts_with(';')) {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Content-Transfer-Encoding: 8bit\r\n\r\n");
    out.push_str(&crlf_lines(text));
    out.into_bytes()
}

/// A `text/plain; charset="utf-8"` entity of `text` fit to be signed and
/// sent in the clear (the public release): 7bit when it is short-lined
/// printable ASCII, else base64 (RFC 3156 wants signed content 7-bit
/// clean; a NUL or another control octet is not 7bit text, RFC 2045
/// section 2.7).
pub fn text_plain_signable(text: &str) -> Vec<u8> {
    let crlf = crlf_lines(text);
    let printable = |b: u8| matches!(b, b'\t' | b'\r' | b'\n' | 0x20..=0x7e);
    let plain = crlf.bytes().all(printable) && crlf.lines().all(|l| l.len() <= 998);
    let mut out = b"Content-Type: text/plain; charset=\"utf-8\"\r\n".to_vec();
    if plain {
        out.extend_from_slice(b"Content-Transfer-Encoding: 7bit\r\n\r\n");
        out.extend_from_slice(crlf.as_bytes());
    } else {
        out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        out.extend_from_slice(&crate::lines::base64_lines(crlf.as_bytes()));
    }
    out
}

/// `text` with every line end (CRLF, a bare LF or a bare CR) made CRLF,
/// the last line ended too: a bare CR left in would be refused by any
/// standard MTA.
pub fn crlf_lines(text: &str) -> String {
    let unified = text.replace("\r\n", "\n").replace('\r', "\n");
    unified.lines().map(|l| format!("{l}\r\n")).collect()
}

/// The RFC 3156 `multipart/signed` body around a signed part and its
/// detached signature: returns the Content-Type value and the body.
pub fn signed_body(signed_part: &[u8], signature: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!("sig-{}", crypto::random_hex(12));
    let content_type = format!(
        "multipart/signed; micalg=pgp-sha512; protocol=\"application/pgp-signature\"; boundary=\"{boundary}\""
    );
    let mut out =
        format!("This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n--{boundary}\r\n")
            .into_bytes();
    out.extend_from_slice(signed_part);
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n\
Content-Description: OpenPGP digital signature\r\nContent-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n"
        )
        .as_bytes(),
    );
    let sig = String::from_utf8_lossy(signature)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    out.extend_from_slice(sig.as_bytes());
    if !sig.ends_with("\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (content_type, out)
}

/// MIME entities travel with CRLF line ends, the form PGP/MIME signatures
/// cover (RFC 3156); MTA pipes and decrypted content may carry UNIX line
/// ends. Every bare LF becomes CRLF; CRLF stays as is.
pub fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_end_becomes_crlf_and_the_last_line_is_ended() {
        assert_eq!(crlf_lines("a\r\nb\nc\rd"), "a\r\nb\r\nc\r\nd\r\n");
        let entity = text_plain_with(
            &[("; protected-headers=", "\"v1\""), ("Subject", "S")],
            "x\ry",
        );
        assert_eq!(
            entity,
            b"Content-Type: text/plain; charset=\"utf-8\"; protected-headers=\"v1\"\r\nSubject: S\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nx\r\ny\r\n"
        );
        assert!(
            !text_plain("a\rb")
                .windows(2)
                .any(|w| w[0] == b'\r' && w[1] != b'\n')
        );
    }
}
