//! The packet census: a mail's OpenPGP packets counted with hashing off,
//! before any signature is hashed (Sequoia's verification is quadratic in
//! the number of signatures), on every path: detached, inline, inside an
//! encrypted mail.

use super::Keyring;
use std::io::Read;

use chrono::{DateTime, Utc};
use openpgp::Fingerprint;
use openpgp::crypto::SessionKey;
use openpgp::packet::PKESK;
use openpgp::parse::Parse;
use openpgp::policy::Policy;
use openpgp::types::{HashAlgorithm, SymmetricAlgorithm};
use sequoia_openpgp as openpgp;

use crate::secret::Secret;

use super::cleartext;
use super::problem::{CLOCK_SKEW_S, OpenProblem, SignatureProblem, TooMany};
use super::seipd::{self, Seipd};
use super::{ListKey, at};

/// Bounds on the OpenPGP packets of one incoming mail, counted with
/// hashing off before anything is verified or decrypted past the session
/// key: Sequoia's verification keeps one hash context per signature and
/// clones each per signature, so 20,000 copies of one signature (4 MB) cost
/// 600 s of CPU. A PST signs once; a few co-signing PST members fit.
pub struct PacketLimits;

impl PacketLimits {
    /// Signatures and one-pass signatures, each.
    pub const SIGNATURES: usize = 8;
    /// Literal data packets: a signed message holds one.
    pub const LITERALS: usize = 1;
    // (Bodies, decompressed, are read at most max_message_size octets in all.)
    /// PKESKs in an encrypted mail (one per key it is encrypted to).
    pub const PKESKS: usize = 32;
    /// PKESKs tried with the list key: a public-key operation each.
    pub const PKESK_TRIES: usize = 4;
    /// Packets in all, at any depth.
    pub const PACKETS: usize = 64;
}

/// What the census read of the signatures it counted, before anything was
/// hashed: enough to refuse a stranger's mail without hashing it, and to
/// know whether a look a year ahead ([`with_lookahead`]) can change the
/// verdict.
#[derive(Debug, Default, Clone)]
pub(super) struct Seen {
    signatures: usize,
    /// The signature packets counted (at most [`PacketLimits::SIGNATURES`]).
    pub(super) read: Vec<openpgp::packet::Signature>,
    /// Signatures that name issuers, none of them a key of a known
    /// certificate.
    strangers: usize,
    /// A signature dated after now plus the tolerated skew (or undated).
    pub(super) future: bool,
}

impl Seen {
    fn note(&mut self, sig: &openpgp::packet::Signature, known: &Keyring, now: DateTime<Utc>) {
        self.signatures += 1;
        if self.read.len() < PacketLimits::SIGNATURES {
            self.read.push(sig.clone());
        }
        let issuers = sig.get_issuers();
        if !issuers.is_empty() && !known.names_any(&issuers) {
            self.strangers += 1;
        }
        let horizon = at(now + chrono::Duration::seconds(CLOCK_SKEW_S));
        if sig.signature_creation_time().is_none_or(|t| t > horizon) {
            self.future = true;
        }
    }

    /// Every signature is a stranger's: the verifier would find no key for
    /// any of them (`NotPst`), after hashing the whole message.
    pub(super) fn only_strangers(&self) -> Result<(), SignatureProblem> {
        if self.signatures > 0 && self.strangers == self.signatures {
            Err(SignatureProblem::NotPst)
        } else {
            Ok(())
        }
    }
}

/// How many separate hash computations the signatures of one mail may
/// need (hash algorithm, v6 salt, text or binary form of the data).
pub(super) const HASHINGS: usize = 2;

