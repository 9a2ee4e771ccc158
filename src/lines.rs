//! Line ends counted at memory speed: whole-buffer counts the compiler
//! vectorizes, never a search per line, as a part of millions of empty
//! lines is what an attacker sends (a `memchr` call per hit cost 20 ms on
//! 10 MiB of them).

/// How many `\r\n` pairs `data` holds.
pub(crate) fn crlf_pairs(data: &[u8]) -> usize {
    data.iter()
        .zip(data.iter().skip(1))
        .filter(|&(&a, &b)| a == b'\r' && b == b'\n')
        .count()
}

/// Whether `data` holds a `\r` that is not followed by `\n`.
pub(crate) fn has_bare_cr(data: &[u8]) -> bool {
    memchr::memchr_iter(b'\r', data).count() != crlf_pairs(data)
}

/// Whether `c` shows as nothing true on a terminal or in a mail client:
/// a control character, or an invisible one that reorders or hides text
/// (bidirectional overrides and isolates, zero-width characters, the
/// byte order mark). What the audit trail and the notices replace.
pub(crate) fn unseen(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Whether every line end in `data` is `\r\n` (no bare `\r`, no bare `\n`).
pub(crate) fn crlf_only(data: &[u8]) -> bool {
    let pairs = crlf_pairs(data);
    pairs == memchr::memchr_iter(b'\r', data).count()
        && pairs == memchr::memchr_iter(b'\n', data).count()
}

/// `data` in base64, in lines of 76 characters, each ending CRLF (RFC 2045).
pub(crate) fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(text.len() + text.len() / 76 * 2 + 2);
    for line in text.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{crlf_only, crlf_pairs, has_bare_cr};

    #[test]
    fn counts_agree_with_a_search_over_every_short_mix() {
        // Every string of up to seven octets over CR, LF and 'a'.
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..7 {
            let longer: Vec<Vec<u8>> = inputs
                .iter()
                .filter(|s| s.len() == inputs.last().unwrap().len())
                .flat_map(|s| [b'\r', b'\n', b'a'].map(|c| [s.as_slice(), &[c]].concat()))
                .collect();
            inputs.extend(longer);
        }
        for data in &inputs {
            let pairs = data.windows(2).filter(|w| w == b"\r\n").count();
            let bare_cr =
                (0..data.len()).any(|i| data[i] == b'\r' && data.get(i + 1) != Some(&b'\n'));
            let bare_lf =
                (0..data.len()).any(|i| data[i] == b'\n' && (i == 0 || data[i - 1] != b'\r'));
            assert_eq!(crlf_pairs(data), pairs, "{data:?}");
            assert_eq!(has_bare_cr(data), bare_cr, "{data:?}");
            assert_eq!(crlf_only(data), !bare_cr && !bare_lf, "{data:?}");
        }
    }
}
