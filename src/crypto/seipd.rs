//! SEIPDv1 (RFC 9580 §5.13.1) with AES, decrypted by OpenSSL: AES-CFB
//! (worked as ECB, all blocks at once), then SHA-1 over the whole for the
//! integrity check (the MDC).
//!
//! Sequoia decrypts the same packet through a stack of buffered readers
//! and hashes it with its collision-detecting SHA-1: about 45 ms for a
//! 7 MiB body on this project's machines, which is most of what a forged
//! encrypted mail costs before it can be refused (issue 14: the worst mail
//! refused in well under 100 ms). OpenSSL's AES (as ECB, see
//! [`cfb_decrypt`]) and SHA-1, with the CPU's AES and SHA instructions, do
//! it in a few milliseconds. Collision
//! detection protects signatures, whose hash an attacker chooses the
//! input of; the MDC is a hash under the encryption, which it does not.
//!
//! Only the census (`census.rs`) uses this, and only where it can:
//! any other cipher, and SEIPDv2, go through Sequoia. A unit test holds
//! it to Sequoia's decryption over lengths and key sizes.

use openpgp::crypto::SessionKey;
use openpgp::types::SymmetricAlgorithm;
use openssl::symm::{Cipher, Crypter, Mode};
use sequoia_openpgp as openpgp;

use crate::secret::Secret;

/// What decrypting a SEIPDv1 body with a session key gave.
pub(super) enum Seipd {
    /// A cipher this module leaves to Sequoia.
    NotHere,
    /// The quick check (the prefix's repeated octets) failed: another
    /// session key, not this one.
    WrongKey,
    /// Decrypted, but the integrity check failed (or there is no room for
    /// one): tampered or damaged. Nothing of it may be used or reported.
    Tampered,
    /// The packets the encryption held, the prefix and the MDC taken off.
    Plain(Secret),
}

/// The MDC packet that ends every SEIPDv1 plaintext: new-format tag 19,
/// length 20, then the SHA-1 of everything before it and these two octets.
const MDC_HEADER: [u8; 2] = [0xD3, 0x14];
const MDC_LEN: usize = 2 + 20;

/// Decrypts `body`, the octets of a SEIPDv1 packet after its version
/// octet, with `key` for `algo`.
pub(super) fn open(algo: SymmetricAlgorithm, key: &SessionKey, body: &[u8]) -> Seipd {
    // ECB: CFB's decryption is worked as ECB over the ciphertext (see
    // `cfb_decrypt`).
    let cipher = match algo {
        SymmetricAlgorithm::AES128 => Cipher::aes_128_ecb(),
        SymmetricAlgorithm::AES192 => Cipher::aes_192_ecb(),
        SymmetricAlgorithm::AES256 => Cipher::aes_256_ecb(),
        _ => return Seipd::NotHere,
    };
    if key.len() != cipher.key_len() {
        return Seipd::WrongKey;
    }
    let prefix = BLOCK + 2;
    let decrypt = |input: &[u8]| cfb_decrypt(cipher, key, input);
    // The quick check first, on the prefix alone: a wrong key costs one
    // block, not the whole body.
    if body.len() < prefix {
        return Seipd::WrongKey;
    }
    let Some(head) = decrypt(&body[..prefix]) else {
        return Seipd::NotHere; // OpenSSL cannot: Sequoia's decryptor then
    };
    if head[BLOCK - 2..BLOCK] != head[BLOCK..prefix] {
        return Seipd::WrongKey;
    }
    if body.len() < prefix + MDC_LEN {
        return Seipd::Tampered;
    }
    let Some(mut plain) = decrypt(body) else {
        return Seipd::Tampered;
    };
    let (hashed, digest) = plain.split_at(plain.len() - 20);
    let sum = openssl::sha::sha1(hashed);
    // Both checks made whatever the first says (no early answer).
    if !(hashed.ends_with(&MDC_HEADER) & openssl::memcmp::eq(&sum, digest)) {
        return Seipd::Tampered;
    }
    plain.truncate(plain.len() - MDC_LEN);
    plain.drain(..prefix);
    Seipd::Plain(Secret::new(plain))
}

/// AES's block size.
const BLOCK: usize = 16;

