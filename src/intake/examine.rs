//! The pure decision on one mail: `examine` parses (bounded), verifies and
//! authorizes a raw mail against a `Gate` and says what it is. No I/O, no
//! clock of its own; fuzzed (`fuzz/fuzz_targets/verify.rs`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use sequoia_openpgp::policy::Policy;

use crate::config::{MemberPosts, PolicyConfig};
use crate::crypto::ListKey;
use crate::embargo;
use crate::embargo::{PstCommand, Request, TermsError};
use crate::record::Record;
use crate::secret::Secret;

use super::rejection::Rejection;
use super::verify::SignedBy;
use super::{mime, verify};

/// What a mail is checked against.
pub struct Gate<'a> {
    /// Decrypts mail encrypted to the list.
    pub list: &'a ListKey,
    /// The certificates allowed to announce.
    pub pst: &'a [Arc<Cert>],
    /// The PST's pinned S/MIME certificates: an S/MIME-signed mail is
    /// verified against these alone.
    pub pst_smime: &'a [crate::crypto::smime::SmimeCert],
    /// The S/MIME members' certificates (their signed, encrypted posts).
    pub member_smime: &'a [crate::crypto::smime::SmimeCert],
    /// Decrypts mail encrypted to the list's S/MIME certificate.
    pub list_smime: Option<&'a crate::crypto::smime::SmimeIdentity>,
    /// Every certificate whose signature is checked: the PST's and the
    /// other members' (whose posts are relayed under `policy.member_posts`).
    pub known: &'a crate::crypto::Keyring,
    pub policy: &'a PolicyConfig,
    /// The largest decrypted content accepted (the message size limit).
    pub max_size: usize,
    /// Where this list is reached (its address and request address): a
    /// signed To/Cc or `List:` field must name one of them.
    pub addresses: &'a [&'a str],
    /// The addresses of the daemon's other lists: a signed To/Cc that
    /// names one of them beside this list is refused.
    pub others: &'a [String],
    /// Fingerprints of certificates another list of the daemon knows too
    /// (in any role): a mail they sign must name its list, or it could be
    /// one signed for the other list (a member of both can re-encrypt what
    /// it received there to this list's key).
    pub shared_keys: &'a [String],
}

/// Parses and authorizes a raw mail. Pure: no I/O, no clock of its own.
pub fn examine(
    raw: &[u8],
    gate: &Gate<'_>,
    p: &dyn Policy,
    now: DateTime<Utc>,
) -> Result<Examined, Rejection> {
    let policy = gate.policy;
    // What SMTP refuses in DATA is refused from a pipe or a mailbox too: a
    // bare CR can make the relayed entity parse differently from what a
    // text-mode signature covered.
    if crate::lines::has_bare_cr(raw) {
        return Err(Rejection::Malformed(
            "bare CR in the message; lines must end in CRLF",
        ));
    }
    let mail = mime::parse(raw, &policy.mime)?;
    let (from, outer_subject) = (mail.from.clone(), mail.outer_subject.clone());
    let references = mail.references.clone();
    let (auth, signed_part, encrypted) = verify::authorize(mail, gate, p, now)?;
    // A signature binds its list: where the signed entity carries its own
    // To/Cc (protected headers), this list must be among them (and a PST
    // mail's `List:`, below, must name it).
    let ours = |a: &str| gate.addresses.iter().any(|l| l.eq_ignore_ascii_case(a));
    let theirs = |a: &str| gate.others.iter().any(|l| l.eq_ignore_ascii_case(a));
    let named = mime::protected_recipients(signed_part.expose());
    let other_list = named
        .as_ref()
        .is_some_and(|named| !named.iter().any(|a| ours(a)));
    let shared = |signer: &str| {
        gate.shared_keys
            .iter()
            .any(|f| f.eq_ignore_ascii_case(signer))
    };
    let two_lists = named
        .as_ref()
        .is_some_and(|named| named.iter().any(|a| ours(a)) && named.iter().any(|a| theirs(a)));
    let subject = relayed_subject(mime::protected_subject(signed_part.expose()), outer_subject);
    if auth.role == SignedBy::Member {
        if other_list {
            return Err(Rejection::OtherList("To/Cc"));
        }
        if two_lists {
            return Err(Rejection::TwoLists);
        }
        if named.is_none() && shared(&auth.signer) {
            return Err(Rejection::Unbound);
        }
        if let Some(embargo) = acknowledged(signed_part.expose())? {
            // Not a post: recorded, never relayed, whatever the policy.
            if !encrypted {
                return Err(Rejection::MemberPost(
                    "an acknowledgement must be encrypted to the list key, like a post (a reply may quote the announcement)",
                ));
            }
            verify::fresh(&auth, now, policy.signature_max_age)?;
            return Ok(Examined::Acknowledgement {
                signer: auth.signer,
                from,
                embargo,
                digests: auth.signature_digests,
            });
        }
        if policy.member_posts == MemberPosts::Reject {
            return Err(Rejection::MemberPost(
                "this list does not relay member posts (policy.member_posts = \"reject\")",
            ));
        }
        if !encrypted {
            return Err(Rejection::MemberPost(
                "a member post must be encrypted to the list key, not only signed",
            ));
        }
        verify::fresh(&auth, now, policy.signature_max_age)?;
        let post = Post {
            signer: auth.signer,
            from,
            subject,
            references,
            entity: signed_part,
        };
        return Ok(Examined::MemberPost(post, auth.signature_digests));
    }
    let freshness = verify::fresh(&auth, now, policy.signature_max_age);
    let sender = Sender {
        signer: auth.signer,
        from,
        subject,
        digests: auth.signature_digests,
    };
    let refused = |rejection, sender| Ok(Examined::Refused { rejection, sender });
    if let Err(stale) = freshness {
        return refused(stale, sender);
    }
    // Told to the PST (encrypted): a mail of theirs replayed from another
    // list, or their own mistake in `List:`.
    if other_list {
        return refused(Rejection::OtherList("To/Cc"), sender);
    }
    if two_lists {
        return refused(Rejection::TwoLists, sender);
    }
    let entity = signed_part.expose();
    let request = match embargo::request(entity, now, policy.max_embargo) {
        Ok((_, Some(list))) if !ours(&list) => {
            return refused(Rejection::OtherList("List: field"), sender);
        }
        // A key that announces on several lists must say which one: else
        // a mail signed for one could be replayed to another.
        Ok((_, None)) if named.is_none() && shared(&sender.signer) => {
            return refused(Rejection::Unbound, sender);
        }
        Ok((request, _)) => request,
        Err(e) => return refused(Rejection::Embargo(e), sender),
    };
    let terms = match request {
        Request::Announce(terms) => terms,
        Request::PstCommand(command) => {
            let keys = match command {
                PstCommand::RosterAdd { .. } => mime::attached_keys(entity),
                _ => None,
            };
            return Ok(Examined::PstCommand {
                command,
                sender,
                keys,
            });
        }
    };
    let public_to = match embargo::public_advisory(entity) {
        None => Vec::new(),
        Some(_) if !terms.public_to.is_empty() => terms.public_to.clone(),
        Some(_) if !policy.public_recipients.is_empty() => policy.public_recipients.clone(),
        Some(_) => return refused(Rejection::Embargo(TermsError::NoPublicRecipients), sender),
    };
    let announcement = Record::announcement(
        sender.signer,
        sender.from,
        sender.subject,
        terms,
        public_to,
        signed_part,
    );
    Ok(Examined::Announcement(
        announcement,
        sender.digests,
        references,
    ))
}