/// Checks every signature of a mail cryptographically against the data
/// it covers, hashing the data once per hash algorithm (Sequoia's
/// verifier keeps one hash context per signature, and in text mode updates
/// it line by line: eight bad text-mode signatures over 10 MiB of empty
/// lines cost two seconds). A mail that passes is then verified in full by
/// Sequoia, whose judgement (key validity, expiry, policy) stands; this
/// only refuses, before that, what cannot pass: a signature naming no key
/// of a `known` certificate (`NotPst`), more than [`HASHINGS`] hash
/// computations, a signature that does not verify under the key it names
/// (`Bad`, or `WeakHash` where the policy refuses its hash, as the
/// verifier says), then two naming one key.
pub(super) fn precheck(
    sigs: &[openpgp::packet::Signature],
    known: &Keyring,
    data: &[u8],
) -> Result<(), SignatureProblem> {
    use openpgp::types::SignatureType;
    let (keys_named, twice) = named_keys(sigs, known)?;
    // One hash context per way of hashing, over the data as it is or in
    // its text form (line ends made CRLF, as Sequoia's text mode does);
    // the ways are counted before anything is hashed.
    let canonical = std::cell::OnceCell::new();
    type Way = (HashAlgorithm, Option<Vec<u8>>, bool);
    let mut contexts: Vec<(Way, openpgp::crypto::hash::Context)> = Vec::new();
    let mut way_of = Vec::with_capacity(sigs.len());
    for sig in sigs {
        let text_mode = sig.typ() == SignatureType::Text
            && !*canonical.get_or_init(|| crate::lines::crlf_only(data));
        let way: Way = (sig.hash_algo(), sig.salt().map(<[u8]>::to_vec), text_mode);
        let at = match contexts.iter().position(|(w, _)| *w == way) {
            Some(at) => at,
            None => {
                if contexts.len() == HASHINGS {
                    return Err(SignatureProblem::TooMany(TooMany {
                        what: "separate hash computations for the signatures",
                        limit: HASHINGS,
                    }));
                }
                let Ok(mut context) = sig
                    .hash_algo()
                    .context()
                    .map(|c| c.for_signature(sig.version()))
                else {
                    return Err(SignatureProblem::bad(sig));
                };
                if let Some(salt) = sig.salt() {
                    context.update(salt);
                }
                contexts.push((way, context));
                contexts.len() - 1
            }
        };
        way_of.push(at);
    }
    // Each way is hashed when its first signature is checked, in order: a
    // bad signature stops the check before another way costs anything, so
    // only a holder of a known key can make both ways count.
    let mut hashed = vec![false; contexts.len()];
    for ((sig, keys), at) in sigs.iter().zip(&keys_named).zip(way_of) {
        if !hashed[at] {
            let ((_, _, text_mode), context) = &mut contexts[at];
            if *text_mode {
                in_text_form(data, |piece| context.update(piece));
            } else {
                context.update(data);
            }
            hashed[at] = true;
        }
        // The signature's own octets ends the hash; then the public-key
        // check alone (Sequoia's `verify_hash` also refuses a signature
        // older than its key, which the verifier reports as a key problem).
        let mut context = contexts[at].1.clone();
        let digest = openpgp::crypto::hash::Hash::hash(sig, &mut context)
            .and_then(|()| context.into_digest());
        let holds = digest.is_ok_and(|digest| {
            keys.iter()
                .any(|key| key.verify(sig.mpis(), sig.hash_algo(), &digest).is_ok())
        });
        if !holds {
            return Err(SignatureProblem::bad(sig));
        }
    }
    if twice {
        return Err(SignatureProblem::SameKeyTwice);
    }
    Ok(())
}

/// A key of a certificate, as a signature names it.
pub(super) type PublicKey =
    openpgp::packet::Key<openpgp::packet::key::PublicParts, openpgp::packet::key::UnspecifiedRole>;

/// The keys of `known` certificates each signature names, refusing (before
/// anything is hashed) a signature that names none (`NotPst`: no key to
/// check it with); and whether two name one key (no client signs twice
/// with one key, and Sequoia would hash the data again for each: refused
/// as `SameKeyTwice` once no signature was found bad).
pub(super) fn named_keys(
    sigs: &[openpgp::packet::Signature],
    known: &Keyring,
) -> Result<(Vec<Vec<PublicKey>>, bool), SignatureProblem> {
    let mut named = Vec::new();
    let mut twice = false;
    let mut used: Vec<Fingerprint> = Vec::new();
    for sig in sigs {
        let issuers = sig.get_issuers();
        let keys: Vec<PublicKey> = known
            .naming(&issuers)
            .iter()
            .flat_map(|c| {
                c.keys()
                    .filter(|k| issuers.iter().any(|i| k.key().key_handle().aliases(i)))
                    .map(|k| k.key().clone().role_into_unspecified())
                    .collect::<Vec<_>>()
            })
            .collect();
        if keys.is_empty() {
            return Err(SignatureProblem::NotPst);
        }
        for key in &keys {
            let fingerprint = key.fingerprint();
            twice |= used.contains(&fingerprint);
            used.push(fingerprint);
        }
        named.push(keys);
    }
    Ok((named, twice))
}