/// CFB decryption from a zero IV (OpenPGP's: the random prefix plays the
/// IV's part), worked as ECB. Block `i` of the plaintext is block `i` of
/// the ciphertext XOR the encryption of block `i - 1` (of the IV for the
/// first), so the keystream of every block is one ECB encryption of the
/// ciphertext shifted by a block, which the CPU's AES instructions work
/// several blocks at a time; OpenSSL's CFB mode works one block after
/// another and took three times as long (limits bench, 7 MiB).
fn cfb_decrypt(ecb: Cipher, key: &[u8], input: &[u8]) -> Option<Vec<u8>> {
    let mut crypter = Crypter::new(ecb, Mode::Encrypt, key, None).ok()?;
    crypter.pad(false);
    let blocks = input.len().div_ceil(BLOCK);
    // OpenSSL wants room for a block beyond its input.
    let mut out = vec![0u8; (blocks + 2) * BLOCK];
    let mut n = crypter.update(&[0u8; BLOCK], &mut out).ok()?;
    if blocks > 1 {
        let shifted = &input[..(blocks - 1) * BLOCK];
        n += crypter.update(shifted, &mut out[BLOCK..]).ok()?;
    }
    n += crypter.finalize(&mut out[n..]).ok()?;
    if n != blocks.max(1) * BLOCK {
        return None;
    }
    out.truncate(input.len());
    for (o, i) in out.iter_mut().zip(input) {
        *o ^= i;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use openpgp::crypto::SessionKey;
    use openpgp::packet::{Packet, SEIP};
    use openpgp::parse::{PacketParser, PacketParserResult, Parse};
    use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
    use openpgp::types::SymmetricAlgorithm;
    use sequoia_openpgp as openpgp;

    use super::{Seipd, cfb_decrypt, open};

    /// A SEIPDv1 message of `data` under `key`: its SEIP body (after the
    /// version octet) and what Sequoia decrypts it to (the packets the
    /// encryption held, without the MDC).
    fn sealed(algo: SymmetricAlgorithm, key: &SessionKey, data: &[u8]) -> (Vec<u8>, Vec<u8>) {
        use buffered_reader::BufferedReader;
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let message = Encryptor::with_session_key(message, algo, key.clone())
            .unwrap()
            .build()
            .unwrap();
        let mut literal = LiteralWriter::new(message).build().unwrap();
        literal.write_all(data).unwrap();
        literal.finalize().unwrap();
        let PacketParserResult::Some(mut pp) = PacketParser::from_bytes(&out).unwrap() else {
            panic!("no packet");
        };
        assert!(matches!(pp.packet, Packet::SEIP(SEIP::V1(_))));
        let body = pp.data_eof().unwrap().to_vec();
        pp.decrypt(algo, key).unwrap();
        let mut plain = Vec::new();
        pp.read_to_end(&mut plain).unwrap();
        (body, plain)
    }

    /// CFB worked as ECB is OpenSSL's own CFB, for every length up to
    /// four blocks (partial blocks, a single one, none).
    #[test]
    fn cfb_as_ecb_is_cfb() {
        use openssl::symm::{Cipher, decrypt};
        for (ecb, cfb, key_len) in [
            (Cipher::aes_128_ecb(), Cipher::aes_128_cfb128(), 16),
            (Cipher::aes_256_ecb(), Cipher::aes_256_cfb128(), 32),
        ] {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 13 + 7) as u8).collect();
            for len in 0..=64usize {
                let input: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
                let want = decrypt(cfb, &key, Some(&[0u8; 16]), &input).unwrap();
                assert_eq!(cfb_decrypt(ecb, &key, &input).unwrap(), want, "{len}");
            }
        }
    }

    #[test]
    fn one_pass_decryption_is_sequoias_over_lengths_and_key_sizes() {
        let lengths = (0..40).chain([255, 4095, 4096, 8193, 65_537, 300_000]);
        for len in lengths {
            for algo in [
                SymmetricAlgorithm::AES128,
                SymmetricAlgorithm::AES192,
                SymmetricAlgorithm::AES256,
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let key = SessionKey::new(algo.key_size().unwrap()).unwrap();
                let (body, sequoias) = sealed(algo, &key, &data);
                let Seipd::Plain(plain) = open(algo, &key, &body) else {
                    panic!("{algo} {len}: not decrypted");
                };
                assert_eq!(plain.expose(), sequoias, "{algo} {len}");
                // Any octet changed, anywhere: never plaintext.
                for at in [0, 17, body.len() / 2, body.len() - 21, body.len() - 1] {
                    let mut tampered = body.clone();
                    tampered[at] ^= 0x40;
                    let got = open(algo, &key, &tampered);
                    assert!(!matches!(got, Seipd::Plain(_)), "{algo} {len} at {at}");
                }
                for cut in [1, 20, 22, body.len()] {
                    let got = open(algo, &key, &body[..body.len() - cut]);
                    assert!(!matches!(got, Seipd::Plain(_)), "{algo} {len} cut {cut}");
                }
                let other = SessionKey::new(algo.key_size().unwrap()).unwrap();
                assert!(!matches!(open(algo, &other, &body), Seipd::Plain(_)));
            }
        }
        let key = SessionKey::new(16).unwrap();
        let (body, _) = sealed(SymmetricAlgorithm::Camellia128, &key, b"x");
        assert!(matches!(
            open(SymmetricAlgorithm::Camellia128, &key, &body),
            Seipd::NotHere
        ));
    }
}
