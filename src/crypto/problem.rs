//! Why a signature or an encrypted mail was not accepted: the verdicts
//! the census and the verifier share.

/// A mail over one of the packet limits ([`super::PacketLimits`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("more than {limit} {what} in the OpenPGP data (the list's limit)")]
pub struct TooMany {
    pub what: &'static str,
    pub limit: usize,
}

/// Why a detached signature was not accepted as the PST's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("signature not from a PST key")]
    NotPst,
    #[error("key {0} cannot be used: {1}")]
    BadKey(String, String),
    #[error("signature does not verify")]
    Bad,
    #[error(
        "signature made with {0}, which the list's policy rejects; sign with SHA-256 or better"
    )]
    WeakHash(String),
    #[error("malformed signature")]
    Malformed,
    #[error("signature has expired")]
    Expired,
    #[error("no signature")]
    Unsigned,
    #[error("signatures by several senders (a PST key beside a member's, or two members')")]
    Mixed,
    #[error("two signatures name the same key")]
    SameKeyTwice,
    /// Counted before any verification: see [`PacketLimits`](super::PacketLimits).
    #[error("{0}")]
    TooMany(TooMany),
}

/// How far ahead of ours a sender's clock may be (seconds).
pub const CLOCK_SKEW_S: i64 = 300;

/// Why an encrypted announcement could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenProblem {
    #[error("encrypted part is not an OpenPGP message encrypted to a public key")]
    Malformed,
    #[error("encrypted, but not to the list key")]
    NotForList,
    #[error(
        "decryption failed: the ciphertext is tampered or not integrity-protected, or what it holds is malformed (nested too deeply, for one)"
    )]
    Failed,
    #[error(
        "ciphertext without integrity protection (a SED packet) is never decrypted; encrypt with a current OpenPGP program"
    )]
    Unprotected,
    #[error("decrypted content larger than the limit of {0} octets")]
    TooLarge(usize),
    #[error("{0}")]
    Signature(SignatureProblem),
}

impl SignatureProblem {
    /// A signature that does not verify: `WeakHash` where the list's policy
    /// refuses its hash (named, so that the sender knows what to change),
    /// `Bad` otherwise.
    pub(super) fn bad(sig: &sequoia_openpgp::packet::Signature) -> SignatureProblem {
        let security = sequoia_openpgp::policy::HashAlgoSecurity::CollisionResistance;
        let made = sig.signature_creation_time();
        let refused = super::policy()
            .hash_cutoff(sig.hash_algo(), security)
            .is_some_and(|cutoff| made.is_none_or(|m| m >= cutoff));
        if refused {
            SignatureProblem::WeakHash(sig.hash_algo().to_string())
        } else {
            SignatureProblem::Bad
        }
    }
}
