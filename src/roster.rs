//! The roster: who receives copies, and whose signatures make an announcement (PST).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sequoia_openpgp::Cert;
use sequoia_openpgp::parse::Parse;

use crate::crypto::KeptCert;

/// One `[[member]]` of the configuration with its certificate, or the
/// reason it could not be read (such a member is skipped, never sent plaintext).
#[derive(Debug, Clone)]
pub struct Member {
    pub email: String,
    pub organization: String,
    pub key_path: PathBuf,
    pub pst: bool,
    /// Added by a `Roster-Add` command (listed in the roster file), not the config.
    pub added: bool,
    /// Kept serialized (`KeptCert`: about 1.2 KB where a parsed
    /// certificate takes 16), shared by every roster and verifier that
    /// holds this member.
    cert: Result<KeptCert, String>,
    /// An S/MIME member's X.509 certificate (or why it cannot be read);
    /// `None` for an OpenPGP member.
    pub smime: Option<Result<crate::crypto::smime::SmimeCert, String>>,
    /// A PST member's pinned S/MIME certificate: its S/MIME-signed mail is
    /// verified against it (it still receives OpenPGP).
    pub smime_signing: Option<Result<crate::crypto::smime::SmimeCert, String>>,
}

impl Member {
    /// Loads the member's certificate; a problem is kept, not raised, so one
    /// bad member file does not stop the list.
    pub fn load(email: String, organization: String, key_path: PathBuf, pst: bool) -> Member {
        let cert = Cert::from_file(&key_path)
            .and_then(|c| KeptCert::new(&c))
            .map_err(|e| format!("certificate file {} unreadable: {e}", key_path.display()));
        Member {
            email,
            organization,
            key_path,
            pst,
            added: false,
            cert,
            smime: None,
            smime_signing: None,
        }
    }

    /// This PST member with the S/MIME certificate at `path` pinned for
    /// its S/MIME-signed mail.
    pub fn with_smime_signing(mut self, path: &Path) -> Member {
        self.smime_signing = Some(crate::crypto::smime::SmimeCert::load_for(path, &self.email));
        self
    }

    /// An S/MIME member (`smime_cert`): copies to it are S/MIME; it has no
    /// OpenPGP certificate.
    pub fn load_smime(email: String, organization: String, path: PathBuf) -> Member {
        let smime = crate::crypto::smime::SmimeCert::load_for(&path, &email);
        Member {
            email,
            organization,
            key_path: path,
            pst: false,
            added: false,
            cert: Err("an S/MIME member: no OpenPGP certificate".to_owned()),
            smime: Some(smime),
            smime_signing: None,
        }
    }

    /// Whether `fpr` is this member's signing identity: its OpenPGP
    /// certificate's fingerprint, or its S/MIME key's (`key_fingerprint`).
    pub fn signs_as(&self, fpr: &str) -> bool {
        self.kept()
            .is_ok_and(|c| c.fingerprint().to_hex().eq_ignore_ascii_case(fpr))
            || matches!(&self.smime, Some(Ok(c)) if c.key_fingerprint().is_some_and(|k| k.eq_ignore_ascii_case(fpr)))
    }

    /// Whether copies to this member are S/MIME.
    pub fn is_smime(&self) -> bool {
        self.smime.is_some()
    }

    /// The member's OpenPGP certificate, parsed now (about 100 µs), or
    /// why it has none that can be read.
    pub fn cert(&self) -> Result<Cert, String> {
        self.kept()?
            .cert()
            .map_err(|e| format!("certificate {} unreadable: {e}", self.key_path.display()))
    }

    /// The certificate as kept: its fingerprint, key IDs and the keys
    /// copies are encrypted to, without parsing it.
    pub fn kept(&self) -> Result<&KeptCert, &str> {
        self.cert.as_ref().map_err(String::as_str)
    }

    /// Whether the member has an OpenPGP certificate that could be read.
    pub fn has_cert(&self) -> bool {
        self.cert.is_ok()
    }

