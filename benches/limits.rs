//! The packet-limit benchmark (issue 14, point 1): the worst mails that fit
//! in the default `max_message_size` (10 MiB), through the whole intake
//! check (`intake::examine`: MIME parse, packet census, verification), and
//! the CPU each costs before it is refused.
//!
//! ```text
//! cargo bench --bench limits
//! ```
//!
//! CPU time is this thread's own, from `/proc/thread-self/schedstat`
//! (nanoseconds on the CPU, but counted in 4 ms ticks on this project's
//! machines), the mean of ten runs.

use std::io::Write;

use chrono::{DateTime, Utc};
use embargo_relay::clock::{Clock, SystemClock};
use embargo_relay::config::Config;
use embargo_relay::intake::{Gate, examine};
use embargo_relay::{compose, crypto};
use sequoia_openpgp as openpgp;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::Marshal;
use sequoia_openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient, Signer};

const LIST: &str = "list@bench.example";
const PST: &str = "pst@bench.example";
const MAX: usize = 10 << 20;
const RUNS: u64 = 10;

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat")
}

fn armored(binary: &[u8], kind: openpgp::armor::Kind) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = openpgp::armor::Writer::new(&mut out, kind).unwrap();
    w.write_all(binary).unwrap();
    w.finalize().unwrap();
    out
}

/// How many binary octets fit in `budget` octets of armor with CRLF line
/// ends (4 characters per 3 octets, 66 per 64-character line).
fn binary_room(budget: usize) -> usize {
    budget / 66 * 64 / 4 * 3
}

/// `packet` serialized, repeated until `budget` octets of armor are used.
fn repeated(packet: &openpgp::Packet, budget: usize) -> (Vec<u8>, usize) {
    let mut one = Vec::new();
    packet.serialize(&mut one).unwrap();
    let n = binary_room(budget) / one.len();
    (one.repeat(n), n)
}

