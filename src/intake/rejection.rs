//! Why a mail was not accepted, and the SMTP reply that says so: the text
//! names the problem and never contains the mail's content.

use crate::crypto::SignatureProblem;
use crate::embargo::TermsError;
use crate::mail::Reply;
use crate::quote::Quoted;

/// Why a mail was not accepted. The text names the problem and never
/// contains any of the mail's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("message is not PGP/MIME signed or S/MIME signed (multipart/signed)")]
    Unsigned,
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("message structure refused: {0}")]
    Limit(String),
    #[error("{0}")]
    FromHeader(&'static str),
    #[error("{0}")]
    Signature(SignatureProblem),
    #[error("the From address{from} is not a user ID of the signing key {signer}")]
    FromNotSigner { from: Quoted, signer: String },
    #[error("replayed announcement: this signature was already accepted as message {0}")]
    Replay(String),
    #[error("{0}")]
    SignatureTime(String),
    #[error("invalid embargo: {0}")]
    Embargo(TermsError),
    /// A PST command that cannot be applied; `on` is the embargo id or
    /// member address it named, shown in the encrypted refusal only.
    #[error("command refused: {problem}{times}{}", on.wrote())]
    Command {
        problem: String,
        /// Embargo times the reason involves: in the encrypted refusal only.
        times: Quoted,
        on: Quoted,
    },
    #[error("{0}")]
    Encrypted(crate::crypto::OpenProblem),
    /// A PST mail signed with S/MIME, not taken.
    #[error("{0}")]
    Smime(crate::crypto::smime::SmimeProblem),
    #[error(
        "encrypted to the list, but not signed: encrypted mail must be signed by a PST key inside"
    )]
    EncryptedUnsigned,
    #[error("member post refused: {0}")]
    MemberPost(&'static str),
    #[error(
        "inline PGP (a cleartext-signed body) is not accepted here; send PGP/MIME (multipart/signed) or ask the operator about policy.inline_pgp"
    )]
    InlineRefused,
    /// The signed content names where the mail was meant to go (its signed
    /// To/Cc, or the announcement's `List:` field), and this list is not
    /// among them: a mail signed for another list, replayed here.
    #[error("the signed {0} does not name this list: the mail was signed for another list")]
    OtherList(&'static str),
    /// The signed To/Cc names this list and another list of this daemon.
    #[error(
        "the signed To/Cc names this list and another list served here: send one mail per list"
    )]
    TwoLists,
    /// A mail names no list, and its key is known to another list of this
    /// daemon too: it could have been signed for either.
    #[error(
        "the signed content names no list, and the signing key is on more than one list here: name the list in a signed To or Cc (protected headers), or in an announcement's or command's `List:` field"
    )]
    Unbound,
}

impl Rejection {
    /// A short fixed name of the kind of rejection, for `/metrics`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::Malformed(_) => "malformed",
            Rejection::Limit(_) => "limit",
            Rejection::FromHeader(_) => "from_header",
            Rejection::Signature(_) => "signature",
            Rejection::FromNotSigner { .. } => "from_not_signer",
            Rejection::Replay(_) => "replay",
            Rejection::SignatureTime(_) => "signature_time",
            Rejection::Embargo(_) => "embargo_terms",
            Rejection::Command { .. } => "command",
            Rejection::Encrypted(_) => "encrypted",
            Rejection::Smime(_) => "smime",
            Rejection::EncryptedUnsigned => "encrypted_unsigned",
            Rejection::MemberPost(_) => "member_post",
            Rejection::InlineRefused => "inline",
            Rejection::OtherList(_) | Rejection::TwoLists | Rejection::Unbound => "binding",
        }
    }

    /// The SMTP reply carrying the reason.
    pub fn reply(&self) -> Reply {
        let (code, enhanced) = match self {
            // Over a packet limit: the structure, not who signed (554, as
            // the other limits).
            Rejection::Signature(SignatureProblem::TooMany(_)) => (554, "5.6.0"),
            Rejection::Unsigned
            | Rejection::Signature(_)
            | Rejection::Smime(_)
            | Rejection::FromNotSigner { .. }
            | Rejection::EncryptedUnsigned
            | Rejection::MemberPost(_)
            | Rejection::InlineRefused
            | Rejection::OtherList(_)
            | Rejection::TwoLists
            | Rejection::Unbound => (550, "5.7.1"),
            Rejection::Encrypted(_) => (550, "5.7.5"),
            Rejection::Replay(_) | Rejection::Command { .. } | Rejection::SignatureTime(_) => {
                (550, "5.7.0")
            }
            Rejection::Malformed(_)
            | Rejection::Limit(_)
            | Rejection::FromHeader(_)
            | Rejection::Embargo(_) => (554, "5.6.0"),
        };
        Reply::new(code, enhanced, self.to_string())
    }
}
