//! ASCII armor (RFC 9580, section 6.2) for the member copies, written
//! directly with CRLF line ends, ready for the wire, and **with the CRC-24
//! checksum line**.
//!
//! Why written by hand: Sequoia's armor writer computes the checksum byte by
//! byte and spent a quarter of a 1 MB copy's time; every copy of one
//! announcement shares the same ciphertext after its own PKESK, so the
//! checksum of the shared part is computed once ([`Crc24::of_suffix`]) and
//! combined with each member's prefix in constant time ([`Crc24::combine`]).
//!
//! Why the checksum: RFC 9580 lets a writer omit it, but without it GnuPG
//! 2.2 (Debian 12's 2.2.40; dev.gnupg.org T7071) reads a message whose
//! length is a multiple of 3 (no `=` padding) into the END line and exits 2,
//! and RNP 0.16 says `wrong padding` (rnpgp/rnp#1775): a third of copies.
//! OpenPGP.js and GopenPGP write it for v4 data for the same reason.
//!
//! Read the other way, [`dearmor_message`] decodes an incoming encrypted
//! mail's armor in one pass. Why by hand: Sequoia's armor reader filters
//! and decodes in small steps and was most of the cost of reading a 25 MiB
//! encrypted mail (which the intake reads three times: the packet census,
//! the scan for unprotected data and the real pass); `base64-simd` decodes
//! the block once, in place (five times the `base64` crate's speed here), and anything but one clean block is left to
//! Sequoia's tolerant reader as before.

/// The CRC-24 of RFC 9580, section 6.1.1: generator 0x864CFB, initial value
/// 0xB704CE, most significant bit first, no final XOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Crc24(u32);

const POLY: u32 = 0x0086_4CFB;
const INIT: u32 = 0x00B7_04CE;
const MASK: u32 = 0x00FF_FFFF;

/// `TABLE[b]`: the register after shifting the octet `b` through a zero register.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut b = 0;
    while b < 256 {
        let mut r = (b as u32) << 16;
        let mut bit = 0;
        while bit < 8 {
            r <<= 1;
            if r & 0x0100_0000 != 0 {
                r ^= POLY;
            }
            bit += 1;
        }
        table[b] = r & MASK;
        b += 1;
    }
    table
};

/// `a(x)·b(x) mod P(x)` over GF(2), for 24-bit residues.
fn mul_mod(a: u32, b: u32) -> u32 {
    let mut product = 0u32;
    let mut a = a;
    for bit in 0..24 {
        if b >> bit & 1 == 1 {
            product ^= a;
        }
        a <<= 1;
        if a & 0x0100_0000 != 0 {
            a ^= POLY;
        }
        a &= MASK;
    }
    product
}

/// `x^(8·octets) mod P(x)`: what a register is multiplied by when `octets`
/// more octets pass through it.
fn shift_for(octets: usize) -> u32 {
    let mut result = 1u32; // x^0
    let mut base = 1u32 << 8; // x^8
    let mut n = octets as u64;
    while n > 0 {
        if n & 1 == 1 {
            result = mul_mod(result, base);
        }
        base = mul_mod(base, base);
        n >>= 1;
    }
    result
}

fn update(mut r: u32, data: &[u8]) -> u32 {
    for &b in data {
        r = (r << 8 & MASK) ^ TABLE[((r >> 16) as u8 ^ b) as usize];
    }
    r
}

impl Crc24 {
    /// The checksum of `data`.
    #[cfg(test)]
    pub(crate) fn of(data: &[u8]) -> Crc24 {
        Crc24(update(INIT, data))
    }

    /// The checksum of `parts` one after the other.
    #[cfg(test)]
    pub(crate) fn of_parts(parts: &[&[u8]]) -> Crc24 {
        Crc24(parts.iter().fold(INIT, |r, p| update(r, p)))
    }

    /// What `suffix` contributes to the checksum of anything it ends, for
    /// [`Crc24::combine`]: computed once for a shared ciphertext.
    pub(crate) fn of_suffix(suffix: &[u8]) -> Suffix {
        Suffix {
            zero_register: update(0, suffix),
            shift: shift_for(suffix.len()),
        }
    }

    /// The checksum of `prefix` followed by the suffix, without reading the
    /// suffix again: the register is linear, so the prefix's register
    /// shifted past the suffix, plus the suffix's own from zero.
    pub(crate) fn combine(prefix: &[u8], suffix: &Suffix) -> Crc24 {
        Crc24(mul_mod(update(INIT, prefix), suffix.shift) ^ suffix.zero_register)
    }

