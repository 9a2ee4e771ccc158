//! Finding members' certificates: Web Key Directory (advanced, then
//! direct method) and a keyserver speaking VKS (keys.openpgp.org) or HKP,
//! over HTTPS (`https`). What is found is only a candidate: the caller
//! decides (a fingerprint named by the PST or the operator, or the same
//! fingerprint as the member's own certificate for a refresh).

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::CertParser;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::policy::Policy;

pub mod https;
pub mod wkd;

use https::{Client, Url};

/// `[discovery]`, validated.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Look keys up by Web Key Directory (default yes).
    pub wkd: bool,
    pub keyserver: Option<Keyserver>,
    /// PEM certificates trusted besides the system's roots.
    pub extra_ca: Option<Vec<u8>>,
    /// Host names sent to another address (a split-horizon WKD, a test).
    pub connect_to: Vec<(String, SocketAddr)>,
    /// For each HTTPS exchange.
    pub timeout: Duration,
    /// Refresh every member's certificate weekly (default yes).
    pub refresh: bool,
}

/// A keyserver and the protocol it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyserver {
    pub url: Url,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The Verifying Keyserver API (keys.openpgp.org): an address is
    /// served only after its owner confirmed it.
    Vks,
    /// HKP (`/pks/lookup`): anyone may upload a key with any user ID.
    Hkp,
}

/// Where a certificate was looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    WkdAdvanced,
    WkdDirect,
    Vks,
    Hkp,
}

impl Source {
    /// Stored as the member's origin: `wkd` or `keyserver`.
    pub fn origin(self) -> &'static str {
        match self {
            Source::WkdAdvanced | Source::WkdDirect => "wkd",
            Source::Vks | Source::Hkp => "keyserver",
        }
    }

    /// Whether the source vouches that the address belongs to the key's
    /// holder (WKD: the domain serves it; VKS: the owner confirmed it).
    pub fn vouches_for_address(self) -> bool {
        !matches!(self, Source::Hkp)
    }
}

impl Source {
    /// A few letters for a short summary.
    pub fn short(self) -> &'static str {
        match self {
            Source::WkdAdvanced => "WKD advanced",
            Source::WkdDirect => "WKD direct",
            Source::Vks => "VKS",
            Source::Hkp => "HKP",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::WkdAdvanced => "Web Key Directory (advanced method)",
            Source::WkdDirect => "Web Key Directory (direct method)",
            Source::Vks => "keyserver (VKS)",
            Source::Hkp => "keyserver (HKP)",
        })
    }
}

/// What one lookup gave: the certificates, none (not there), or a failure.
#[derive(Debug)]
pub struct Lookup {
    pub source: Source,
    pub url: Url,
    pub outcome: Result<Vec<Cert>, String>,
}

impl Lookup {
    /// One line for a report: the source, the address and what happened.
    pub fn describe(&self) -> String {
        let what = match &self.outcome {
            Ok(certs) if certs.is_empty() => "not found".to_owned(),
            Ok(certs) => format!("{} certificate(s)", certs.len()),
            Err(e) => e.clone(),
        };
        format!("{} at {}: {what}", self.source, self.url)
    }
}

/// The largest answer read (a certificate with its own signatures is a
/// few KiB; keys.openpgp.org serves no third-party signatures at all).
pub const MAX_ANSWER: usize = 256 << 10;
/// The most certificates taken from one answer.
const MAX_CERTS: usize = 16;

/// Looks certificates up as `[discovery]` says.
pub struct Finder {
    client: Client,
    wkd: bool,
    keyserver: Option<Keyserver>,
}

impl Finder {
    pub fn new(config: &DiscoveryConfig) -> Result<Finder, String> {
        Ok(Finder {
            client: Client::new(
                config.extra_ca.as_deref(),
                config.connect_to.clone(),
                config.timeout,
                MAX_ANSWER,
            )?,
            wkd: config.wkd,
            keyserver: config.keyserver.clone(),
        })
    }

    async fn fetch(&self, source: Source, url: Url) -> Lookup {
        let outcome = match self.client.get(&url, "application/pgp-keys").await {
            // Parsing verifies every self-signature: CPU work, off the
            // runtime's workers.
            Ok(r) if r.status == 200 => tokio::task::spawn_blocking(move || parse_certs(&r.body))
                .await
                .unwrap_or_else(|_| Err("the answer could not be read".to_owned())),
            Ok(r) if r.status == 404 => Ok(Vec::new()),
            Ok(r) => Err(format!("answered HTTP {}", r.status)),
            Err(https::Failure::NoSuchHost) => Ok(Vec::new()),
            Err(https::Failure::Other(e)) => Err(e),
        };
        Lookup {
            source,
            url,
            outcome,
        }
    }