/// Hands `data`'s text form (`\r\n`, `\r` and `\n` each made `\r\n`)
/// to `feed` in pieces of at most 64 KiB, never the whole: a text of
/// empty lines doubles in its text form. Octet by octet into a fixed
/// buffer, which costs less than a search per line when the lines are
/// empty.
fn in_text_form(data: &[u8], mut feed: impl FnMut(&[u8])) {
    const CHUNK: usize = 32 << 10;
    let mut out = vec![0u8; 2 * CHUNK];
    let mut after_cr = false;
    for chunk in data.chunks(CHUNK) {
        let mut o = 0;
        for &b in chunk {
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    out[o] = b'\r';
                    out[o + 1] = b'\n';
                    o += 2;
                }
                _ => {
                    out[o] = b;
                    o += 1;
                }
            }
            after_cr = b == b'\r';
        }
        feed(&out[..o]);
    }
}

/// Counts packets by kind against [`PacketLimits`].
#[derive(Default)]
pub(super) struct Census {
    signatures: usize,
    one_pass: usize,
    literals: usize,
    pkesks: usize,
    packets: usize,
}

impl Census {
    fn count(&mut self, tag: openpgp::packet::Tag) -> Result<(), TooMany> {
        use openpgp::packet::Tag;
        let over = |n: &mut usize, limit: usize, what: &'static str| {
            *n += 1;
            if *n > limit {
                Err(TooMany { what, limit })
            } else {
                Ok(())
            }
        };
        over(&mut self.packets, PacketLimits::PACKETS, "packets")?;
        match tag {
            Tag::Signature => over(&mut self.signatures, PacketLimits::SIGNATURES, "signatures"),
            Tag::OnePassSig => over(
                &mut self.one_pass,
                PacketLimits::SIGNATURES,
                "one-pass signatures",
            ),
            Tag::Literal => over(
                &mut self.literals,
                PacketLimits::LITERALS,
                "literal data packets",
            ),
            Tag::PKESK => over(&mut self.pkesks, PacketLimits::PKESKS, "PKESK packets"),
            _ => Ok(()),
        }
    }
}

/// Counts the packets of a detached signature, hashing nothing, parsed as
/// the detached verifier parses it (no cleartext-signature handling): only
/// signature (and marker) packets, none nested, at most
/// [`PacketLimits::SIGNATURES`]. Anything else, or anything it cannot
/// parse, is refused here, before any verifier sees it.
pub(super) fn census_detached(
    sig: &[u8],
    known: &Keyring,
    now: DateTime<Utc>,
) -> Result<Seen, SignatureProblem> {
    use openpgp::Packet;
    use openpgp::parse::{PacketParserBuilder, PacketParserResult};
    let mut ppr = PacketParserBuilder::from_bytes(sig)
        .and_then(|b| {
            b.automatic_hashing(false)
                .process_csf_message(false)
                .build()
        })
        .map_err(|_| SignatureProblem::Malformed)?;
    let mut seen = Seen::default();
    let mut packets = 0;
    while let PacketParserResult::Some(pp) = ppr {
        // Markers too: a block of a million of them is parsed one by one.
        packets += 1;
        if packets > PacketLimits::PACKETS {
            return Err(SignatureProblem::TooMany(TooMany {
                what: "packets",
                limit: PacketLimits::PACKETS,
            }));
        }
        match &pp.packet {
            Packet::Signature(sig) => {
                seen.note(sig, known, now);
                if seen.signatures > PacketLimits::SIGNATURES {
                    return Err(SignatureProblem::TooMany(TooMany {
                        what: "signatures",
                        limit: PacketLimits::SIGNATURES,
                    }));
                }
            }
            Packet::Marker(_) => {}
            _ => return Err(SignatureProblem::Malformed),
        }
        ppr = pp.next().map_err(|_| SignatureProblem::Malformed)?.1;
    }
    if seen.signatures == 0 {
        return Err(SignatureProblem::Malformed);
    }
    Ok(seen)
}