    /// Merges the refreshed copy of the member's certificate kept in
    /// `dir` (`<FINGERPRINT>.asc`, written by a key refresh): same
    /// fingerprint only, so a file there can add signatures, subkeys and
    /// revocations but never put another key in place.
    fn merge_update(&mut self, dir: &Path) {
        let Ok(kept) = &self.cert else { return };
        let path = dir.join(format!("{}.asc", kept.fingerprint().to_hex()));
        let Ok(update) = Cert::from_file(&path) else {
            return;
        };
        if &update.fingerprint() != kept.fingerprint() {
            return;
        }
        if let Ok(merged) = kept.cert().and_then(|c| c.merge_public(update))
            && let Ok(merged) = KeptCert::new(&merged)
        {
            self.cert = Ok(merged);
        }
    }
}

/// Under the state directory: refreshed certificates, merged into the
/// members' own at every load (the configuration's key files are never
/// written).
pub(crate) const UPDATES_DIR: &str = "key-updates";

/// Keeps a refreshed certificate in `dir` (see [`UPDATES_DIR`]).
pub(crate) fn store_update(dir: &Path, cert: &Cert) -> Result<(), String> {
    let armored = crate::crypto::armored_public(cert).map_err(|e| e.to_string())?;
    file::write_atomic(
        &dir.join(format!("{}.asc", cert.fingerprint().to_hex())),
        &armored,
    )
}

/// Everyone on the list.
#[derive(Debug, Default, Clone)]
pub struct Roster {
    members: Vec<Member>,
    /// Each member's position by its address in lower case: a fan-out
    /// looks up every member, and a scan would make it quadratic.
    index: HashMap<String, usize>,
    /// Where refreshed certificates are kept ([`UPDATES_DIR`]), if known.
    updates: Option<PathBuf>,
}

impl Roster {
    pub fn new(members: Vec<Member>) -> Self {
        let mut index = HashMap::with_capacity(members.len());
        for (i, m) in members.iter().enumerate() {
            // The first of two entries for one address is the one found.
            index.entry(m.email.to_ascii_lowercase()).or_insert(i);
        }
        Self {
            members,
            index,
            updates: None,
        }
    }

    /// This roster with the refreshed certificates in `dir` merged in,
    /// and the file members read later too.
    pub fn with_updates(mut self, dir: &Path) -> Roster {
        for m in &mut self.members {
            m.merge_update(dir);
        }
        self.updates = Some(dir.to_owned());
        self
    }