    /// Web Key Directory for `email`: the advanced method; the direct one
    /// when the advanced gave nothing (its host may not exist).
    pub async fn wkd(&self, email: &str) -> Vec<Lookup> {
        if !self.wkd {
            return Vec::new();
        }
        let Some([advanced, direct]) = wkd::urls(email) else {
            return Vec::new();
        };
        let first = self.fetch(Source::WkdAdvanced, advanced).await;
        if matches!(&first.outcome, Ok(c) if !c.is_empty()) {
            return vec![first];
        }
        let second = self.fetch(Source::WkdDirect, direct).await;
        vec![first, second]
    }

    /// Whether the keyserver vouches for addresses (VKS).
    pub fn keyserver_vouches(&self) -> bool {
        self.keyserver
            .as_ref()
            .is_some_and(|k| k.protocol == Protocol::Vks)
    }

    /// The keyserver (if any) for `email`.
    pub async fn keyserver_by_email(&self, email: &str) -> Option<Lookup> {
        let ks = self.keyserver.as_ref()?;
        let e = percent(email);
        let (source, path) = match ks.protocol {
            Protocol::Vks => (Source::Vks, format!("/vks/v1/by-email/{e}")),
            Protocol::Hkp => (
                Source::Hkp,
                format!("/pks/lookup?op=get&options=mr&search={e}"),
            ),
        };
        Some(
            self.fetch(source, ks.url.with_path(&join(&ks.url, &path)))
                .await,
        )
    }

    /// The keyserver (if any) for the certificate `fingerprint` (hex).
    pub async fn keyserver_by_fingerprint(&self, fingerprint: &str) -> Option<Lookup> {
        let ks = self.keyserver.as_ref()?;
        let fpr = fingerprint.to_ascii_uppercase();
        let (source, path) = match ks.protocol {
            Protocol::Vks => (Source::Vks, format!("/vks/v1/by-fingerprint/{fpr}")),
            Protocol::Hkp => (
                Source::Hkp,
                format!("/pks/lookup?op=get&options=mr&search=0x{fpr}"),
            ),
        };
        Some(
            self.fetch(source, ks.url.with_path(&join(&ks.url, &path)))
                .await,
        )
    }

    /// Finds `email`'s certificate: WKD first, then the keyserver. With
    /// `fingerprint`, only that certificate; without, the one certificate
    /// for the address from a source that vouches for it (WKD, VKS). It
    /// must carry the address as a user ID and be able to receive
    /// encrypted mail. The error says what each source answered.
    pub async fn discover(
        &self,
        email: &str,
        fingerprint: Option<&str>,
        p: &dyn Policy,
        now: DateTime<Utc>,
    ) -> Result<Found, Missing> {
        let mut lookups = self.wkd(email).await;
        let mut why: Vec<String> = Vec::new();
        if let Some(found) = pick(&lookups, email, fingerprint, p, now, &mut why) {
            return Ok(found);
        }
        if let Some(l) = self.keyserver_by_email(email).await {
            lookups.push(l);
            if let Some(found) = pick(
                &lookups[lookups.len() - 1..],
                email,
                fingerprint,
                p,
                now,
                &mut why,
            ) {
                return Ok(found);
            }
        }
        if lookups.is_empty() {
            let text = "no source to look in: [discovery] has wkd = false and no keyserver";
            return Err(Missing {
                text: text.to_owned(),
                short: text.to_owned(),
            });
        }
        let mut text = format!("no certificate for {email} was found:");
        for l in &lookups {
            text.push_str(&format!("\n  - {}", l.describe()));
        }
        for w in why {
            text.push_str(&format!("\n  - {w}"));
        }
        let short = lookups
            .iter()
            .map(|l| {
                let what = match &l.outcome {
                    Ok(c) if c.is_empty() => "none",
                    Ok(_) => "none fits",
                    Err(_) => "failed",
                };
                format!("{} {what}", l.source.short())
            })
            .collect::<Vec<_>>()
            .join(", ");
        Err(Missing { text, short })
    }
}