/// Counts the packets of a signed (or cleartext-signed) message, hashing
/// nothing, parsed as the verifier parses it, and reads the bodies of all
/// packets at most `limit` octets in all, so compressed data cannot make it
/// inflate without end. What it cannot parse is refused. Keeps the literal
/// data (for a cleartext-signed text, the text as Sequoia hashes it), for
/// [`precheck`] to check the signatures over before Sequoia verifies them.
pub(super) fn census(
    bytes: &[u8],
    limit: usize,
    known: &Keyring,
    now: DateTime<Utc>,
) -> Result<(Seen, Option<Secret>), SignatureProblem> {
    use openpgp::parse::{PacketParserBuilder, PacketParserResult};
    // A cleartext-signed text: its signature block is counted alone, its
    // text read in one pass (`cleartext`), not by Sequoia's reader line by
    // line. What Sequoia makes of it is one one-pass signature for each
    // signature, the text as literal data, then the signatures: within
    // every limit once the signatures are.
    if bytes.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
        let (text, block) = cleartext::signed_text(bytes).ok_or(SignatureProblem::Malformed)?;
        let seen = census_detached(&bytes[block..], known, now)?;
        if text.len() > limit {
            return Err(SignatureProblem::TooMany(TooMany {
                what: "octets of (decompressed) OpenPGP data",
                limit,
            }));
        }
        return Ok((seen, Some(Secret::new(text))));
    }
    let mut ppr = PacketParserBuilder::from_bytes(bytes)
        .and_then(|b| b.automatic_hashing(false).process_csf_message(true).build())
        .map_err(|_| SignatureProblem::Malformed)?;
    let mut census = Census::default();
    let mut seen = Seen::default();
    let mut read = 0usize;
    let mut literal = None;
    while let PacketParserResult::Some(mut pp) = ppr {
        census
            .count(pp.packet.tag())
            .map_err(SignatureProblem::TooMany)?;
        if let openpgp::Packet::Signature(sig) = &pp.packet {
            seen.note(sig, known, now);
        }
        let keep =
            (pp.packet.tag() == openpgp::packet::Tag::Literal).then(|| literal.insert(Vec::new()));
        read += read_body(&mut pp, limit - read.min(limit), keep)
            .map_err(|_| SignatureProblem::Malformed)?;
        if read > limit {
            return Err(SignatureProblem::TooMany(TooMany {
                what: "octets of (decompressed) OpenPGP data",
                limit,
            }));
        }
        ppr = pp.recurse().map_err(|_| SignatureProblem::Malformed)?.1;
    }
    Ok((seen, literal.map(Secret::new)))
}

/// Reads what is left of a packet's body (none for containers, which are
/// recursed into), at most `room + 1` octets; the octets read. Done by hand
/// so that the parser never drains an unbounded decompressed body itself.
pub(super) fn read_body(
    pp: &mut openpgp::parse::PacketParser<'_>,
    room: usize,
    keep: Option<&mut Vec<u8>>,
) -> std::io::Result<usize> {
    use openpgp::Packet;
    if matches!(pp.packet, Packet::CompressedData(_) | Packet::SEIP(_)) {
        return Ok(0);
    }
    let body = &mut pp.take(room as u64 + 1);
    match keep {
        Some(out) => body.read_to_end(out),
        None => std::io::copy(body, &mut std::io::sink()).map(|n| n as usize),
    }
}

/// The session key a census pass found, for the real pass to reuse (no
/// second public-key operation).
pub(super) type FoundKey = (Option<SymmetricAlgorithm>, SessionKey);

/// What the census of an encrypted mail found.
pub(super) struct Opened {
    /// The session key, if the list key could decrypt it.
    pub(super) key: Option<FoundKey>,
    /// PKESKs to the list key were tried (public-key operations spent)
    /// and none gave the session key: no second pass tries them again.
    pub(super) tried: bool,
    pub(super) seen: Seen,
    /// What a well-formed message, decrypted and its integrity check held,
    /// holds, so that it is never decrypted twice.
    pub(super) inside: Option<Inside>,
}

/// The decrypted content of an encrypted mail.
pub(super) enum Inside {
    /// No signature inside: the literal data (a signed MIME entity, then).
    Unsigned(Secret),
    /// A signed message: its one-pass signature, literal data and
    /// signature packets, serialized again without the encryption (and
    /// compression) around them, for a verifier to check once the
    /// [`precheck`] of its signatures over the literal data (here) held.
    Signed(Secret, Result<(), SignatureProblem>),
    /// A signature inside names intended recipients, none of them the list
    /// (a PST mail to someone else, re-encrypted to the list): Sequoia's
    /// decryptor would call that signature bad.
    NotForList,
}