    /// The same members with the refreshed certificates merged again
    /// (after a key refresh wrote some).
    pub fn reread_updates(&self) -> Roster {
        match &self.updates {
            Some(dir) => self.clone().with_updates(&dir.clone()),
            None => self.clone(),
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The configuration's own members with the roster file's members
    /// (as read now) in place of the ones read before.
    pub fn with_file_members(&self, from_file: Vec<Member>) -> Roster {
        let mut members: Vec<Member> = self.members.iter().filter(|m| !m.added).cloned().collect();
        members.extend(from_file);
        let roster = Roster::new(members);
        match &self.updates {
            Some(dir) => roster.with_updates(dir),
            None => roster,
        }
    }

    pub fn find(&self, email: &str) -> Option<&Member> {
        let i = match self.index.get(email) {
            Some(&i) => i,
            None => *self.index.get(&email.to_ascii_lowercase())?,
        };
        self.members.get(i)
    }

    /// The certificates of members outside the PST, whose signed posts
    /// (replies) the list may relay under `policy.member_posts`.
    pub fn member_certs(&self) -> Vec<KeptCert> {
        let pst: std::collections::HashSet<_> = self
            .members
            .iter()
            .filter(|m| m.pst)
            .filter_map(|m| m.kept().ok().map(|c| c.fingerprint().clone()))
            .collect();
        self.members
            .iter()
            .filter(|m| !m.pst)
            .filter_map(|m| m.kept().ok().cloned())
            .filter(|c| !pst.contains(c.fingerprint()))
            .collect()
    }

    /// The members an announcement scoped to `names` (`Recipients:`, each
    /// an organization or an address of the roster, in any case) goes to,
    /// the PST always among them, in roster order. Unscoped (no names):
    /// every member. A name that matches no member is an error: its
    /// position (from 1) and the name.
    pub fn scope(&self, names: &[String]) -> Result<Vec<&Member>, (usize, String)> {
        if names.is_empty() {
            return Ok(self.members().iter().collect());
        }
        let named = |m: &Member, name: &str| {
            m.email.eq_ignore_ascii_case(name) || m.organization.eq_ignore_ascii_case(name)
        };
        for (i, name) in names.iter().enumerate() {
            if !self.members().iter().any(|m| named(m, name)) {
                return Err((i + 1, name.clone()));
            }
        }
        Ok(self
            .members()
            .iter()
            .filter(|m| m.pst || names.iter().any(|n| named(m, n)))
            .collect())
    }

    /// The member whose certificate has this fingerprint.
    /// The PST members' addresses.
    pub fn pst_addresses(&self) -> Vec<String> {
        self.members()
            .iter()
            .filter(|m| m.pst)
            .map(|m| m.email.clone())
            .collect()
    }

    pub fn by_fingerprint(&self, fpr: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.signs_as(fpr))
    }

    /// The PST's pinned S/MIME certificates, with the member each is for.
    pub fn pst_smime(&self) -> Vec<(String, crate::crypto::smime::SmimeCert)> {
        self.members
            .iter()
            // Only with a usable OpenPGP key: receipts go to it.
            .filter(|m| m.pst && m.has_cert())
            .filter_map(|m| match &m.smime_signing {
                Some(Ok(c)) => Some((m.email.clone(), c.clone())),
                _ => None,
            })
            .collect()
    }

    /// The certificates whose signatures are accepted as the PST's,
    /// parsed (a few, checked against every announcement).
    pub fn pst_certs(&self) -> Vec<Arc<Cert>> {
        self.members
            .iter()
            .filter(|m| m.pst)
            .filter_map(|m| m.cert().ok().map(Arc::new))
            .collect()
    }
}

/// One row of a membership table: (line number, email, organization).
pub(crate) type TableRow = (usize, String, String);

/// A membership table in Markdown, as the policy document keeps it:
/// `| Email | Organization |` rows (a last row without its closing pipe is
/// read too). Returns the rows as (line number, email, organization) and
/// the rows that are not a member, with the reason.
pub(crate) fn parse_markdown_table(text: &str) -> (Vec<TableRow>, Vec<(usize, String)>) {
    let (mut rows, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some(inner) = line.trim().strip_prefix('|') else {
            continue;
        };
        let inner = inner.strip_suffix('|').unwrap_or(inner);
        let cells: Vec<&str> = inner.split('|').map(str::trim).collect();
        let first = cells.first().copied().unwrap_or("");
        if first.eq_ignore_ascii_case("email")
            || first.chars().all(|c| matches!(c, '-' | ':' | ' '))
        {
            continue; // the header, or the row under it
        }
        match cells.as_slice() {
            [email, organization, ..] if !organization.is_empty() => {
                match crate::address::check_address(email) {
                    Ok(email) => rows.push((n, email, (*organization).to_owned())),
                    Err(e) => bad.push((n, format!("`{email}`: {e}"))),
                }
            }
            _ => bad.push((n, "expected | email | organization |".to_owned())),
        }
    }
    (rows, bad)
}

/// The roster file (`list.roster_file`): the members added and removed by
/// signed PST commands, as `[[member]]` tables (email, organization, key),
/// beside the fixed members of the configuration. Never PST members.
pub(crate) mod file {
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use sequoia_openpgp::Cert;
    use serde::{Deserialize, Serialize};

    use super::Member;

    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct RosterFile {
        #[serde(default, rename = "member")]
        members: Vec<Entry>,
    }