fn main() {
    let now: DateTime<Utc> = SystemClock.now();
    let born = now - chrono::Duration::days(1);
    let dir = tempfile::tempdir().unwrap();
    let list = crypto::generate_key(&format!("List <{LIST}>"), born, None).unwrap();
    let pst = crypto::generate_key(&format!("PST <{PST}>"), born, None).unwrap();
    std::fs::write(
        dir.path().join("list.key"),
        crypto::armored_secret(&list).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pst.asc"),
        crypto::armored_public(&pst.clone().strip_secret_key_material()).unwrap(),
    )
    .unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "[list]\naddress = \"{LIST}\"\nsecret_key = \"list.key\"\nstate_dir = \"state\"\n\
[outbound]\nsmarthost = \"smtp://127.0.0.1:25\"\n[policy]\ninline_pgp = true\n\
[[member]]\nemail = \"{PST}\"\norganization = \"PST\"\nkey = \"pst.asc\"\npst = true\n"
        ),
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap();
    assert_eq!(config.smtp.max_message_size, MAX);
    let p = crypto::policy();
    let pst_public = pst.clone().strip_secret_key_material();
    let pst_shared = std::sync::Arc::new(pst_public.clone());
    let certs = std::slice::from_ref(&pst_shared);
    // Seven members beside the PST: a signature may name any known key.
    let members: Vec<openpgp::Cert> = (0..7)
        .map(|i| crypto::generate_key(&format!("M{i} <m{i}@bench.example>"), born, None).unwrap())
        .collect();
    let mut known = vec![pst_shared.clone()];
    known.extend(
        members
            .iter()
            .map(|m| std::sync::Arc::new(m.clone().strip_secret_key_material())),
    );
    let gate = Gate {
        list: &config.list_key,
        pst: certs,
        pst_smime: &[],
        member_smime: &[],
        list_smime: None,
        known: &crypto::Keyring::new(known.clone()),
        policy: &config.policy,
        max_size: MAX,
        addresses: &[LIST],
        others: &[],
        shared_keys: &[],
    };
    let pair = |c: &openpgp::Cert| crypto::signing_keypair(&p, c, now).unwrap();
    let signer = || pair(&pst);
    let entity = compose::text_part(Some("x"), "Embargo-Until: 2030-01-01T00:00:00Z\n\nx\n");
    // One bad signature naming the PST key: over other bytes.
    let bad: openpgp::Packet =
        openpgp::packet::signature::SignatureBuilder::new(openpgp::types::SignatureType::Binary)
            .sign_message(&mut signer(), b"other bytes")
            .unwrap()
            .into();
    let room = MAX - 4096;

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    // 1. Detached: the signature part filled with one bad signature.
    let (sigs, n) = repeated(&bad, room);
    let sig = armored(&sigs, openpgp::armor::Kind::Signature);
    cases.push((
        format!("multipart/signed, {n} copies of one bad signature"),
        compose::multipart_signed(PST, LIST, "x", &entity, &sig),
    ));
    // 1b. Detached, one signature over a signed part that fills the mail:
    //     a bad one naming the PST key, and a good one by a stranger. No
    //     limit is passed; the part is hashed.
    let mut part = entity.clone();
    part.truncate(part.len() - 3);
    part.extend(std::iter::repeat_n(b'x', room - 8192));
    part.extend_from_slice(b"\r\n");
    let one_bad = armored(
        &{
            let mut b = Vec::new();
            bad.serialize(&mut b).unwrap();
            b
        },
        openpgp::armor::Kind::Signature,
    );
    cases.push((
        "multipart/signed, one bad PST signature over the whole part".to_owned(),
        compose::multipart_signed(PST, LIST, "x", &part, &one_bad),
    ));
    // 1c. Detached, eight bad text-mode signatures naming the PST key,
    //     dated a day ahead (so verified twice: now and a year ahead),
    //     over a part of empty lines (a hash update per line, per
    //     signature, in text mode).
    let mut lines = b"Content-Type: text/plain\r\n\r\n".to_vec();
    while lines.len() < room - 8192 {
        lines.extend_from_slice(b"\r\n");
    }
    // Two ways of hashing (the most the precheck takes, `HASHINGS`): SHA-512
    // for the PST and every other member, SHA-256 for the rest.
    let hashing = std::cell::Cell::new(0);
    let bad_text = |c: &openpgp::Cert| -> openpgp::Packet {
        hashing.set(hashing.get() + 1);
        let algo = match hashing.get() % 2 {
            1 => openpgp::types::HashAlgorithm::SHA512,
            _ => openpgp::types::HashAlgorithm::SHA256,
        };
        openpgp::packet::signature::SignatureBuilder::new(openpgp::types::SignatureType::Text)
            .set_hash_algo(algo)
            .set_signature_creation_time(now + chrono::Duration::days(1))
            .unwrap()
            .sign_message(&mut pair(c), b"other bytes")
            .unwrap()
            .into()
    };
    let mut eight = Vec::new();
    for c in std::iter::once(&pst).chain(&members) {
        bad_text(c).serialize(&mut eight).unwrap();
    }
    cases.push((
        "multipart/signed, 8 bad text signatures by 8 known keys in two hashes, dated ahead, over empty lines"
            .to_owned(),
        compose::multipart_signed(
            PST,
            LIST,
            "x",
            &lines,
            &armored(&eight, openpgp::armor::Kind::Signature),
        ),
    ));
    let stranger = crypto::generate_key("Stranger <x@stranger.example>", born, None).unwrap();
    let by_stranger = crypto::sign_detached(&p, &stranger, now, &part).unwrap();
    cases.push((
        "multipart/signed, a stranger's signature over the whole part".to_owned(),
        compose::multipart_signed(PST, LIST, "x", &part, &by_stranger),
    ));
    // 2. Inline (policy.inline_pgp on): a cleartext-signed text whose
    //    signature block is filled the same way.
    let inline = format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA512\r\n\r\nx\r\n{}",
        String::from_utf8(sig.clone())
            .unwrap()
            .replace('\n', "\r\n")
    );
    cases.push((
        format!("inline PGP, {n} copies of one bad signature"),
        format!(
            "From: {PST}\r\nTo: {LIST}\r\nSubject: x\r\nContent-Type: text/plain\r\n\r\n{inline}"
        )
        .into_bytes(),
    ));
    // 2b. Inline, the eight bad text-mode signatures dated ahead of 1c
    //     under a cleartext-signed text of empty lines.
    let mut inline = b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA512,SHA256\r\n\r\n".to_vec();
    while inline.len() < room - 8192 {
        inline.extend_from_slice(b"\r\n");
    }
    inline.extend_from_slice(
        String::from_utf8(armored(&eight, openpgp::armor::Kind::Signature))
            .unwrap()
            .replace('\n', "\r\n")
            .as_bytes(),
    );
    let mut mail =
        format!("From: {PST}\r\nTo: {LIST}\r\nSubject: x\r\nContent-Type: text/plain\r\n\r\n")
            .into_bytes();
    mail.extend_from_slice(&inline);
    cases.push((
        "inline PGP, 8 bad text signatures by 8 known keys in two hashes, dated ahead, over empty lines"
            .to_owned(),
        mail,
    ));
    // 3. Encrypted to the list: the outer packets filled with PKESKs to
    //    the list key, then a small signed message.
    let recipients = || -> Vec<Recipient> {
        list.keys()
            .with_policy(&p, None)
            .for_transport_encryption()
            .map(Into::into)
            .collect()
    };
    let sealed = |signers: usize, body: &[u8]| {
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let message = Encryptor::for_recipients(message, recipients())
            .build()
            .unwrap();
        let mut s = Signer::new(message, signer()).unwrap();
        for _ in 1..signers {
            s = s.add_signer(signer()).unwrap();
        }
        let message = s.build().unwrap();
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(body).unwrap();
        w.finalize().unwrap();
        out
    };
    let small = sealed(1, &entity);
    let pkesk = openpgp::PacketPile::from_bytes(&small)
        .unwrap()
        .into_children()
        .next()
        .unwrap();
    let (mut pkesks, n) = repeated(&pkesk, room - small.len() * 2);
    pkesks.extend_from_slice(&small);
    let encrypted = |binary: &[u8]| {
        compose::multipart_encrypted(
            PST,
            LIST,
            "x",
            &armored(binary, openpgp::armor::Kind::Message),
        )
    };
    cases.push((
        format!("encrypted, {n} PKESKs to the list key"),
        encrypted(&pkesks),
    ));
    // 4. Encrypted: nine signatures inside, over a literal that fills the
    //    mail (the census decrypts to the end, for the integrity check,
    //    before it reports the excess).
    let filler = vec![b'x'; binary_room(room) - 8192];
    cases.push((
        format!(
            "encrypted, 9 signatures inside, {} MiB literal",
            filler.len() >> 20
        ),
        encrypted(&sealed(9, &filler)),
    ));
    // 5. Encrypted to the list and signed inside by a key that is not on
    //    it: no limit is passed, so it is decrypted and verified in full.
    let stranger_signer = pair(&stranger);
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let message = Encryptor::for_recipients(message, recipients())
            .build()
            .unwrap();
        let message = Signer::new(message, stranger_signer)
            .unwrap()
            .build()
            .unwrap();
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(&filler).unwrap();
        w.finalize().unwrap();
    }
    cases.push((
        format!(
            "encrypted, signed inside by a stranger, {} MiB literal",
            filler.len() >> 20
        ),
        encrypted(&out),
    ));
    // 5a. Encrypted: the same eight bad text-mode signatures inside, over
    //     a literal of empty lines.
    let empty_lines = b"\n".repeat(filler.len());
    let mut signed = Vec::new();
    {
        let message = Message::new(&mut signed);
        let mut s = Signer::new(message, signer()).unwrap();
        for m in &members {
            s = s.add_signer(pair(m)).unwrap();
        }
        let message = s.build().unwrap();
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(&empty_lines).unwrap();
        w.finalize().unwrap();
    }
    let packets: Vec<openpgp::Packet> = openpgp::PacketPile::from_bytes(&signed)
        .unwrap()
        .into_children()
        .collect();
    let mut inner = Vec::new();
    let mut eight_keys = std::iter::once(&pst).chain(&members).rev();
    for packet in &packets {
        match packet {
            openpgp::Packet::Signature(_) => bad_text(eight_keys.next().unwrap())
                .serialize(&mut inner)
                .unwrap(),
            other => other.serialize(&mut inner).unwrap(),
        }
    }
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let mut message = Encryptor::for_recipients(message, recipients())
            .build()
            .unwrap();
        message.write_all(&inner).unwrap();
        message.finalize().unwrap();
    }
    cases.push((
        format!(
            "encrypted, 8 bad text signatures by 8 known keys in two hashes inside, {} MiB of empty lines",
            empty_lines.len() >> 20
        ),
        encrypted(&out),
    ));
    // 5b. Encrypted to the list, one bad signature inside naming the PST
    //     key: a PST-signed message whose signature is swapped for the bad
    //     one, written inside the encryption as it is.
    let mut signed = Vec::new();
    {
        let message = Message::new(&mut signed);
        let message = Signer::new(message, signer()).unwrap().build().unwrap();
        let mut w = LiteralWriter::new(message).build().unwrap();
        w.write_all(&filler).unwrap();
        w.finalize().unwrap();
    }
    let mut packets = openpgp::PacketPile::from_bytes(&signed)
        .unwrap()
        .into_children()
        .collect::<Vec<_>>();
    let last = packets.len() - 1;
    packets[last] = bad.clone();
    let mut inner = Vec::new();
    for packet in &packets {
        packet.serialize(&mut inner).unwrap();
    }
    let mut out = Vec::new();
    {
        let message = Message::new(&mut out);
        let mut message = Encryptor::for_recipients(message, recipients())
            .build()
            .unwrap();
        // Sequoia's stream writer passes bytes written below a layer as
        // they are: the packets above go inside the encryption whole.
        message.write_all(&inner).unwrap();
        message.finalize().unwrap();
    }
    cases.push((
        format!(
            "encrypted, one bad PST signature inside, {} MiB literal",
            filler.len() >> 20
        ),
        encrypted(&out),
    ));
    // 6. For scale: a legitimate encrypted announcement of the same size,
    //    which is read in full anyway.
    let mut big = entity.clone();
    big.truncate(big.len() - 3);
    big.extend_from_slice(&filler[..filler.len() - entity.len()]);
    big.extend_from_slice(b"\r\n");
    let sig = crypto::sign_detached(&p, &pst, now, &big).unwrap();
    let inner = compose::multipart_signed(PST, LIST, "x", &big, &sig);
    cases.push((
        "for scale: an encrypted, signed announcement of the same size".to_owned(),
        encrypted(&sealed(1, &inner)),
    ));

    println!("| mail (each within 10 MiB) | size | verdict | CPU | of which MIME parse |");
    println!("| --- | ---: | --- | ---: | ---: |");
    // `cargo bench --bench limits -- WORD`: only the cases whose name holds WORD.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    for (name, raw) in &cases {
        if !only.is_empty() && !only.iter().any(|w| name.contains(w.as_str())) {
            continue;
        }
        assert!(raw.len() <= MAX, "{name}: {} octets", raw.len());
        let mut spent = 0;
        let mut verdict = String::new();
        for _ in 0..RUNS {
            let start = cpu_ns();
            let result = examine(raw, &gate, &p, now);
            spent += cpu_ns() - start;
            verdict = match result {
                Ok(_) => "accepted".to_owned(),
                Err(e) => {
                    let r = e.reply();
                    format!("{} {}", r.code, r.text)
                }
            };
        }
        let mut parse = 0;
        for _ in 0..RUNS {
            let start = cpu_ns();
            let _ = embargo_relay::intake::mime::parse(raw, &config.policy.mime);
            parse += cpu_ns() - start;
        }
        println!(
            "| {name} | {:.1} MiB | {verdict} | {:.1} ms | {:.1} ms |",
            raw.len() as f64 / (1 << 20) as f64,
            spent as f64 / RUNS as f64 / 1e6,
            parse as f64 / RUNS as f64 / 1e6
        );
    }
}
