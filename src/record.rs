//! The record the spool keeps of each message, sealed to the list key, and
//! its framing (`to_bytes` / `from_bytes`). Read by the fan-out (to build
//! copies) and the key check (to find what is still due); written by the
//! intake.

use chrono::{DateTime, FixedOffset, Utc};

use crate::embargo::Terms;
use crate::secret::Secret;

/// What the spool keeps of a message, sealed to the list key: a verified
/// announcement (what the fan-out sends), or a post, join request, refusal
/// or notice to the PST (the same record, without an embargo).
#[derive(Clone)]
pub struct Record {
    pub signer: String,
    pub from: String,
    pub subject: String,
    /// The embargo terms from the signed field block.
    pub terms: Terms,
    /// Where the held public advisory goes at the embargo time (empty: none held).
    pub public_to: Vec<String>,
    /// The signed MIME entity, verbatim.
    pub entity: Secret,
    /// Its attachments' SHA-256 digests, worked out when first asked
    /// ([`Record::attachment_digests`]).
    digests: std::sync::OnceLock<Vec<(String, String)>>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Subject is embargoed content too.
        write!(f, "Record(signer {}, [redacted])", self.signer)
    }
}

/// The framing written: v5 adds the GitHub advisories
/// (`GitHub-Advisory:`) a release hook publishes.
const FORMAT: &[u8] = b"embargo-relay announcement v5\n";
/// v4 added the PST's terms (`Deployment:`, `TLP:`); still read.
const FORMAT_V4: &[u8] = b"embargo-relay announcement v4\n";
/// v3 added the announcement's scope (`Recipients:`); still read.
const FORMAT_V3: &[u8] = b"embargo-relay announcement v3\n";
/// The framing before v3, still read (its records have no scope).
const FORMAT_V2: &[u8] = b"embargo-relay announcement v2\n";

impl Record {
    /// A verified announcement's record.
    pub fn announcement(
        signer: String,
        from: String,
        subject: String,
        terms: Terms,
        public_to: Vec<String>,
        entity: Secret,
    ) -> Record {
        Record {
            signer,
            from,
            subject,
            terms,
            public_to,
            entity,
            digests: Default::default(),
        }
    }

    /// What the spool keeps for a message that carries no embargo (a
    /// member post, a join request, a notice to the PST).
    pub fn unembargoed(
        signer: String,
        from: String,
        subject: String,
        entity: Secret,
        now: DateTime<Utc>,
    ) -> Record {
        Record {
            signer,
            from,
            subject,
            terms: Terms {
                until: now,
                sender_offset: FixedOffset::east_opt(0).expect("UTC is a valid offset"),
                public_to: Vec::new(),
                override_reason: None,
                recipients: Vec::new(),
                deployment: None,
                tlp: None,
                github: Vec::new(),
            },
            public_to: Vec::new(),
            entity,
            digests: Default::default(),
        }
    }

    /// Each attachment of the entity with the SHA-256 of its content
    /// ([`crate::embargo::attachment_digests`]), worked out once.
    pub fn attachment_digests(&self) -> &[(String, String)] {
        self.digests
            .get_or_init(|| crate::embargo::attachment_digests(self.entity.expose()))
    }

    /// The record as the spool keeps it: framed, signed by and encrypted
    /// to the list's own key.
    pub fn seal(&self, list: &crate::crypto::ListKey) -> anyhow::Result<Vec<u8>> {
        list.seal_to_self(&crate::crypto::policy(), self.to_bytes().expose())
    }