    #[derive(Debug, Clone, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        email: String,
        organization: String,
        /// Relative to the roster file's directory.
        key: PathBuf,
    }

    /// The file's directory; "." for a bare file name (whose parent is "").
    fn dir(path: &Path) -> &Path {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    fn read(path: &Path) -> Result<RosterFile, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RosterFile::default()),
            Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
        }
    }

    /// The members in the file (none if it does not exist yet).
    pub(crate) fn load(path: &Path) -> Result<Vec<Member>, String> {
        let mut out: Vec<Member> = Vec::new();
        for (i, e) in read(path)?.members.into_iter().enumerate() {
            use crate::address::{EntryError, check_entry};
            let (email, organization) = check_entry(&e.email, &e.organization, |x| {
                out.iter().any(|m| m.email == x)
            })
            .map_err(|err| match err {
                EntryError::Email(p) => format!("{}: member[{i}].email: {p}", path.display()),
                EntryError::Organization(p) => {
                    format!("{}: member[{i}].organization: {p}", path.display())
                }
                EntryError::Twice(email) => {
                    format!("{}: {email} is listed twice", path.display())
                }
            })?;
            let organization = organization.to_owned();
            let key = dir(path).join(&e.key);
            let mut member = Member::load(email, organization, key, false);
            member.added = true;
            out.push(member);
        }
        Ok(out)
    }

    /// Writes `bytes` to `path` atomically: a temporary file in the same
    /// directory, synced, renamed over it, and the directory synced.
    /// Only a regular file is replaced: renaming over a symlink, a FIFO or
    /// a device (a roster path of `/dev/null`) would silently put a file in
    /// its place.
    pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
        let d = dir(path);
        let fail = |e: std::io::Error| format!("{}: cannot write: {e}", path.display());
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.file_type().is_file()
        {
            return Err(format!(
                "{}: cannot write: not a regular file (a symlink, device or FIFO is never replaced)",
                path.display()
            ));
        }
        std::fs::create_dir_all(d).map_err(fail)?;
        let mut tmp = tempfile::NamedTempFile::new_in(d).map_err(fail)?;
        tmp.write_all(bytes).map_err(fail)?;
        tmp.as_file().sync_all().map_err(fail)?;
        tmp.persist(path).map_err(|e| fail(e.error))?;
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(fail)
    }

    fn save(path: &Path, file: &RosterFile) -> Result<(), String> {
        let text = toml::to_string(file).map_err(|e| e.to_string())?;
        let header = "# Members added by signed Roster-Add commands (embargo-relay).\n\
# Edited by the daemon: change it with Roster-Add/Roster-Remove mails.\n\n";
        write_atomic(path, format!("{header}{text}").as_bytes())
    }

    /// Adds a member: its certificate to `keys/<FINGERPRINT>.asc` beside the
    /// file, then the file rewritten with the new entry.
    pub(crate) fn add(
        path: &Path,
        email: &str,
        organization: &str,
        cert: &Cert,
    ) -> Result<(), String> {
        let mut file = read(path)?;
        if file
            .members
            .iter()
            .any(|m| m.email.eq_ignore_ascii_case(email))
        {
            return Err("the address is already in the roster file".to_owned());
        }
        let key = PathBuf::from("keys").join(format!("{}.asc", cert.fingerprint().to_hex()));
        let armored = crate::crypto::armored_public(cert).map_err(|e| e.to_string())?;
        write_atomic(&dir(path).join(&key), &armored)?;
        file.members.push(Entry {
            email: email.to_owned(),
            organization: organization.to_owned(),
            key,
        });
        save(path, &file)
    }

    /// Adds a member or replaces its organization and certificate (the
    /// operator's `roster add`). Without a certificate the entry points at
    /// `keys/<email>.asc`, where the operator can put it later; until then
    /// the member is skipped, never sent plaintext.
    pub(crate) fn upsert(
        path: &Path,
        email: &str,
        organization: &str,
        cert: Option<&Cert>,
    ) -> Result<(), String> {
        let mut file = read(path)?;
        let key = match cert {
            Some(cert) => {
                let key =
                    PathBuf::from("keys").join(format!("{}.asc", cert.fingerprint().to_hex()));
                let armored = crate::crypto::armored_public(cert).map_err(|e| e.to_string())?;
                write_atomic(&dir(path).join(&key), &armored)?;
                key
            }
            None => {
                // A file name from the address: nothing that leaves keys/.
                let name: String = email
                    .to_ascii_lowercase()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                PathBuf::from("keys").join(format!("{}.asc", name.trim_start_matches('.')))
            }
        };
        let entry = Entry {
            email: email.to_owned(),
            organization: organization.to_owned(),
            key,
        };
        match file
            .members
            .iter_mut()
            .find(|m| m.email.eq_ignore_ascii_case(email))
        {
            Some(old) if cert.is_none() => old.organization = entry.organization,
            Some(old) => *old = entry,
            None => file.members.push(entry),
        }
        save(path, &file)
    }

    /// Removes a member; false if the file does not list it.
    pub(crate) fn remove(path: &Path, email: &str) -> Result<bool, String> {
        let mut file = read(path)?;
        let before = file.members.len();
        file.members
            .retain(|m| !m.email.eq_ignore_ascii_case(email));
        if file.members.len() == before {
            return Ok(false);
        }
        save(path, &file)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scope names members by organization or address, in any case; the
    /// PST is always in it; a name on no member is refused by position.
    #[test]
    fn a_scope_is_the_named_members_and_the_pst() {
        let member = |email: &str, org: &str, pst: bool| {
            Member::load(email.into(), org.into(), PathBuf::from("/nonexistent"), pst)
        };
        let roster = Roster::new(vec![
            member("pst@project.example", "Project", true),
            member("a@redhat.example", "Red Hat", false),
            member("b@redhat.example", "Red Hat", false),
            member("sec@sap.example", "SAP", false),
            member("psirt@vmware.example", "VMware", false),
        ]);
        let emails = |names: &[&str]| -> Result<Vec<String>, (usize, String)> {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            roster
                .scope(&names)
                .map(|ms| ms.iter().map(|m| m.email.clone()).collect())
        };
        assert_eq!(
            emails(&["red hat", "PSIRT@vmware.example"]).unwrap(),
            [
                "pst@project.example",
                "a@redhat.example",
                "b@redhat.example",
                "psirt@vmware.example"
            ]
        );
        assert_eq!(emails(&[]).unwrap().len(), 5, "unscoped: every member");
        assert_eq!(emails(&["SAP", "Oracle"]), Err((2, "Oracle".to_owned())));
    }

    #[test]
    fn a_member_without_a_key_points_at_a_file_inside_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roster.toml");
        file::upsert(&path, "../../etc/x@y.example", "Org", None).unwrap();
        let members = file::load(&path).unwrap();
        assert_eq!(
            members[0].key_path,
            dir.path().join("keys/_.._etc_x@y.example.asc"),
            "the file name never leaves keys/"
        );
    }

    #[test]
    fn a_symlinked_roster_file_is_refused_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "").unwrap();
        let link = dir.path().join("roster.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = file::upsert(&link, "a@x.example", "Org", None).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the symlink is still there"
        );
    }

    #[test]
    fn a_markdown_table_is_read_with_or_without_the_closing_pipe() {
        let text = "Intro.\n\n| Email\t\t| Organization\t|\n| ------------- |:-------------:|\n\
| a@x.example | Org A |\n| b@y.example | Org B\n|not-an-address | C |\n| c@z.example | |\n";
        let (rows, bad) = parse_markdown_table(text);
        assert_eq!(
            rows,
            vec![
                (5, "a@x.example".to_owned(), "Org A".to_owned()),
                (6, "b@y.example".to_owned(), "Org B".to_owned()),
            ]
        );
        assert_eq!(bad.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![7, 8]);
    }
}
