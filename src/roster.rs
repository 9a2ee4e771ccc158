//! The roster: who receives copies, and whose signatures make an announcement (PST).

use std::path::PathBuf;

use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;

/// One `[[member]]` of the configuration with its certificate, or the
/// reason it could not be read (such a member is skipped, never sent plaintext).
#[derive(Debug, Clone)]
pub struct Member {
    pub email: String,
    pub organization: String,
    pub key_path: PathBuf,
    pub pst: bool,
    cert: Result<Cert, String>,
}

impl Member {
    /// Loads the member's certificate; a problem is kept, not raised, so one
    /// bad member file does not stop the list.
    pub fn load(email: String, organization: String, key_path: PathBuf, pst: bool) -> Member {
        let cert = Cert::from_file(&key_path)
            .map_err(|e| format!("certificate file {} unreadable: {e}", key_path.display()));
        Member {
            email,
            organization,
            key_path,
            pst,
            cert,
        }
    }

    pub fn cert(&self) -> Result<&Cert, &str> {
        self.cert.as_ref().map_err(String::as_str)
    }
}

/// Everyone on the list.
#[derive(Debug, Default, Clone)]
pub struct Roster {
    members: Vec<Member>,
}

impl Roster {
    pub fn new(members: Vec<Member>) -> Self {
        Self { members }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn find(&self, email: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.email.eq_ignore_ascii_case(email))
    }

    /// The certificates of members outside the PST, whose signed posts
    /// (replies) the list may relay under `policy.member_posts`.
    pub fn member_certs(&self) -> Vec<Cert> {
        let pst = self.pst_certs();
        self.members
            .iter()
            .filter(|m| !m.pst)
            .filter_map(|m| m.cert().ok().cloned())
            .filter(|c| !pst.iter().any(|p| p.fingerprint() == c.fingerprint()))
            .collect()
    }

    /// The member whose certificate has this fingerprint.
    pub fn by_fingerprint(&self, fpr: &str) -> Option<&Member> {
        self.members.iter().find(|m| {
            m.cert()
                .is_ok_and(|c| c.fingerprint().to_hex().eq_ignore_ascii_case(fpr))
        })
    }

    /// The certificates whose signatures are accepted as the PST's.
    pub fn pst_certs(&self) -> Vec<Cert> {
        self.members
            .iter()
            .filter(|m| m.pst)
            .filter_map(|m| m.cert().ok().cloned())
            .collect()
    }
}