    /// The checksum's three octets, big-endian.
    pub(crate) fn to_bytes(self) -> [u8; 3] {
        let [_, a, b, c] = self.0.to_be_bytes();
        [a, b, c]
    }
}

/// A suffix's part of a CRC-24, from [`Crc24::of_suffix`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Suffix {
    zero_register: u32,
    shift: u32,
}

/// An armored `PGP MESSAGE` of `binary`, with its checksum line.
#[cfg(test)]
pub(crate) fn armor_message(binary: &[u8]) -> Vec<u8> {
    armor_parts(&[binary], Crc24::of(binary), 0)
}

/// [`armor_message`] over the concatenation of `parts`, whose checksum the
/// caller already has; `headroom` spare capacity is left for what the
/// caller puts around it. The whole in one pass: the reference the copies
/// armored in parts ([`armor_head`]) are tested against.
#[cfg(test)]
pub(crate) fn armor_parts(parts: &[&[u8]], crc: Crc24, headroom: usize) -> Vec<u8> {
    use base64::Engine;
    let engine = &base64::engine::general_purpose::STANDARD;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(total / 3 * 4 + total / 24 + 128 + headroom);
    out.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n\r\n");
    let mut text = [0u8; 64];
    let mut emit = |out: &mut Vec<u8>, chunk: &[u8]| {
        let n = engine
            .encode_slice(chunk, &mut text)
            .expect("64 characters hold 48 octets");
        out.extend_from_slice(&text[..n]);
        out.extend_from_slice(b"\r\n");
    };
    let mut stage = [0u8; LINE];
    let mut staged = 0;
    for part in parts {
        let mut rest = *part;
        if staged > 0 {
            let take = (LINE - staged).min(rest.len());
            stage[staged..staged + take].copy_from_slice(&rest[..take]);
            staged += take;
            rest = &rest[take..];
            if staged < LINE {
                continue;
            }
            emit(&mut out, &stage);
        }
        let whole = rest.len() / LINE * LINE;
        for chunk in rest[..whole].chunks(LINE) {
            emit(&mut out, chunk);
        }
        let tail = &rest[whole..];
        stage[..tail.len()].copy_from_slice(tail);
        staged = tail.len();
    }
    if staged > 0 {
        emit(&mut out, &stage[..staged]);
    }
    out.push(b'=');
    let n = engine
        .encode_slice(crc.to_bytes(), &mut text)
        .expect("4 characters hold 3 octets");
    out.extend_from_slice(&text[..n]);
    out.extend_from_slice(b"\r\n-----END PGP MESSAGE-----\r\n");
    out
}

/// Octets per armor line (64 base64 characters).
const LINE: usize = 48;

/// Where in `shared` the whole lines of a copy's armor begin when
/// `prefix_len` octets (the member's PKESK) come before it: the lines from
/// there on are the same for every copy whose prefix leaves the same
/// remainder, and are armored once ([`armor_lines`]).
pub(crate) fn aligned_from(prefix_len: usize, shared_len: usize) -> usize {
    ((LINE - prefix_len % LINE) % LINE).min(shared_len)
}