/// An authenticated PST sender and its mail's identity.
#[derive(Debug, Clone)]
pub struct Sender {
    /// Fingerprint of the PST certificate that signed.
    pub signer: String,
    /// The From address (a user ID of that certificate).
    pub from: String,
    /// The Subject the relay would use.
    pub subject: String,
    /// Identities of the mail's signatures (replay cache).
    pub digests: Vec<String>,
}

/// A member's verified post (a reply to an announcement).
#[derive(Debug)]
pub struct Post {
    /// Fingerprint of the member's certificate.
    pub signer: String,
    pub from: String,
    pub subject: String,
    /// The Message-IDs it replies to (In-Reply-To, References).
    pub references: Vec<String>,
    /// The signed entity, verbatim.
    pub entity: Secret,
}

/// What an authorized mail turned out to be.
#[derive(Debug)]
pub enum Examined {
    /// A member's post, with its signature identities.
    MemberPost(Post, Vec<String>),
    /// A new announcement, with its signature identities and the
    /// Message-IDs it replies to.
    Announcement(Record, Vec<String>, Vec<String>),
    /// A PST command: on an existing embargo, or a roster change.
    PstCommand {
        command: PstCommand,
        sender: Sender,
        /// A certificate attached to the signed entity (for `Roster-Add`).
        keys: Option<Vec<u8>>,
    },
    /// A member's acknowledgement of an embargo (`Acknowledge: <id>`).
    Acknowledgement {
        /// Fingerprint of the member's certificate.
        signer: String,
        /// The From address (a user ID of that certificate): the member.
        from: String,
        /// The embargo id it names (lower case).
        embargo: String,
        digests: Vec<String>,
    },
    /// Authenticated, but invalid: the PST is told why, signed and encrypted.
    Refused {
        rejection: Rejection,
        sender: Sender,
    },
}

/// The embargo id a member's signed entity acknowledges: its first text
/// part's first non-empty line is `Acknowledge: <embargo id>` (16 hex
/// digits, any case). A first line that begins with `Acknowledge` but is
/// not that is refused, not relayed as a post: the member meant an
/// acknowledgement, not to write to the list.
pub(super) fn acknowledged(entity: &[u8]) -> Result<Option<String>, Rejection> {
    let Some(message) = mail_parser::MessageParser::new().parse(entity) else {
        return Ok(None);
    };
    let Some(text) = message.body_text(0) else {
        return Ok(None);
    };
    let Some(line) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let starts = line
        .get(..11)
        .is_some_and(|w| w.eq_ignore_ascii_case("acknowledge"));
    if !starts {
        return Ok(None);
    }
    let id = line
        .split_once(':')
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("acknowledge"))
        .map(|(_, value)| value.trim())
        .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    match id {
        Some(id) => Ok(Some(id.to_ascii_lowercase())),
        None => Err(Rejection::MemberPost(
            "an acknowledgement's first line is `Acknowledge: <embargo id>`, the id's 16 hex digits alone",
        )),
    }
}

/// Marks an outer Subject that no signature covers before the list re-signs it.
pub const UNVERIFIED_SUBJECT: &str = "[unverified subject]";

/// The Subject members see: the signed (protected) one; failing that the
/// outer one, marked as unverified, since the list's signature must not
/// vouch for what the PST did not sign.
pub(super) fn relayed_subject(protected: Option<String>, outer: Option<String>) -> String {
    match (protected, outer) {
        (Some(signed), _) if !signed.is_empty() => signed,
        (_, Some(outer)) if !outer.is_empty() => format!("{UNVERIFIED_SUBJECT} {outer}"),
        _ => "(no subject)".to_owned(),
    }
}
