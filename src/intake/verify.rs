//! Authorization: the detached signature must be a PST certificate's, and the
//! From address one of that certificate's user IDs.

use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use sequoia_openpgp::policy::Policy;

use super::Rejection;
use super::mime::SignedMail;
use crate::crypto;

/// Who signed, once the checks passed.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub signer: String,
    /// Identities of the good signatures, for the replay cache.
    pub signature_digests: Vec<String>,
}

pub fn authorize(
    mail: &SignedMail,
    pst: &[Cert],
    p: &dyn Policy,
    now: DateTime<Utc>,
) -> Result<Authorized, Rejection> {
    let verified = crypto::verify_detached(p, now, pst, mail.signed_part.expose(), &mail.signature)
        .map_err(Rejection::Signature)?;
    let emails = crypto::valid_emails(&verified.cert, p, now);
    if !emails.iter().any(|e| e.eq_ignore_ascii_case(&mail.from)) {
        return Err(Rejection::FromNotSigner {
            from: mail.from.clone(),
            signer: verified.cert.fingerprint().to_hex(),
        });
    }
    Ok(Authorized {
        signer: verified.cert.fingerprint().to_hex(),
        signature_digests: verified.signature_digests,
    })
}