    /// Frames the announcement for sealing: one line per field, then the entity.
    pub fn to_bytes(&self) -> Secret {
        let t = &self.terms;
        let fields = [
            self.signer.clone(),
            self.from.clone(),
            self.subject.clone(),
            t.until.to_rfc3339(),
            t.sender_offset.local_minus_utc().to_string(),
            t.public_to.join(","),
            t.override_reason.clone().unwrap_or_default(),
            self.public_to.join(","),
            t.recipients.join("\t"),
            t.deployment
                .as_ref()
                .map(|d| d.as_field().to_owned())
                .unwrap_or_default(),
            t.tlp.map(|l| l.label().to_owned()).unwrap_or_default(),
            crate::embargo::GithubAdvisory::as_field(&t.github),
        ];
        let mut out = Vec::with_capacity(self.entity.len() + 512);
        out.extend_from_slice(FORMAT);
        for field in fields {
            // Every field is a single line by construction (sanitized or generated).
            out.extend_from_slice(field.replace('\n', " ").as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(self.entity.expose());
        Secret::new(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Record> {
        let (version, mut rest) = if let Some(rest) = bytes.strip_prefix(FORMAT) {
            (5, rest)
        } else if let Some(rest) = bytes.strip_prefix(FORMAT_V4) {
            (4, rest)
        } else if let Some(rest) = bytes.strip_prefix(FORMAT_V3) {
            (3, rest)
        } else {
            (2, bytes.strip_prefix(FORMAT_V2)?)
        };
        let mut line = || {
            let end = rest.iter().position(|b| *b == b'\n')?;
            let field = std::str::from_utf8(&rest[..end]).ok()?.to_owned();
            rest = &rest[end + 1..];
            Some(field)
        };
        let (signer, from, subject) = (line()?, line()?, line()?);
        let until = DateTime::parse_from_rfc3339(&line()?)
            .ok()?
            .with_timezone(&Utc);
        let sender_offset = FixedOffset::east_opt(line()?.parse().ok()?)?;
        let public_to = line()?;
        let override_reason = line()?;
        let resolved_public_to = line()?;
        let recipients = if version >= 3 { line()? } else { String::new() };
        let (deployment, tlp) = if version >= 4 {
            (line()?, line()?)
        } else {
            (String::new(), String::new())
        };
        let github = if version >= 5 { line()? } else { String::new() };
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let terms = Terms {
            until,
            sender_offset,
            public_to: list(&public_to),
            override_reason: Some(override_reason).filter(|r| !r.is_empty()),
            recipients: recipients
                .split('\t')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
            deployment: crate::embargo::Deployment::from_kept(&deployment),
            tlp: crate::embargo::Tlp::from_kept(&tlp),
            github: crate::embargo::GithubAdvisory::from_kept(&github),
        };
        Some(Record {
            signer,
            from,
            subject,
            terms,
            public_to: list(&resolved_public_to),
            entity: Secret::new(rest.to_vec()),
            digests: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_framing_round_trips() {
        let a = Record::announcement(
            "ABCD".into(),
            "pst@example.org".into(),
            "CVE-2026-1: thing".into(),
            Terms {
                until: DateTime::parse_from_rfc3339("2026-12-01T16:00:00Z")
                    .unwrap()
                    .into(),
                sender_offset: FixedOffset::east_opt(-5 * 3600).unwrap(),
                public_to: vec!["a@x.org".into(), "b@y.org".into()],
                override_reason: None,
                recipients: vec!["Red Hat, Inc.".into(), "sec@sap.example".into()],
                deployment: Some(crate::embargo::Deployment::Terms(
                    "hosted providers may deploy".into(),
                )),
                tlp: Some(crate::embargo::Tlp::AmberStrict),
                github: crate::embargo::GithubAdvisory::from_kept(
                    "acme/widget GHSA-2345-6789-cfgh,acme/other.rs GHSA-jmpq-rvwx-2345",
                ),
            },
            vec!["a@x.org".into()],
            Secret::new(b"Content-Type: text/plain\r\n\r\nline\nwith\nnewlines\r\n".to_vec()),
        );
        let b = Record::from_bytes(a.to_bytes().expose()).unwrap();
        assert_eq!(
            (b.signer, b.from, b.subject),
            (a.signer.clone(), a.from.clone(), a.subject.clone())
        );
        assert_eq!(b.terms, a.terms);
        assert_eq!(b.public_to, a.public_to);
        assert_eq!(b.entity, a.entity);
        assert!(Record::from_bytes(b"something else").is_none());
        assert_eq!(b.terms.github.len(), 2);
        // A v4 record (before the GitHub advisories) reads as one without
        // them; a v3 record (before the terms were kept) as one without
        // terms; a v2 record (before the scope) as one for every member.
        let v5 = a.to_bytes();
        let mut lines: Vec<&[u8]> = v5.expose().splitn(14, |b| *b == b'\n').collect();
        lines[0] = b"embargo-relay announcement v4";
        lines.remove(12);
        let v4 = lines.join(&b'\n');
        let old = Record::from_bytes(&v4).unwrap();
        assert!(old.terms.github.is_empty());
        assert_eq!(old.terms.tlp, a.terms.tlp);
        assert_eq!(old.entity, a.entity);
        lines[0] = b"embargo-relay announcement v3";
        lines.drain(10..12);
        let v3 = lines.join(&b'\n');
        let old = Record::from_bytes(&v3).unwrap();
        assert_eq!((old.terms.deployment, old.terms.tlp), (None, None));
        assert_eq!(old.terms.recipients, a.terms.recipients);
        assert_eq!(old.entity, a.entity);
        lines[0] = b"embargo-relay announcement v2";
        lines.remove(9);
        let v2 = lines.join(&b'\n');
        let old = Record::from_bytes(&v2).unwrap();
        assert!(old.terms.recipients.is_empty());
        assert_eq!(old.public_to, a.public_to);
        assert_eq!(old.entity, a.entity);
    }
}