/// Why nothing was found: in full (each source, its address and answer),
/// and in a few words without the address (for a refusal).
#[derive(Debug)]
pub struct Missing {
    pub text: String,
    pub short: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Runs a lookup to its end from code that is not async (the operator's
/// commands, the intake's `Roster-Add`): on a thread of its own with its
/// own runtime, so it works inside and outside the daemon's runtime.
pub fn blocking<T: Send>(work: impl std::future::Future<Output = T> + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(work))
                .map_err(|e| format!("cannot start the lookup: {e}"))
        })
        .join()
        .unwrap_or_else(|_| Err("the lookup panicked".to_owned()))
    })
}

/// A certificate found, and where.
#[derive(Debug, Clone)]
pub struct Found {
    pub cert: Cert,
    pub source: Source,
    pub url: Url,
}

/// The certificate `lookups` give for `email` (see [`Finder::discover`]);
/// reasons a certificate was passed over go to `why`.
fn pick(
    lookups: &[Lookup],
    email: &str,
    fingerprint: Option<&str>,
    p: &dyn Policy,
    now: DateTime<Utc>,
    why: &mut Vec<String>,
) -> Option<Found> {
    for l in lookups {
        let Ok(certs) = &l.outcome else { continue };
        let mut fitting = Vec::new();
        for cert in certs {
            let fpr = cert.fingerprint().to_hex();
            if fingerprint.is_some_and(|f| !f.eq_ignore_ascii_case(&fpr)) {
                why.push(format!(
                    "{} served {fpr}, not the fingerprint given",
                    l.source
                ));
                continue;
            }
            if !crate::crypto::has_email(cert, p, now, email) {
                why.push(format!(
                    "{} served {fpr}, which does not carry the address",
                    l.source
                ));
                continue;
            }
            if let Err(e) = crate::crypto::usable_for_encryption(cert, p, now) {
                why.push(format!(
                    "{} served {fpr}, which cannot receive: {e}",
                    l.source
                ));
                continue;
            }
            fitting.push(cert);
        }
        match (fitting.as_slice(), fingerprint) {
            ([], _) => {}
            ([_, _, ..], None) => why.push(format!(
                "{} served several certificates ({}): name one by its fingerprint",
                l.source,
                fitting
                    .iter()
                    .map(|c| c.fingerprint().to_hex())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            ([cert], None) if !l.source.vouches_for_address() => why.push(format!(
                "{} served {}, but an HKP keyserver does not check addresses: name the fingerprint to take it",
                l.source,
                cert.fingerprint()
            )),
            ([cert, ..], _) => {
                return Some(Found {
                    cert: (*cert).clone(),
                    source: l.source,
                    url: l.url.clone(),
                });
            }
        }
    }
    None
}

/// The certificates of an answer (armored or binary), public parts only.
fn parse_certs(body: &[u8]) -> Result<Vec<Cert>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let parser = CertParser::from_bytes(body)
        .map_err(|_| "the answer is not an OpenPGP certificate".to_owned())?;
    let mut out = Vec::new();
    for cert in parser.take(MAX_CERTS) {
        match cert {
            Ok(c) => out.push(own_parts(&c)?),
            Err(_) => return Err("the answer holds a damaged certificate".to_owned()),
        }
    }
    if out.is_empty() {
        return Err("the answer is not an OpenPGP certificate".to_owned());
    }
    Ok(out)
}

/// `cert` as its holder made it: the primary key, user IDs and subkeys
/// with their verified self-signatures and self-revocations only. What
/// anyone else may add (third-party certifications, signatures that do not
/// verify, subkeys without a binding, user attributes) is dropped, so a
/// flooded key on a keyserver cannot grow what the list keeps. Public
/// parts only.
pub fn own_parts(cert: &Cert) -> Result<Cert, String> {
    use sequoia_openpgp::Packet;
    let cert = cert.clone().strip_secret_key_material();
    let mut packets: Vec<Packet> = Vec::new();
    let pk = cert.primary_key();
    packets.push(pk.key().clone().role_into_primary().into());
    packets.extend(
        pk.self_signatures()
            .chain(pk.self_revocations())
            .cloned()
            .map(Packet::from),
    );
    for ua in cert.userids() {
        packets.push(ua.userid().clone().into());
        packets.extend(
            ua.self_signatures()
                .chain(ua.self_revocations())
                .cloned()
                .map(Packet::from),
        );
    }
    for ka in cert.keys().subkeys() {
        let sigs: Vec<Packet> = ka
            .self_signatures()
            .chain(ka.self_revocations())
            .cloned()
            .map(Packet::from)
            .collect();
        if sigs.is_empty() {
            continue;
        }
        packets.push(ka.key().clone().role_into_subordinate().into());
        packets.extend(sigs);
    }
    Cert::from_packets(packets.into_iter())
        .map_err(|_| "the answer holds a damaged certificate".to_owned())
}

/// `path` under the keyserver's own path prefix (a keyserver configured as
/// `https://host/prefix` is asked at `/prefix/vks/...`).
fn join(base: &Url, path: &str) -> String {
    let prefix = base
        .path
        .split('?')
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    format!("{prefix}{path}")
}

/// Percent-encodes everything but the unreserved characters (RFC 3986).
pub(crate) fn percent(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Merges what a source served for the same certificate into `cert`:
/// new self-signatures (an extended expiry), new subkeys, revocations.
/// `None` when nothing served has `cert`'s fingerprint.
pub fn merge_same(cert: &Cert, served: &[Cert]) -> Option<Cert> {
    let mut merged: Option<Cert> = None;
    for s in served
        .iter()
        .filter(|s| s.fingerprint() == cert.fingerprint())
    {
        let base = merged.take().unwrap_or_else(|| cert.clone());
        merged = base.merge_public(s.clone()).ok();
    }
    merged
}

/// What changed between `old` and `new` (the same certificate), in words;
/// empty when nothing a reader would notice changed.
pub fn changes(old: &Cert, new: &Cert, p: &dyn Policy, now: DateTime<Utc>) -> Vec<String> {
    use sequoia_openpgp::serialize::SerializeInto;
    if old.to_vec().ok() == new.to_vec().ok() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let at = std::time::SystemTime::from(now);
    let revoked = |c: &Cert| {
        matches!(
            c.revocation_status(p, at),
            sequoia_openpgp::types::RevocationStatus::Revoked(_)
        )
    };
    if revoked(new) && !revoked(old) {
        out.push("revoked by its holder".to_owned());
    }
    let until = |c: &Cert| {
        crate::crypto::usable_for_encryption(c, p, now)
            .ok()
            .map(|_| ())
    };
    let ends = |c: &Cert| -> String {
        let vc = match c.with_policy(p, at) {
            Ok(vc) => vc,
            Err(_) => return "unusable".into(),
        };
        match vc.primary_key().key_expiration_time() {
            Some(t) => DateTime::<Utc>::from(t).format("%Y-%m-%d").to_string(),
            None => "never".into(),
        }
    };
    let (before, after) = (ends(old), ends(new));
    if before != after {
        out.push(format!("expiry {before} → {after}"));
    }
    // Subkeys the policy accepts as bound (a forged one is not counted).
    let subkeys = |c: &Cert| {
        c.with_policy(p, at)
            .map_or(0, |vc| vc.keys().subkeys().count())
    };
    if subkeys(new) > subkeys(old) {
        out.push(format!("{} new subkey(s)", subkeys(new) - subkeys(old)));
    }
    if until(old).is_some() != until(new).is_some() && out.is_empty() {
        out.push("usability for encryption changed".into());
    }
    if out.is_empty() {
        out.push("new signatures".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_percent_encoded_for_the_keyserver() {
        assert_eq!(percent("a.b+c@x.example"), "a.b%2Bc%40x.example");
        let base = Url::parse("https://keys.example/prefix/").unwrap();
        assert_eq!(
            join(&base, "/vks/v1/by-email/x"),
            "/prefix/vks/v1/by-email/x"
        );
        let root = Url::parse("https://keys.example").unwrap();
        assert_eq!(join(&root, "/pks/lookup"), "/pks/lookup");
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .into()
    }

    fn born() -> std::time::SystemTime {
        (at() - chrono::Duration::hours(1)).into()
    }

    fn cert(uid: &str) -> Cert {
        sequoia_openpgp::cert::CertBuilder::general_purpose(Some(uid))
            .set_creation_time(born())
            .generate()
            .unwrap()
            .0
            .strip_secret_key_material()
    }

    fn lookup(source: Source, certs: Vec<Cert>) -> Lookup {
        Lookup {
            source,
            url: Url::parse("https://k.example/x").unwrap(),
            outcome: Ok(certs),
        }
    }

    #[test]
    fn a_certificate_is_taken_only_when_it_is_the_one_for_the_address() {
        let p = crate::crypto::policy();
        let now = at();
        let (a, b) = (cert("A <a@x.example>"), cert("B <a@x.example>"));
        let other = cert("O <o@x.example>");
        let pick = |l: &[Lookup], fpr: Option<&str>| {
            let mut why = Vec::new();
            (
                pick(l, "a@x.example", fpr, &p, now, &mut why).map(|f| f.cert.fingerprint()),
                why.join("; "),
            )
        };
        // One certificate with the address from WKD or VKS: taken.
        for source in [Source::WkdAdvanced, Source::Vks] {
            assert_eq!(
                pick(&[lookup(source, vec![a.clone()])], None).0,
                Some(a.fingerprint())
            );
        }
        // From HKP (which checks no address) only when named.
        let hkp = [lookup(Source::Hkp, vec![a.clone()])];
        let (got, why) = pick(&hkp, None);
        assert!(
            got.is_none() && why.contains("name the fingerprint"),
            "{why}"
        );
        assert_eq!(
            pick(&hkp, Some(&a.fingerprint().to_hex())).0,
            Some(a.fingerprint())
        );
        // Two for the address: only the one named.
        let both = [lookup(Source::WkdDirect, vec![a.clone(), b.clone()])];
        let (got, why) = pick(&both, None);
        assert!(
            got.is_none() && why.contains("several certificates"),
            "{why}"
        );
        assert_eq!(
            pick(&both, Some(&b.fingerprint().to_hex())).0,
            Some(b.fingerprint())
        );
        // Without the address as a user ID: never.
        let (got, why) = pick(&[lookup(Source::WkdAdvanced, vec![other])], None);
        assert!(
            got.is_none() && why.contains("does not carry the address"),
            "{why}"
        );
    }

    #[test]
    fn a_refresh_merges_only_the_same_certificate_and_says_what_changed() {
        let p = crate::crypto::policy();
        let now = at();
        let (key, revocation) =
            sequoia_openpgp::cert::CertBuilder::general_purpose(Some("A <a@x.example>"))
                .set_creation_time(born())
                .generate()
                .unwrap();
        let public = key.clone().strip_secret_key_material();
        assert!(merge_same(&public, &[cert("B <a@x.example>")]).is_none());
        let same = merge_same(&public, std::slice::from_ref(&public)).unwrap();
        assert!(changes(&public, &same, &p, now).is_empty());
        let revoked = public.clone().insert_packets(revocation).unwrap().0;
        let merged = merge_same(&public, &[revoked]).unwrap();
        assert_eq!(
            changes(&public, &merged, &p, now),
            vec!["revoked by its holder"]
        );
    }

    #[test]
    fn only_what_the_holder_signed_is_kept_of_a_served_certificate() {
        use sequoia_openpgp::Packet;
        use sequoia_openpgp::serialize::SerializeInto;
        let (holder, _) =
            sequoia_openpgp::cert::CertBuilder::general_purpose(Some("A <a@x.example>"))
                .set_creation_time(born())
                .generate()
                .unwrap();
        let (other, _) =
            sequoia_openpgp::cert::CertBuilder::general_purpose(Some("O <o@x.example>"))
                .set_creation_time(born())
                .generate()
                .unwrap();
        // Someone else's certification of the user ID, and a subkey of
        // another certificate put in without a binding signature.
        let mut signer = other
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let certification = holder
            .userids()
            .next()
            .unwrap()
            .userid()
            .certify(
                &mut signer,
                &holder,
                sequoia_openpgp::types::SignatureType::GenericCertification,
                None,
                None,
            )
            .unwrap();
        let stray: Packet = other
            .keys()
            .subkeys()
            .next()
            .unwrap()
            .key()
            .clone()
            .parts_into_public()
            .into();
        let flooded = holder
            .clone()
            .strip_secret_key_material()
            .insert_packets(vec![Packet::from(certification), stray])
            .unwrap()
            .0;
        assert_eq!(
            flooded.keys().subkeys().count(),
            holder.keys().subkeys().count() + 1
        );
        let kept = own_parts(&flooded).unwrap();
        assert_eq!(
            kept.keys().subkeys().count(),
            holder.keys().subkeys().count()
        );
        assert_eq!(kept.userids().next().unwrap().certifications().count(), 0);
        assert_eq!(
            kept.to_vec().unwrap(),
            holder.clone().strip_secret_key_material().to_vec().unwrap()
        );
    }

    #[test]
    fn an_answer_is_read_as_certificates_or_named_as_junk() {
        let (cert, _) =
            sequoia_openpgp::cert::CertBuilder::general_purpose(Some("a <a@x.example>"))
                .generate()
                .unwrap();
        let armored = crate::crypto::armored_public(&cert).unwrap();
        let got = parse_certs(&armored).unwrap();
        assert_eq!(got[0].fingerprint(), cert.fingerprint());
        assert!(!got[0].is_tsk());
        assert!(parse_certs(b"  \n").unwrap().is_empty());
        assert!(parse_certs(b"<html>not found</html>").is_err());
    }
}