/// `data` armored as 64-character CRLF lines (the last one shorter).
pub(crate) fn armor_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(data.len() / 3 * 4 + data.len() / 24 + 8);
    let mut text = [0u8; 64];
    for chunk in data.chunks(LINE) {
        let n = engine
            .encode_slice(chunk, &mut text)
            .expect("64 characters hold 48 octets");
        out.extend_from_slice(&text[..n]);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The first part of a copy's armor, its own: the armor header, the lines
/// of `prefix`, and the line it shares with the start of `shared` (up to
/// [`aligned_from`]). With [`armor_lines`] of the rest of `shared` and
/// [`armor_trailer`] it is [`armor_parts`] of the two, octet for octet.
pub(crate) fn armor_head(prefix: &[u8], shared: &[u8]) -> Vec<u8> {
    let whole = prefix.len() / LINE * LINE;
    let joined = aligned_from(prefix.len(), shared.len());
    let mut out = Vec::with_capacity(64 + (prefix.len() + LINE) / 3 * 4 + 8);
    out.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n\r\n");
    out.extend_from_slice(&armor_lines(&prefix[..whole]));
    let mut line = prefix[whole..].to_vec();
    line.extend_from_slice(&shared[..joined]);
    out.extend_from_slice(&armor_lines(&line));
    out
}

/// The end of an armored message: its checksum line and footer.
pub(crate) fn armor_trailer(crc: Crc24) -> Vec<u8> {
    use base64::Engine;
    let mut out = b"=".to_vec();
    out.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(crc.to_bytes())
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n-----END PGP MESSAGE-----\r\n");
    out
}

/// The binary of one armored `PGP MESSAGE` (whitespace around it aside),
/// decoded in one pass, or `None` for anything else (another armor kind,
/// text around the block, no blank line after the armor headers, a
/// character outside base64), which the caller hands to Sequoia's tolerant
/// reader instead. The checksum line is skipped unchecked, as Sequoia does
/// (RFC 9580: a reader must not reject an object whose CRC-24 disagrees).
pub(crate) fn dearmor_message(text: &[u8]) -> Option<Vec<u8>> {
    let rest = text
        .trim_ascii()
        .strip_prefix(b"-----BEGIN PGP MESSAGE-----")?;
    let mut start = 0;
    let mut lines = memchr::memchr_iter(b'\n', rest)
        .chain(std::iter::once(rest.len()))
        .map(|end| {
            let line = &rest[start..end];
            start = end + 1;
            line.trim_ascii_end()
        });
    // The rest of the BEGIN line, then armor headers up to a blank line.
    if !lines.next()?.is_empty() {
        return None;
    }
    loop {
        let header = lines.next()?;
        if header.is_empty() {
            break;
        }
        memchr::memmem::find(header, b": ")?;
    }
    let mut base64 = Vec::with_capacity(rest.len());
    let mut checksum = false;
    for line in lines.by_ref() {
        if line == b"-----END PGP MESSAGE-----" {
            // Nothing may follow: the text was trimmed.
            return match lines.next() {
                None => {
                    let n = base64_simd::STANDARD
                        .decode_inplace(&mut base64)
                        .ok()?
                        .len();
                    base64.truncate(n);
                    Some(base64)
                }
                Some(_) => None,
            };
        }
        if checksum {
            return None;
        }
        if line.first() == Some(&b'=') {
            // The optional checksum: `=` and four characters, then END.
            if line.len() != 5 {
                return None;
            }
            checksum = true;
        } else {
            base64.extend_from_slice(line);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp as openpgp;
    use std::io::Read;

    /// RFC 9580's reference implementation, bit by bit.
    fn crc_bitwise(data: &[u8]) -> u32 {
        let mut crc = INIT;
        for &b in data {
            crc ^= (b as u32) << 16;
            for _ in 0..8 {
                crc <<= 1;
                if crc & 0x0100_0000 != 0 {
                    crc ^= POLY;
                }
            }
        }
        crc & MASK
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 131 + i / 7) as u8).collect()
    }

    /// A copy's armor in three parts (its head, the lines it shares with
    /// every copy whose PKESK leaves the same remainder, its trailer) is
    /// the armor of the whole, octet for octet: for every prefix length
    /// across three lines and shared parts shorter than, at and around a
    /// line.
    #[test]
    fn a_copy_armored_in_parts_is_the_armor_of_the_whole() {
        for prefix_len in 0..=150 {
            let prefix = sample(prefix_len);
            for shared_len in [0, 1, 2, 3, 46, 47, 48, 49, 95, 96, 97, 1000] {
                let shared: Vec<u8> = sample(shared_len + 7)[7..].to_vec();
                let crc = Crc24::combine(&prefix, &Crc24::of_suffix(&shared));
                let from = aligned_from(prefix.len(), shared.len());
                let mut parts = armor_head(&prefix, &shared);
                parts.extend_from_slice(&armor_lines(&shared[from..]));
                parts.extend_from_slice(&armor_trailer(crc));
                assert_eq!(
                    String::from_utf8(parts).unwrap(),
                    String::from_utf8(armor_parts(&[&prefix, &shared], crc, 0)).unwrap(),
                    "prefix {prefix_len}, shared {shared_len}"
                );
            }
        }
    }

    #[test]
    fn crc_matches_the_reference_and_combines_at_every_cut() {
        // The check value of CRC-24/OPENPGP over "123456789".
        assert_eq!(Crc24::of(b"123456789").0, 0x21CF02);
        for len in [0, 1, 2, 3, 47, 48, 49, 1000] {
            let data = sample(len);
            assert_eq!(Crc24::of(&data).0, crc_bitwise(&data), "length {len}");
            for cut in 0..=len.min(60) {
                let (a, b) = data.split_at(cut);
                let whole = Crc24::of(&data);
                assert_eq!(
                    Crc24::combine(a, &Crc24::of_suffix(b)),
                    whole,
                    "{len}/{cut}"
                );
                assert_eq!(Crc24::of_parts(&[a, b]), whole, "{len}/{cut}");
            }
        }
    }

    /// Every length modulo 3 and every length of the last base64 line: the
    /// armor decodes to the same octets, carries the right checksum line,
    /// and splitting the input anywhere changes
    /// nothing.
    #[test]
    fn armor_reads_back_with_a_checksum_whatever_the_length() {
        for len in (0..=100).chain([999, 1000, 1001]) {
            let binary = sample(len);
            let armored = armor_message(&binary);
            let text = std::str::from_utf8(&armored).unwrap();
            let lines: Vec<&str> = text.split("\r\n").collect();
            let sum = lines[lines.len() - 3];
            assert!(
                sum.len() == 5 && sum.starts_with('='),
                "length {len}: checksum line {sum:?}"
            );
            assert!(lines.iter().all(|l| l.len() <= 64), "64-character lines");
            let mut reader = openpgp::armor::Reader::from_bytes(
                &armored,
                openpgp::armor::ReaderMode::Tolerant(Some(openpgp::armor::Kind::Message)),
            );
            let mut back = Vec::new();
            reader.read_to_end(&mut back).unwrap();
            assert_eq!(back, binary, "length {len}");
            // The checksum line is the CRC-24 of the octets (Sequoia's
            // reader ignores it; GnuPG checks it).
            use base64::Engine;
            let sum = base64::engine::general_purpose::STANDARD
                .decode(&sum[1..])
                .unwrap();
            assert_eq!(sum, Crc24(crc_bitwise(&binary)).to_bytes(), "length {len}");
            for cut in [0, 1, 47, 48, 49, len / 2, len] {
                let cut = cut.min(len);
                for cut2 in [cut, (cut + 7).min(len), len] {
                    let parts = [&binary[..cut], &binary[cut..cut2], &binary[cut2..]];
                    let crc = Crc24::combine(&binary[..cut], &Crc24::of_suffix(&binary[cut..]));
                    assert_eq!(armor_parts(&parts, crc, 0), armored, "cut {cut}, {cut2}");
                }
            }
        }
    }

    #[test]
    fn dearmor_reads_every_length_and_leaves_the_rest_to_sequoia() {
        for len in 0..200 {
            let binary = sample(len);
            let armored = armor_message(&binary);
            assert_eq!(
                dearmor_message(&armored).as_deref(),
                Some(&binary[..]),
                "{len}"
            );
            // LF line ends, whitespace around, a header, no checksum.
            let text = String::from_utf8(armored.clone())
                .unwrap()
                .replace("\r\n", "\n");
            let text = text.replacen("-----\n\n", "-----\nComment: x\n\n", 1);
            let no_crc: Vec<&str> = text.lines().filter(|l| !l.starts_with('=')).collect();
            let loose = format!("\n  {}\n\n", no_crc.join("\n"));
            assert_eq!(
                dearmor_message(loose.as_bytes()).as_deref(),
                Some(&binary[..]),
                "{len}"
            );
            // Every kind of text it does not take is left alone (`None`),
            // so Sequoia's reader judges it as before.
            let spoilt = [
                text.replace("PGP MESSAGE", "PGP SIGNATURE"),
                format!("x\n{text}"),
                format!("{text}x\n"),
                text.replacen("-----\n", "----- x\n", 1),
                text.replacen("Comment: x\n\n", "Comment: x\n", 1),
                text.replacen("Comment: x", "Comment x", 1),
                text.replacen("\n=", "\n=x", 1),
            ];
            for (i, bad) in spoilt.iter().enumerate() {
                assert_eq!(dearmor_message(bad.as_bytes()), None, "{len} {i}");
            }
            if len > 3 {
                let bad = text.replacen("\n\n", "\n\n!", 1);
                assert_eq!(dearmor_message(bad.as_bytes()), None, "{len}");
            }
        }
    }
}