/// Counts the packets of a mail encrypted to the list key, inside the
/// encryption too, hashing nothing: PKESKs (at most
/// [`PacketLimits::PKESK_TRIES`] tried with the list key), then the
/// decrypted packets, literal data read at most `limit` octets in all.
/// An excess is reported only once the integrity check at the end held, so
/// that a tampered ciphertext learns nothing from it. Anything the census
/// cannot decrypt or parse is left to the real pass to refuse.
pub(super) fn census_encrypted(
    list: &ListKey,
    p: &dyn Policy,
    ciphertext: &[u8],
    limit: usize,
    known: &Keyring,
    now: DateTime<Utc>,
) -> Result<Opened, OpenProblem> {
    use openpgp::packet::Packet;
    let mut walk = Walk {
        keypairs: list.decryption_keypairs(p),
        list_fingerprint: list.cert().fingerprint(),
        known,
        now,
        limit,
        seen: Seen::default(),
        census: Census::default(),
        excess: None,
        pkesks: Vec::new(),
        found: None,
        literal_bytes: 0,
        inner: Vec::new(),
        not_for_list: false,
        outside: false,
    };
    let well_formed = match walk.walk(ciphertext) {
        Ok(well_formed) => well_formed,
        Err(Stop::Undecided) => false,
        Err(Stop::NoKey { tried }) => {
            return Ok(Opened {
                key: None,
                tried,
                seen: walk.seen,
                inside: None,
            });
        }
        Err(Stop::Refused(problem)) => return Err(problem),
    };
    let Walk {
        seen,
        census,
        excess,
        found,
        mut inner,
        not_for_list,
        outside,
        ..
    } = walk;
    if found.is_none() {
        return Ok(Opened {
            key: None,
            tried: false,
            seen,
            inside: None,
        });
    }
    if let Some(too_many) = excess {
        return Err(OpenProblem::Signature(SignatureProblem::TooMany(too_many)));
    }
    let inside = (well_formed && !outside).then(|| {
        if not_for_list {
            return Some(Inside::NotForList);
        }
        if census.signatures == 0 && census.one_pass == 0 {
            return match inner.pop() {
                Some(Packet::Literal(mut l)) if inner.is_empty() => {
                    Some(Inside::Unsigned(Secret::new(l.set_body(Vec::new()))))
                }
                _ => None,
            };
        }
        let body = inner.iter().find_map(|p| match p {
            Packet::Literal(l) => Some(l.body()),
            _ => None,
        });
        let prechecked = precheck(&seen.read, known, body.unwrap_or_default());
        if let Err(problem) = prechecked {
            return Some(Inside::Signed(Secret::new(Vec::new()), Err(problem)));
        }
        let mut signed = Vec::new();
        for packet in &inner {
            openpgp::serialize::Marshal::serialize(packet, &mut signed).ok()?;
        }
        Some(Inside::Signed(Secret::new(signed), Ok(())))
    });
    Ok(Opened {
        key: found,
        tried: false,
        seen,
        inside: inside.flatten(),
    })
}

/// Why [`Walk::walk`] stopped before the end.
enum Stop {
    /// The census cannot tell (a parse it cannot follow before the
    /// session key): the real pass decides.
    Undecided,
    /// No PKESK gave the session key; `tried`: public-key operations were
    /// spent on it.
    NoKey { tried: bool },
    /// Refused, with the answer the real pass would give.
    Refused(OpenProblem),
}

/// The state of one census of an encrypted mail: the packets outside the
/// encryption and those it held (walked as a message of their own once
/// decrypted and its integrity check held).
struct Walk<'a> {
    keypairs: Vec<openpgp::crypto::KeyPair>,
    list_fingerprint: Fingerprint,
    known: &'a Keyring,
    now: DateTime<Utc>,
    limit: usize,
    seen: Seen,
    census: Census,
    excess: Option<TooMany>,
    pkesks: Vec<PKESK>,
    found: Option<FoundKey>,
    literal_bytes: usize,
    inner: Vec<openpgp::Packet>,
    not_for_list: bool,
    outside: bool,
}

impl Walk<'_> {
    /// Walks the packets of `data`; whether they form an OpenPGP message.
    fn walk(&mut self, data: &[u8]) -> Result<bool, Stop> {
        use buffered_reader::BufferedReader;
        use openpgp::packet::{Packet, SEIP};
        use openpgp::parse::{PacketParserBuilder, PacketParserResult};
        // Once decrypted (the integrity check held), what does not parse is
        // refused, as the real pass would refuse it.
        let unreadable = || match self.found {
            Some(_) => Stop::Refused(OpenProblem::Failed),
            None => Stop::Undecided,
        };
        let Ok(mut builder) = PacketParserBuilder::from_bytes(data) else {
            return Err(unreadable());
        };
        if self.found.is_some() {
            // What the encryption held lies one level down in Sequoia's
            // parse (inside the SEIP container): the same depth limit.
            builder = builder.max_recursion_depth(openpgp::parse::DEFAULT_MAX_RECURSION_DEPTH - 1);
        }
        let Ok(mut ppr) = builder.automatic_hashing(false).build() else {
            return Err(unreadable());
        };
        let mut literal: Option<Vec<u8>> = None;
        let mut held_well_formed = true;
        loop {
            let mut pp = match ppr {
                PacketParserResult::Some(pp) => pp,
                PacketParserResult::EOF(eof) => {
                    return Ok(eof.is_message().is_ok() && held_well_formed);
                }
            };
            if let Err(too_many) = self.census.count(pp.packet.tag()) {
                // Stop at once where no integrity check can follow (outside
                // the encryption): those packets are the sender's own.
                if self.found.is_none() {
                    return Err(Stop::Refused(OpenProblem::Signature(
                        SignatureProblem::TooMany(too_many),
                    )));
                }
                self.excess.get_or_insert(too_many);
            }
            match &pp.packet {
                Packet::SEIP(seip) if self.found.is_none() => {
                    let v1 = matches!(seip, SEIP::V1(_));
                    let mut tries = 0;
                    let mut held = None;
                    // A session key whose checksum held and whose quick
                    // check failed: the ciphertext was changed under a
                    // PKESK of ours (or one in 65,536 wrong keys). Told
                    // apart from "not for the list", it would be an oracle
                    // on the ciphertext (Mister and Zuccherato).
                    let mut quick_check_failed = false;
                    'pkesks: for pkesk in &self.pkesks {
                        for pair in &mut self.keypairs {
                            let ours = pkesk
                                .recipient()
                                .is_none_or(|id| pair.public().key_handle().aliases(&id));
                            if !ours {
                                continue;
                            }
                            tries += 1;
                            if tries > PacketLimits::PKESK_TRIES {
                                break 'pkesks;
                            }
                            let Some((algo, sk)) = pkesk.decrypt(pair, None) else {
                                continue;
                            };
                            // SEIPDv1 with AES in one pass here; the rest
                            // through Sequoia's decryptor, in this parser.
                            let here = match (v1, algo) {
                                (true, Some(algo)) => match pp.data_eof() {
                                    Ok(body) => seipd::open(algo, &sk, body),
                                    Err(_) => Seipd::NotHere,
                                },
                                _ => Seipd::NotHere,
                            };
                            match here {
                                Seipd::WrongKey => {
                                    quick_check_failed = true;
                                    continue;
                                }
                                Seipd::NotHere if pp.decrypt(algo, &sk).is_err() => continue,
                                Seipd::NotHere => {}
                                // Decrypted with the right key, and the
                                // integrity check failed: refused as the
                                // real pass would refuse it.
                                Seipd::Tampered => {
                                    return Err(Stop::Refused(OpenProblem::Failed));
                                }
                                Seipd::Plain(plain) => held = Some(plain),
                            }
                            self.found = Some((algo, sk));
                            break 'pkesks;
                        }
                    }
                    if self.found.is_none() {
                        if quick_check_failed {
                            return Err(Stop::Refused(OpenProblem::Failed));
                        }
                        return Err(Stop::NoKey { tried: tries > 0 });
                    }
                    if let Some(plain) = held {
                        // What the encryption held is a message of its
                        // own; the SEIP container stays unopened here. Its
                        // MDC packet counts, as in Sequoia's parse.
                        if let Err(too_many) = self.census.count(openpgp::packet::Tag::MDC) {
                            self.excess.get_or_insert(too_many);
                        }
                        held_well_formed = self.walk(plain.expose())?;
                    }
                }
                _ => {
                    // Every body read here, at most `limit` octets in all: no
                    // compressed packet inflates past it.
                    // The literal data is kept (at most `limit` octets, as
                    // the real pass would), for nothing to be decrypted twice.
                    let keep = (pp.packet.tag() == openpgp::packet::Tag::Literal)
                        .then(|| literal.insert(Vec::new()));
                    let room = self.limit - self.literal_bytes.min(self.limit);
                    let read = read_body(&mut pp, room, keep)
                        .map_err(|_| Stop::Refused(OpenProblem::Failed))?;
                    self.literal_bytes += read;
                    if self.literal_bytes > self.limit {
                        return Err(Stop::Refused(OpenProblem::TooLarge(self.limit)));
                    }
                }
            }
            // Once decrypted, what does not parse or fails its integrity
            // check is refused here, with the same answer the real pass
            // would give: an excess counted so far must not be thrown away
            // with it.
            let (packet, next) = match pp.recurse() {
                Ok(step) => step,
                Err(_) if self.found.is_some() => return Err(Stop::Refused(OpenProblem::Failed)),
                Err(_) => return Err(Stop::Undecided),
            };
            // Signatures or data outside the encryption (a signature over
            // the encrypted message, say) are left to Sequoia's decrypting
            // verifier: what is kept is only what the encryption held.
            let content = matches!(
                packet,
                Packet::Signature(_) | Packet::OnePassSig(_) | Packet::Literal(_)
            );
            self.outside |= content && self.found.is_none();
            // The MDC variant is deprecated because the parser checks it
            // itself for its stream users; this census reads it by hand.
            #[allow(deprecated)]
            match packet {
                Packet::PKESK(pkesk) => self.pkesks.push(pkesk),
                Packet::MDC(mdc) if !mdc.valid() => return Err(Stop::Refused(OpenProblem::Failed)),
                Packet::Signature(sig) => {
                    self.seen.note(&sig, self.known, self.now);
                    let named: Vec<&Fingerprint> = sig.intended_recipients().collect();
                    if !named.is_empty() && !named.contains(&&self.list_fingerprint) {
                        self.not_for_list = true;
                    }
                    drop(named);
                    self.inner.push(sig.into());
                }
                Packet::OnePassSig(ops) => self.inner.push(ops.into()),
                Packet::Literal(mut l) => {
                    l.set_body(literal.take().unwrap_or_default());
                    self.inner.push(l.into());
                }
                _ => {}
            }
            ppr = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::in_text_form;

    /// The text form written the plain way, one octet at a time.
    fn naive(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut after_cr = false;
        for &b in data {
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
                _ => out.push(b),
            }
            after_cr = b == b'\r';
        }
        out
    }

    #[test]
    fn text_form_in_pieces_is_the_text_form() {
        // Every mix of line ends, lines around the piece size, empty lines
        // by the hundred thousand, and ends with and without a line end.
        let alphabet: [&[u8]; 5] = [b"\r\n", b"\n", b"\r", b"a", b"\n\r"];
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        for i in 0..3000usize {
            let mut x = i;
            let mut data = Vec::new();
            for _ in 0..(i % 9) {
                data.extend_from_slice(alphabet[x % 5]);
                x = x / 5 + i;
            }
            inputs.push(data);
        }
        for len in [
            (64 << 10) - 3,
            (64 << 10) - 1,
            64 << 10,
            (64 << 10) + 1,
            200_000,
        ] {
            for end in ["", "\r", "\n", "\r\n"] {
                let mut data = vec![b'x'; len];
                data.extend_from_slice(end.as_bytes());
                data.extend_from_slice(b"y\nz");
                inputs.push(data);
            }
        }
        inputs.push(b"\n".repeat(300_000));
        inputs.push(b"\r\n".repeat(300_000));
        inputs.push(b"\r".repeat(300_000));
        for data in &inputs {
            let mut pieces = Vec::new();
            let mut largest = 0;
            in_text_form(data, |piece| {
                largest = largest.max(piece.len());
                pieces.extend_from_slice(piece);
            });
            let want = naive(data);
            assert_eq!(pieces, want, "input of {} octets", data.len());
            assert!(largest <= (64 << 10).max(data.len()));
            assert_eq!(crate::lines::crlf_only(data), want == *data);
        }
    }
}
