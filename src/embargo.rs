//! The announcement grammar: the `Field: value` block at the top of the
//! first text part of the signed entity, parsed and validated. Nothing
//! outside the signed content is ever consulted for these fields.

use chrono::{DateTime, FixedOffset, Utc};
use mail_parser::MessageParser;

use crate::address::check_address;
use crate::quote::Quoted;

/// The fields an announcement may carry, in the signed text's field block.
pub const FIELDS: [&str; 8] = [
    "Embargo-Until",
    "Public-To",
    "Embargo-Override",
    "Recipients",
    "List",
    "Deployment",
    "TLP",
    "GitHub-Advisory",
];

/// The fields of a command mail; a command carries exactly one of them.
pub const COMMAND_FIELDS: [&str; 5] = [
    "Embargo-Extend",
    "Embargo-Cancel",
    "Embargo-Release-Now",
    "Roster-Add",
    "Roster-Remove",
];

/// A PST command: on an existing embargo, or on the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PstCommand {
    Extend {
        id: String,
        to: DateTime<Utc>,
    },
    Cancel {
        id: String,
    },
    ReleaseNow {
        id: String,
    },
    /// Add a member; the certificate is attached to the signed mail.
    RosterAdd {
        email: String,
        organization: String,
        fingerprint: String,
    },
    RosterRemove {
        email: String,
    },
}

impl PstCommand {
    /// The command's field name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            PstCommand::Extend { .. } => "Embargo-Extend",
            PstCommand::Cancel { .. } => "Embargo-Cancel",
            PstCommand::ReleaseNow { .. } => "Embargo-Release-Now",
            PstCommand::RosterAdd { .. } => "Roster-Add",
            PstCommand::RosterRemove { .. } => "Roster-Remove",
        }
    }

    /// The embargo id, or the member address of a roster command.
    pub fn id(&self) -> &str {
        match self {
            PstCommand::Extend { id, .. }
            | PstCommand::Cancel { id }
            | PstCommand::ReleaseNow { id } => id,
            PstCommand::RosterAdd { email, .. } | PstCommand::RosterRemove { email } => email,
        }
    }
}

/// `Roster-Add: email, organization, fingerprint` / `Roster-Remove: email`.
fn roster_command(name: &'static str, value: &str) -> Result<PstCommand, TermsError> {
    let bad = |problem: &str, quoted: &str| TermsError::BadCommand {
        field: name,
        problem: problem.to_owned(),
        quoted: Some(Quoted::new(quoted)),
    };
    const NOT_AN_ADDRESS: &str = "the address is not a plain address such as list@example.org";
    if name == "Roster-Remove" {
        let email = check_address(value).map_err(|_| bad(NOT_AN_ADDRESS, value))?;
        return Ok(PstCommand::RosterRemove { email });
    }
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    let [email, organization, fingerprint] = parts[..] else {
        return Err(bad(
            "expected `address, organization, fingerprint` (three values separated by commas)",
            value,
        ));
    };
    let (email, organization) = match crate::address::check_entry(email, organization, |_| false) {
        Ok((email, organization)) => (email, organization.to_owned()),
        Err(crate::address::EntryError::Organization(_)) => {
            return Err(bad("the organization must be one non-empty line", value));
        }
        Err(_) => return Err(bad(NOT_AN_ADDRESS, email)),
    };
    let fingerprint: String = fingerprint
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    if !(fingerprint.len() == 40 || fingerprint.len() == 64)
        || !fingerprint.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(bad(
            "the fingerprint is not a full OpenPGP fingerprint (40 or 64 hex digits)",
            &fingerprint,
        ));
    }
    Ok(PstCommand::RosterAdd {
        email,
        organization: organization.to_owned(),
        fingerprint,
    })
}

/// The field's name as this grammar spells it (names match in any case).
fn canonical(name: &str) -> Option<&'static str> {
    FIELDS
        .iter()
        .chain(COMMAND_FIELDS.iter())
        .find(|f| f.eq_ignore_ascii_case(name))
        .copied()
}

/// What a PST mail asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Announce(Terms),
    PstCommand(PstCommand),
}

/// Reads the field block once: a command if it names one, else an
/// announcement's terms; and the list it names (`List:`, an announcement's
/// or beside a command), lowercased, if it names one.
pub fn request(
    entity: &[u8],
    now: DateTime<Utc>,
    max_embargo: chrono::Duration,
) -> Result<(Request, Option<String>), TermsError> {
    let text = first_text(entity).ok_or(TermsError::NoText)?;
    let fields = field_block(&text)?;
    let list = fields
        .iter()
        .find(|f| f.name == "List")
        .map(|f| check_address(&f.value).map_err(|_| TermsError::BadList(Quoted::new(&f.value))))
        .transpose()?;
    Ok((request_of(&fields, now, max_embargo)?, list))
}

fn request_of(
    fields: &[Field],
    now: DateTime<Utc>,
    max_embargo: chrono::Duration,
) -> Result<Request, TermsError> {
    let commands: Vec<&Field> = fields
        .iter()
        .filter(|f| COMMAND_FIELDS.contains(&f.name))
        .collect();
    let [command] = commands[..] else {
        if commands.is_empty() {
            return terms_of(fields, now, max_embargo).map(Request::Announce);
        }
        return Err(TermsError::BadCommand {
            field: commands[0].name,
            problem: "a command mail carries exactly one command field".into(),
            quoted: None,
        });
    };
    let (name, value) = (command.name, command.value.as_str());
    let bad = |problem: &str, quoted: Option<&str>| TermsError::BadCommand {
        field: name,
        problem: problem.to_owned(),
        quoted: quoted.map(Quoted::new),
    };
    // `List:` may go beside it (binding the signature to this list).
    if fields.iter().any(|f| f.name != name && f.name != "List") {
        return Err(bad(
            "it must be the only field of its mail (with `List:` at most)",
            None,
        ));
    }
    if name.starts_with("Roster-") {
        return roster_command(name, value).map(Request::PstCommand);
    }
    let mut words = value.split_whitespace();
    let id = words.next().unwrap_or_default();
    if id.len() != 16 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad(
            "the embargo id is not 16 hex digits (the id from the receipt)",
            Some(id),
        ));
    }
    let id = id.to_ascii_lowercase();
    let command = if name == "Embargo-Extend" {
        let time = words.next().unwrap_or_default();
        let to = DateTime::parse_from_rfc3339(time)
            .map_err(|_| TermsError::BadTime(name, Quoted::new(time)))?;
        PstCommand::Extend {
            id,
            to: to.with_timezone(&Utc),
        }
    } else if name == "Embargo-Cancel" {
        PstCommand::Cancel { id }
    } else {
        PstCommand::ReleaseNow { id }
    };
    if let Some(extra) = words.next() {
        return Err(bad("unexpected words after the command", Some(extra)));
    }
    Ok(Request::PstCommand(command))
}

/// The embargo terms of an accepted announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// When the embargo lifts.
    pub until: DateTime<Utc>,
    /// The offset the PST wrote the time in (for receipts in their own time).
    pub sender_offset: FixedOffset,
    /// Public lists named by the announcement (empty: the configured defaults).
    pub public_to: Vec<String>,
    /// The PST's stated reason for an embargo beyond the maximum, if any.
    pub override_reason: Option<String>,
    /// The part of the roster the announcement is for (`Recipients:`, each
    /// an organization or an address of the roster, as written); empty:
    /// every member.
    pub recipients: Vec<String>,
    /// What members may deploy during the embargo (`Deployment:`), if said.
    pub deployment: Option<Deployment>,
    /// How far members may share it (`TLP:`), if said.
    pub tlp: Option<Tlp>,
    /// The GitHub security advisories a `github` release hook publishes
    /// at the lift (`GitHub-Advisory:`), in the order written.
    pub github: Vec<GithubAdvisory>,
}

/// A repository security advisory on GitHub, as `GitHub-Advisory:` names
/// it (`owner/repo GHSA-xxxx-xxxx-xxxx`). Embargoed: its `Debug` withholds
/// it, and it stays in the sealed record (the hook's delivery row names
/// only the hook and the advisory's place in the field).
#[derive(Clone, PartialEq, Eq)]
pub struct GithubAdvisory {
    pub owner: String,
    pub repo: String,
    /// `GHSA-` and three groups of four, the groups in lower case.
    pub ghsa: String,
}

impl std::fmt::Debug for GithubAdvisory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GithubAdvisory([withheld])")
    }
}

/// The most advisories one announcement may name.
pub const MAX_GITHUB_ADVISORIES: usize = 8;

impl GithubAdvisory {
    /// One `owner/repo GHSA-xxxx-xxxx-xxxx` entry; `None` if it is not one.
    /// Owner and repository as GitHub allows them (letters, digits, `-`;
    /// the repository also `.` and `_`), the advisory id in GitHub's
    /// alphabet, in any case.
    fn parse_one(entry: &str) -> Option<GithubAdvisory> {
        let mut words = entry.split_whitespace();
        let (path, id) = (words.next()?, words.next()?);
        if words.next().is_some() {
            return None;
        }
        let (owner, repo) = path.split_once('/')?;
        let owner_ok = (1..=39).contains(&owner.len())
            && owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !owner.starts_with('-');
        let repo_ok = (1..=100).contains(&repo.len())
            && repo
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            && repo != "."
            && repo != "..";
        let ghsa = id.to_ascii_lowercase();
        let groups: Vec<&str> = ghsa.strip_prefix("ghsa-")?.split('-').collect();
        let id_ok = groups.len() == 3
            && groups
                .iter()
                .all(|g| g.len() == 4 && g.chars().all(|c| "23456789cfghjmpqrvwx".contains(c)));
        (owner_ok && repo_ok && id_ok).then(|| GithubAdvisory {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            ghsa: format!("GHSA-{}", groups.join("-")),
        })
    }

    /// The field's value: entries separated by commas, at most
    /// [`MAX_GITHUB_ADVISORIES`], none twice.
    fn parse(value: &str) -> Result<Vec<GithubAdvisory>, TermsError> {
        let mut all: Vec<GithubAdvisory> = Vec::new();
        for (i, entry) in value.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let a = GithubAdvisory::parse_one(entry).ok_or(TermsError::BadGithubAdvisory {
                position: i + 1,
                entry: Quoted::new(entry),
            })?;
            if !all.contains(&a) {
                all.push(a);
            }
        }
        if all.is_empty() {
            return Err(TermsError::BadGithubAdvisory {
                position: 1,
                entry: Quoted::new(value),
            });
        }
        if all.len() > MAX_GITHUB_ADVISORIES {
            return Err(TermsError::ManyGithubAdvisories);
        }
        Ok(all)
    }

    /// As the record keeps the field: `owner/repo GHSA-…` entries joined by commas.
    pub fn as_field(all: &[GithubAdvisory]) -> String {
        all.iter()
            .map(|a| format!("{}/{} {}", a.owner, a.repo, a.ghsa))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The field as the record keeps it ([`GithubAdvisory::as_field`]).
    pub fn from_kept(value: &str) -> Vec<GithubAdvisory> {
        if value.is_empty() {
            return Vec::new();
        }
        GithubAdvisory::parse(value).unwrap_or_default()
    }
}

/// `Deployment:` — whether members may deploy fixes during the embargo.
/// Its `Debug` withholds the PST's own terms (embargoed text).
#[derive(Clone, PartialEq, Eq)]
pub enum Deployment {
    Allowed,
    Forbidden,
    /// The PST's own terms, one line (e.g. "hosted providers may deploy").
    Terms(String),
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deployment::Allowed => write!(f, "Allowed"),
            Deployment::Forbidden => write!(f, "Forbidden"),
            Deployment::Terms(t) => write!(f, "Terms([{} octets withheld])", t.len()),
        }
    }
}

impl Deployment {
    fn parse(value: &str) -> Result<Deployment, TermsError> {
        let value = shown(value);
        let value = value.trim();
        if value.eq_ignore_ascii_case("allowed") {
            Ok(Deployment::Allowed)
        } else if value.eq_ignore_ascii_case("forbidden") {
            Ok(Deployment::Forbidden)
        } else if value.is_empty() {
            Err(TermsError::EmptyDeployment)
        } else if value.len() > MAX_DEPLOYMENT_TERMS {
            Err(TermsError::LongDeployment)
        } else {
            Ok(Deployment::Terms(value.to_owned()))
        }
    }

    /// Terms as the record keeps them ([`Deployment::as_field`]).
    pub fn from_kept(value: &str) -> Option<Deployment> {
        Deployment::parse(value).ok()
    }

    /// As the record keeps it (and as the PST would write it).
    pub fn as_field(&self) -> &str {
        match self {
            Deployment::Allowed => "allowed",
            Deployment::Forbidden => "forbidden",
            Deployment::Terms(t) => t,
        }
    }

    /// What the notice in every copy says.
    pub fn describe(&self) -> String {
        match self {
            Deployment::Allowed => {
                "Deployment during the embargo: ALLOWED. You may deploy the fix before the embargo lifts; publishing the fix or its description stays forbidden until then.".to_owned()
            }
            Deployment::Forbidden => {
                "Deployment during the embargo: FORBIDDEN. Do not deploy the fix anywhere others could see it until the embargo lifts.".to_owned()
            }
            Deployment::Terms(t) => {
                format!("Deployment during the embargo, as the security team states it: {t}")
            }
        }
    }
}

/// The longest `Deployment:` terms, in octets (UTF-8): the notice's line
/// stays within the 998 octets of a line of mail.
const MAX_DEPLOYMENT_TERMS: usize = 500;

/// `TLP:` — the Traffic Light Protocol label (FIRST TLP 2.0; `WHITE`, of
/// TLP 1.0, reads as `CLEAR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tlp {
    Clear,
    Green,
    Amber,
    AmberStrict,
    Red,
}

impl Tlp {
    fn parse(value: &str) -> Result<Tlp, TermsError> {
        let label = value.trim();
        let bare = label
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("TLP:"))
            .map_or(label, |_| &label[4..])
            .trim();
        match bare.to_ascii_uppercase().as_str() {
            "CLEAR" | "WHITE" => Ok(Tlp::Clear),
            "GREEN" => Ok(Tlp::Green),
            "AMBER" => Ok(Tlp::Amber),
            "AMBER+STRICT" => Ok(Tlp::AmberStrict),
            "RED" => Ok(Tlp::Red),
            _ => Err(TermsError::BadTlp(Quoted::new(value))),
        }
    }

    /// The label, as `TLP:AMBER`.
    pub fn label(self) -> &'static str {
        match self {
            Tlp::Clear => "TLP:CLEAR",
            Tlp::Green => "TLP:GREEN",
            Tlp::Amber => "TLP:AMBER",
            Tlp::AmberStrict => "TLP:AMBER+STRICT",
            Tlp::Red => "TLP:RED",
        }
    }

    /// What the label allows, in FIRST's words, shortened.
    pub fn describe(self) -> String {
        let meaning = match self {
            Tlp::Clear => "disclosure is not limited (the embargo still holds until it lifts)",
            Tlp::Green => "share within your community, not publicly",
            Tlp::Amber => {
                "share only on a need-to-know basis within your organization and with its clients who need it to protect themselves"
            }
            Tlp::AmberStrict => "share only on a need-to-know basis within your organization",
            Tlp::Red => "for you alone: do not share it with anyone",
        };
        format!("Sharing: {}: {meaning}.", self.label())
    }

    /// A label as the record keeps it ([`Tlp::label`]).
    pub fn from_kept(value: &str) -> Option<Tlp> {
        Tlp::parse(value).ok()
    }
}

/// What is wrong with an announcement's embargo fields. The text names the
/// field (and the line) and says what would be accepted; what the PST wrote
/// is a `Quoted`, shown only in the encrypted refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TermsError {
    #[error("no text part: the embargo fields go at the top of the first text/plain part")]
    NoText,
    #[error(
        "Embargo-Until is missing: start the text with a line like `Embargo-Until: 2026-12-08T16:00:00Z`"
    )]
    MissingUntil,
    #[error(
        "{0}: the time{1} is not an RFC 3339 time with an explicit offset or Z (e.g. 2026-12-08T16:00:00Z)"
    )]
    BadTime(&'static str, Quoted),
    /// The time is quoted in the encrypted refusal only: a reply in the
    /// clear would tell everyone on the path when the embargo lifts.
    #[error("Embargo-Until{0} is not in the future")]
    Past(Quoted),
    #[error(
        "embargo of {days} days exceeds the maximum of {max_days} days; add `Embargo-Override: <reason>` to go beyond it"
    )]
    TooLong { days: i64, max_days: i64 },
    #[error("Public-To: the address{0} is not a plain address")]
    BadPublicTo(Quoted),
    #[error(
        "line {line}: unknown field{name} in the embargo block (known: Embargo-Until, Public-To, Embargo-Override, Recipients, List, Deployment, TLP, GitHub-Advisory)"
    )]
    UnknownField { line: usize, name: Quoted },
    #[error("line {line}: field {name} is given twice")]
    Duplicate { line: usize, name: &'static str },
    #[error("invalid command: {field}: {problem}{}", quoted.as_ref().map(|q| q.wrote().to_string()).unwrap_or_default())]
    BadCommand {
        field: &'static str,
        problem: String,
        quoted: Option<Quoted>,
    },
    #[error(
        "a public advisory is attached but there is nowhere to publish it: add `Public-To:` or configure [public] recipients"
    )]
    NoPublicRecipients,
    #[error("Recipients: names no one; leave the field out to announce to every member")]
    NoRecipients,
    #[error("Deployment: is empty; write `allowed`, `forbidden`, or the terms in one line")]
    EmptyDeployment,
    #[error("Deployment: the terms are longer than 500 octets; keep them to one short line")]
    LongDeployment,
    /// The value is quoted in the encrypted refusal only.
    #[error(
        "TLP: the label{0} is not a Traffic Light Protocol label (CLEAR, GREEN, AMBER, AMBER+STRICT or RED)"
    )]
    BadTlp(Quoted),
    /// The entry is quoted in the encrypted refusal only (the repository
    /// of an embargoed advisory is embargoed too).
    #[error(
        "GitHub-Advisory: entry {position}{entry} is not `owner/repository GHSA-xxxx-xxxx-xxxx` (entries separated by commas)"
    )]
    BadGithubAdvisory { position: usize, entry: Quoted },
    #[error("GitHub-Advisory: names more than 8 advisories")]
    ManyGithubAdvisories,
    /// Which entry (counted from 1) matches no member; the name itself is
    /// quoted in the encrypted refusal only.
    #[error(
        "Recipients: entry {position}{name} is neither an organization nor an address on the roster"
    )]
    UnknownRecipient { position: usize, name: Quoted },
    #[error("List: the address{0} is not a plain address")]
    BadList(Quoted),
    #[error(
        "this replies to a message that went to part of the roster only: name its members in `Recipients:`, or write a new mail (not a reply) to reach every member"
    )]
    ScopedThread,
}

/// The file name that marks the public advisory inside the signed entity.
pub const ADVISORY_NAME: &str = "public-advisory.txt";

/// The text of the public advisory, if the signed entity carries one as an
/// attachment named [`ADVISORY_NAME`].
pub fn public_advisory(entity: &[u8]) -> Option<String> {
    let msg = MessageParser::default().parse(entity)?;
    // Never the root or the first text part (the announcement itself).
    let body = msg.text_body.first().copied().unwrap_or(0) as usize;
    let part = msg
        .parts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 0 && *i != body)
        .map(|(_, p)| p)
        .find(|p| {
            mail_parser::MimeHeaders::attachment_name(*p)
                .is_some_and(|n| n.eq_ignore_ascii_case(ADVISORY_NAME))
        })?;
    match part.text_contents() {
        Some(text) => Some(text.to_owned()),
        None => String::from_utf8(part.contents().to_vec()).ok(),
    }
}

/// What the PST's receipt warns of about when an embargo lifts (issue 21):
/// a lift on a Friday or a weekend (UTC), outside the list's release hours
/// (`hours`, UTC), or less than `min_notice` after the announcement came
/// (`received`, if known). Warnings, never refusals; empty when none
/// applies.
pub fn release_warnings(
    until: DateTime<Utc>,
    received: Option<DateTime<Utc>>,
    min_notice: chrono::Duration,
    hours: Option<(chrono::NaiveTime, chrono::NaiveTime)>,
) -> Vec<String> {
    use chrono::{Datelike, Weekday};
    let mut out = Vec::new();
    let when = until.format("%A %Y-%m-%d %H:%M UTC");
    match until.weekday() {
        Weekday::Fri => out.push(format!(
            "the embargo lifts on a Friday ({when}): distributors have the fewest people at work over the weekend that follows; a Monday to Thursday lift is safer"
        )),
        Weekday::Sat | Weekday::Sun => out.push(format!(
            "the embargo lifts on a weekend ({when}): few distributors will be at work to ship the fix"
        )),
        _ => {}
    }
    if let Some((from, to)) = hours {
        let at = until.time();
        if at < from || at >= to {
            out.push(format!(
                "the embargo lifts at {} UTC, outside the list's release hours ({}–{} UTC)",
                until.format("%H:%M"),
                from.format("%H:%M"),
                to.format("%H:%M"),
            ));
        }
    }
    if let Some(notice) = received.map(|r| until - r)
        && notice < min_notice
    {
        out.push(format!(
            "the embargo gives distributors {} of notice, less than the list's minimum of {}",
            span(notice),
            span(min_notice),
        ));
    }
    out
}

/// A duration in days and hours (minutes under an hour), as a receipt
/// says it.
fn span(d: chrono::Duration) -> String {
    let (days, hours) = (d.num_days(), d.num_hours() % 24);
    match (days, hours) {
        (0, 0) => {
            let m = d.num_minutes().max(0);
            format!("{m} minute{}", if m == 1 { "" } else { "s" })
        }
        (0, h) => format!("{h} hour{}", if h == 1 { "" } else { "s" }),
        (d, 0) => format!("{d} day{}", if d == 1 { "" } else { "s" }),
        (d, h) => format!(
            "{d} day{} {h} hour{}",
            if d == 1 { "" } else { "s" },
            if h == 1 { "" } else { "s" }
        ),
    }
}

/// Each attachment of the signed entity, in order, with the SHA-256 of its
/// bytes as sent (lower-case hex): its transfer encoding (base64,
/// quoted-printable) undone, nothing else (no charset conversion; a text
/// attachment sent without base64 has the CRLF line ends of mail). Every
/// part with a file name counts, inline or not, and every attachment
/// without one (named by its position); the parts of an attached message
/// are listed too, after it. What every member copy lists, so a member can
/// check a file it passed on. The intake's MIME limits bound the parts.
pub fn attachment_digests(entity: &[u8]) -> Vec<(String, String)> {
    let Some(msg) = MessageParser::default().parse(entity) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    digests_of(&msg, entity, "", &mut out, 0);
    out
}

/// [`attachment_digests`] of `msg`, each name after `prefix`.
/// Parts' offsets count from the start of the whole entity (`raw`), at
/// every depth.
fn digests_of(
    msg: &mail_parser::Message<'_>,
    raw: &[u8],
    prefix: &str,
    out: &mut Vec<(String, String)>,
    depth: usize,
) {
    use mail_parser::{Encoding, MimeHeaders, PartType};
    /// The most characters of a file name shown.
    const MAX_NAME: usize = 200;
    // The announcement's own text (the top level's first text part).
    let text = if depth == 0 {
        msg.text_body.first().copied()
    } else {
        None
    };
    for (i, part) in msg.parts.iter().enumerate() {
        let id = i as u32;
        if matches!(part.body, PartType::Multipart(_)) || Some(id) == text {
            continue;
        }
        // Cut to MAX_NAME below, with its prefix.
        let named = part
            .attachment_name()
            .map(shown)
            .filter(|n| !n.trim().is_empty());
        if named.is_none() && !msg.attachments.contains(&id) {
            continue;
        }
        let body = raw
            .get(part.offset_body as usize..part.offset_end as usize)
            .unwrap_or_default();
        let sent = match part.encoding {
            Encoding::Base64 => mail_parser::decoders::base64::base64_decode(body),
            Encoding::QuotedPrintable => {
                mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
            }
            Encoding::None => Some(body.to_vec()),
        }
        .unwrap_or_else(|| part.contents().to_vec());
        let name = format!(
            "{prefix}{}",
            named.unwrap_or_else(|| format!("attachment {} (no file name)", out.len() + 1))
        );
        // Within a line of mail with its digest, however deep the prefix.
        let name = if name.chars().count() > MAX_NAME {
            name.chars().take(MAX_NAME).chain(['…']).collect()
        } else {
            name
        };
        out.push((
            name.clone(),
            crate::crypto::sha256_hex(&sent).to_ascii_lowercase(),
        ));
        if let PartType::Message(inner) = &part.body
            && depth < 8
        {
            digests_of(inner, raw, &format!("{name} / "), out, depth + 1);
        }
    }
}

/// `text` with control and invisible format characters (bidirectional
/// overrides, zero-width characters) made spaces: what a notice shows of a
/// name or terms the PST (or a reporter before it) wrote.
fn shown(text: &str) -> String {
    text.chars()
        .map(|c| if crate::lines::unseen(c) { ' ' } else { c })
        .collect()
}

/// Parses the field block of the signed entity and checks it against `now`
/// and the maximum embargo length.
pub fn terms(
    entity: &[u8],
    now: DateTime<Utc>,
    max_embargo: chrono::Duration,
) -> Result<Terms, TermsError> {
    let text = first_text(entity).ok_or(TermsError::NoText)?;
    terms_of(&field_block(&text)?, now, max_embargo)
}

fn terms_of(
    fields: &[Field],
    now: DateTime<Utc>,
    max_embargo: chrono::Duration,
) -> Result<Terms, TermsError> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.as_str())
    };
    let raw_until = get("Embargo-Until").ok_or(TermsError::MissingUntil)?;
    let until = DateTime::parse_from_rfc3339(raw_until)
        .map_err(|_| TermsError::BadTime("Embargo-Until", Quoted::new(raw_until)))?;
    let until_utc = until.with_timezone(&Utc);
    if until_utc <= now {
        return Err(TermsError::Past(Quoted::new(&until_utc.to_rfc3339())));
    }
    let override_reason = get("Embargo-Override")
        .map(str::to_owned)
        .filter(|r| !r.is_empty());
    let length = until_utc - now;
    if length > max_embargo && override_reason.is_none() {
        return Err(TermsError::TooLong {
            days: (length.num_hours() + 23) / 24,
            max_days: max_embargo.num_days(),
        });
    }
    let public_to = match get("Public-To") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| check_address(a).map_err(|_| TermsError::BadPublicTo(Quoted::new(a))))
            .collect::<Result<Vec<_>, _>>()?,
    };
    // One release per list: `oss@x, OSS@x` names one list twice.
    let mut public_to = public_to;
    let mut seen = std::collections::HashSet::new();
    public_to.retain(|a: &String| seen.insert(a.clone()));
    let recipients = match get("Recipients") {
        None => Vec::new(),
        Some(names) => {
            let names = name_list(names);
            if names.is_empty() {
                return Err(TermsError::NoRecipients);
            }
            names
        }
    };
    let deployment = get("Deployment").map(Deployment::parse).transpose()?;
    let tlp = get("TLP").map(Tlp::parse).transpose()?;
    let github = get("GitHub-Advisory")
        .map(GithubAdvisory::parse)
        .transpose()?
        .unwrap_or_default();
    Ok(Terms {
        until: until_utc,
        sender_offset: *until.offset(),
        public_to,
        override_reason,
        recipients,
        deployment,
        tlp,
        github,
    })
}

/// The entries of a `Recipients:` value, as written and in order (so an
/// error can say which): separated by commas, a name that holds a comma in
/// double quotes (`"Red Hat, Inc."`), empty entries dropped.
fn name_list(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => names.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    names.push(current);
    names
        .into_iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The decoded text of the entity's first text/plain part.
fn first_text(entity: &[u8]) -> Option<String> {
    let msg = MessageParser::default().parse(entity)?;
    let index = *msg.text_body.first()?;
    let part = msg.parts.get(index as usize)?;
    if !part.is_text() || part.is_text_html() {
        return None;
    }
    Some(part.text_contents()?.to_owned())
}

/// One `Field: value` line of the field block.
#[derive(Debug)]
struct Field {
    /// As the grammar spells it.
    name: &'static str,
    value: String,
}

/// The `Field: value` lines before the first blank line; an empty block if
/// the text does not start with one.
fn field_block(text: &str) -> Result<Vec<Field>, TermsError> {
    let mut fields: Vec<Field> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            break;
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            break;
        }
        let Some(name) = canonical(name) else {
            return Err(TermsError::UnknownField {
                line: index + 1,
                name: Quoted::new(name),
            });
        };
        if fields.iter().any(|f| f.name == name) {
            return Err(TermsError::Duplicate {
                line: index + 1,
                name,
            });
        }
        fields.push(Field {
            name,
            value: value.trim().to_owned(),
        });
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
            .unwrap()
            .into()
    }

    fn parse(text: &str) -> Result<Terms, TermsError> {
        let entity = format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{text}");
        terms(entity.as_bytes(), now(), chrono::Duration::days(14))
    }

    /// `GitHub-Advisory:` entries as GitHub spells them, in any case; what
    /// is refused names the entry's place, never the entry, in the clear.
    #[test]
    fn github_advisories_are_read_and_bad_ones_refused() {
        let with = |value: &str| {
            parse(&format!(
                "Embargo-Until: 2026-12-01T18:00:00Z\r\nGitHub-Advisory: {value}\r\n\r\nDetails.\r\n"
            ))
        };
        let t = with("acme/widget GHSA-2345-6789-CFGH").unwrap();
        assert_eq!(t.github.len(), 1);
        let a = &t.github[0];
        assert_eq!(
            (a.owner.as_str(), a.repo.as_str(), a.ghsa.as_str()),
            ("acme", "widget", "GHSA-2345-6789-cfgh")
        );
        assert!(!format!("{t:?}").contains("widget"), "{t:?}");
        let t = with(" Acme-Corp/my_lib.rs   ghsa-jmpq-rvwx-2345 , acme/b GHSA-2345-6789-cfgh, ,acme/b GHSA-2345-6789-cfgh").unwrap();
        assert_eq!(t.github.len(), 2, "empty and repeated entries dropped");
        assert_eq!(
            GithubAdvisory::from_kept(&GithubAdvisory::as_field(&t.github)),
            t.github
        );
        let eight: Vec<String> = (0..8)
            .map(|i| format!("acme/r{i} GHSA-2345-6789-cfgh"))
            .collect();
        assert_eq!(with(&eight.join(",")).unwrap().github.len(), 8);
        assert_eq!(
            with(&format!("{}, acme/r9 GHSA-2345-6789-cfgh", eight.join(","))),
            Err(TermsError::ManyGithubAdvisories)
        );
        for (value, position) in [
            ("acme/widget", 1),
            ("acme/widget GHSA-2345-6789", 1),
            ("acme/widget GHSA-2345-6789-abcd", 1), // a, b, d are not in GitHub's alphabet
            ("acme/widget GHSA-2345-6789-cfgh extra", 1),
            ("widget GHSA-2345-6789-cfgh", 1),
            ("acme/wid/get GHSA-2345-6789-cfgh", 1),
            ("-acme/widget GHSA-2345-6789-cfgh", 1),
            ("acme/.. GHSA-2345-6789-cfgh", 1),
            (
                "acme/a GHSA-2345-6789-cfgh, SECRET-REPO/x?y GHSA-2345-6789-cfgh",
                2,
            ),
            ("acme/../../orgs GHSA-2345-6789-cfgh", 1),
        ] {
            let bad = with(value).unwrap_err();
            assert!(
                matches!(bad, TermsError::BadGithubAdvisory { position: p, .. } if p == position),
                "{value}: {bad:?}"
            );
            assert!(
                !bad.to_string().contains("SECRET") && !bad.to_string().contains("acme"),
                "{bad}"
            );
        }
    }

    /// `Deployment:` and `TLP:` as PSTs write them, in any case, and what
    /// is refused (naming the field, never echoing the value in the clear).
    #[test]
    fn deployment_and_tlp_are_read_and_bad_ones_refused() {
        let with = |lines: &str| {
            parse(&format!(
                "Embargo-Until: 2026-12-01T18:00:00Z\r\n{lines}\r\nDetails.\r\n"
            ))
        };
        let t = with("").unwrap();
        assert_eq!((t.deployment, t.tlp), (None, None));
        for (line, want) in [
            ("Deployment: allowed\r\n", Some(Deployment::Allowed)),
            ("Deployment: FORBIDDEN\r\n", Some(Deployment::Forbidden)),
            (
                "deployment:  hosted providers may deploy; others wait \r\n",
                Some(Deployment::Terms(
                    "hosted providers may deploy; others wait".into(),
                )),
            ),
        ] {
            assert_eq!(with(line).unwrap().deployment, want, "{line}");
        }
        for (line, want) in [
            ("TLP: AMBER\r\n", Tlp::Amber),
            ("TLP:amber+strict\r\n", Tlp::AmberStrict),
            ("tlp: TLP:RED\r\n", Tlp::Red),
            ("TLP: WHITE\r\n", Tlp::Clear),
            ("TLP: clear\r\n", Tlp::Clear),
            ("TLP: Green\r\n", Tlp::Green),
        ] {
            let t = with(line).unwrap();
            assert_eq!(t.tlp, Some(want), "{line}");
            // As the record keeps it, read back.
            assert_eq!(Tlp::from_kept(want.label()), Some(want));
        }
        // Logged by mistake, the terms would not show.
        let t = with("Deployment: SECRET-TERMS apply\r\n").unwrap();
        assert!(!format!("{t:?}").contains("SECRET-TERMS"), "{t:?}");
        assert_eq!(with("Deployment:\r\n"), Err(TermsError::EmptyDeployment));
        assert_eq!(
            with(&format!("Deployment: {}\r\n", "x".repeat(501))),
            Err(TermsError::LongDeployment)
        );
        // Counted in octets: 251 two-octet letters are too long, 250 not.
        assert_eq!(
            with(&format!("Deployment: {}\r\n", "é".repeat(251))),
            Err(TermsError::LongDeployment)
        );
        assert!(with(&format!("Deployment: {}\r\n", "é".repeat(250))).is_ok());
        let bad = with("TLP: PURPLE-SECRET\r\n").unwrap_err();
        assert!(matches!(bad, TermsError::BadTlp(_)), "{bad:?}");
        assert!(!bad.to_string().contains("PURPLE"), "{bad}");
        assert!(matches!(
            with("TLP: AMBER\r\nTLP: RED\r\n"),
            Err(TermsError::Duplicate { name: "TLP", .. })
        ));
    }

    /// The receipt's warnings at every hour of two weeks: a Friday or a
    /// weekend lift (UTC), a lift outside the release hours (their start
    /// inside, their end outside), less notice than the minimum; none
    /// otherwise.
    #[test]
    fn release_warnings_fall_on_the_right_hours() {
        use chrono::{Datelike, NaiveTime, Timelike, Weekday};
        let monday = DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(monday.weekday(), Weekday::Mon);
        let week = chrono::Duration::days(7);
        let hours = Some((
            NaiveTime::from_hms_opt(14, 0, 0).unwrap(),
            NaiveTime::from_hms_opt(18, 0, 0).unwrap(),
        ));
        for h in 0..14 * 24 {
            let until =
                monday + chrono::Duration::hours(h) + chrono::Duration::minutes(30 * (h % 2));
            let day = until.weekday();
            let w = release_warnings(until, Some(until - week), week, hours);
            let friday = w.iter().any(|w| w.contains("on a Friday"));
            let weekend = w.iter().any(|w| w.contains("on a weekend"));
            let outside = w
                .iter()
                .any(|w| w.contains("outside the list's release hours"));
            assert_eq!(friday, day == Weekday::Fri, "{until}: {w:?}");
            assert_eq!(
                weekend,
                matches!(day, Weekday::Sat | Weekday::Sun),
                "{until}: {w:?}"
            );
            assert_eq!(outside, !(14..18).contains(&until.hour()), "{until}: {w:?}");
            assert!(!w.iter().any(|w| w.contains("notice")), "{until}: {w:?}");
            // Without release hours, no hour is outside them.
            let any_hour = release_warnings(until, Some(until - week), week, None);
            assert!(!any_hour.iter().any(|w| w.contains("release hours")));
        }
        let tuesday = monday + chrono::Duration::days(1) + chrono::Duration::hours(16);
        for (notice, warned, says) in [
            (
                chrono::Duration::days(2),
                true,
                "2 days of notice, less than the list's minimum of 7 days",
            ),
            (
                chrono::Duration::hours(7 * 24 - 1),
                true,
                "6 days 23 hours of notice",
            ),
            (chrono::Duration::hours(5), true, "5 hours of notice"),
            (chrono::Duration::minutes(30), true, "30 minutes of notice"),
            (week, false, ""),
            (chrono::Duration::days(10), false, ""),
        ] {
            let w = release_warnings(tuesday, Some(tuesday - notice), week, None);
            assert_eq!(w.len(), usize::from(warned), "{notice}: {w:?}");
            assert!(w.iter().all(|w| w.contains(says)), "{notice}: {w:?}");
        }
        assert!(release_warnings(tuesday, None, week, None).is_empty());
    }

    /// Every attachment's digest is the SHA-256 of its decoded content,
    /// whatever its size and transfer encoding; text parts are not
    /// attachments; a part without a name is named by its position.
    #[test]
    fn attachment_digests_are_of_the_decoded_content() {
        let sizes = [0usize, 1, 2, 3, 57, 58, 1000, 70_000];
        let content = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 % 256) as u8).collect() };
        let mut entity = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nEmbargo-Until: 2026-12-01T18:00:00Z\r\n\r\nx\r\n".to_vec();
        for (i, n) in sizes.iter().enumerate() {
            entity.extend_from_slice(
                format!(
                    "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"f{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                )
                .as_bytes(),
            );
            entity.extend_from_slice(&crate::lines::base64_lines(&content(*n)));
            entity.extend_from_slice(b"\r\n");
        }
        entity.extend_from_slice(b"--b\r\nContent-Type: text/x-diff\r\nContent-Disposition: attachment\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n+a =3D b\r\n--b--\r\n");
        let digests = attachment_digests(&entity);
        assert_eq!(digests.len(), sizes.len() + 1);
        for (i, n) in sizes.iter().enumerate() {
            let want = crate::crypto::sha256_hex(&content(*n)).to_ascii_lowercase();
            assert_eq!(digests[i], (format!("f{i}.bin"), want), "{n} octets");
        }
        let last = &digests[sizes.len()];
        assert_eq!(
            last.0,
            format!("attachment {} (no file name)", sizes.len() + 1)
        );
        assert_eq!(
            last.1,
            crate::crypto::sha256_hex(b"+a = b").to_ascii_lowercase()
        );
        assert!(attachment_digests(b"Content-Type: text/plain\r\n\r\nx").is_empty());
    }

    /// The digest is of the bytes as sent, not of a text converted to
    /// UTF-8; a text part with a file name counts though inline; an
    /// attached message is listed, then its own attachments; a file name's
    /// invisible direction overrides are shown as spaces.
    #[test]
    fn attachment_digests_are_of_the_bytes_as_sent() {
        let mut entity = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nEmbargo-Until: 2026-12-01T18:00:00Z\r\n\r\nx\r\n".to_vec();
        // Latin-1, 8bit: the byte 0xE9, not its UTF-8 form.
        entity.extend_from_slice(b"--b\r\nContent-Type: text/x-patch; charset=iso-8859-1\r\nContent-Disposition: attachment; filename=\"cafe.patch\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n+caf\xe9\r\n-old\r\n");
        // Inline, with a file name.
        entity.extend_from_slice(b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: inline; filename=\"fix.patch\"\r\n\r\n+fix\r\n");
        // A forwarded report with its proof of concept.
        entity.extend_from_slice(b"--b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"report.eml\"\r\n\r\nSubject: r\r\nContent-Type: multipart/mixed; boundary=\"c\"\r\n\r\n--c\r\nContent-Type: text/plain\r\n\r\nsee poc\r\n--c\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"poc\xe2\x80\xaegpj.sh\"\r\nContent-Transfer-Encoding: base64\r\n\r\ncG9j\r\n--c--\r\n");
        entity.extend_from_slice(b"--b--\r\n");
        let digests = attachment_digests(&entity);
        let sha = |b: &[u8]| crate::crypto::sha256_hex(b).to_ascii_lowercase();
        let names: Vec<&str> = digests.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "cafe.patch",
                "fix.patch",
                "report.eml",
                "report.eml / poc gpj.sh"
            ],
            "{digests:?}"
        );
        assert_eq!(digests[0].1, sha(b"+caf\xe9\r\n-old"));
        assert_eq!(digests[1].1, sha(b"+fix"));
        assert_eq!(digests[3].1, sha(b"poc"));
    }

    #[test]
    fn a_complete_block_is_read() {
        let t = parse(
            "Embargo-Until: 2026-12-01T18:00:00+02:00\r\nPublic-To: oss-security@lists.example, Announce@Example.org\r\n\r\nDetails.\r\n",
        )
        .unwrap();
        assert_eq!(t.until.to_rfc3339(), "2026-12-01T16:00:00+00:00");
        assert_eq!(t.sender_offset.local_minus_utc(), 7200);
        assert_eq!(
            t.public_to,
            ["oss-security@lists.example", "announce@example.org"]
        );
        assert_eq!(t.override_reason, None);
    }

    /// `Recipients:` names, as written, once each in any case; `List:` an
    /// address, lowercased. Neither given: every member, no list named.
    #[test]
    fn the_scope_and_the_list_are_read() {
        let t = parse(
            "Embargo-Until: 2026-12-01T16:00:00Z\r\nRecipients: Red Hat , SAP,sec@VMware.example, \"Red Hat, Inc.\",, red hat\r\nList: Distros@Example.org\r\n\r\nx\r\n",
        )
        .unwrap();
        assert_eq!(
            t.recipients,
            [
                "Red Hat",
                "SAP",
                "sec@VMware.example",
                "Red Hat, Inc.",
                "red hat"
            ],
            "as written, in order: an error names the entry's place"
        );
        let plain = parse("Embargo-Until: 2026-12-01T16:00:00Z\r\n\r\nx\r\n").unwrap();
        assert!(plain.recipients.is_empty());
        let request = |text: &str| {
            let entity = format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{text}");
            request(entity.as_bytes(), now(), chrono::Duration::days(14))
        };
        let (_, list) = request(
            "Embargo-Until: 2026-12-01T16:00:00Z\r\nList: Distros@Example.org\r\n\r\nx\r\n",
        )
        .unwrap();
        assert_eq!(list.as_deref(), Some("distros@example.org"));
        let (command, list) =
            request("Embargo-Cancel: 0123456789abcdef\r\nList: distros@example.org\r\n").unwrap();
        assert!(matches!(
            command,
            Request::PstCommand(PstCommand::Cancel { .. })
        ));
        assert_eq!(
            list.as_deref(),
            Some("distros@example.org"),
            "beside a command"
        );
        assert!(
            request("Embargo-Cancel: 0123456789abcdef\r\n")
                .unwrap()
                .1
                .is_none()
        );
        assert_eq!(
            parse("Embargo-Until: 2026-12-01T16:00:00Z\r\nRecipients: , ,\r\n"),
            Err(TermsError::NoRecipients)
        );
        let bad = request("Embargo-Until: 2026-12-01T16:00:00Z\r\nList: QZ7CANARY list\r\n");
        assert!(matches!(bad, Err(TermsError::BadList(_))), "{bad:?}");
        assert!(!bad.unwrap_err().to_string().contains("QZ7CANARY"));
    }

    #[test]
    fn each_invalid_case_is_named() {
        assert_eq!(parse("Just text.\r\n"), Err(TermsError::MissingUntil));
        assert!(matches!(
            parse("Embargo-Until: 2026-12-01 16:00\r\n"),
            Err(TermsError::BadTime(..))
        ));
        assert!(
            matches!(
                parse("Embargo-Until: 2026-12-01T16:00:00\r\n"),
                Err(TermsError::BadTime(..))
            ),
            "no offset"
        );
        assert!(matches!(
            parse("Embargo-Until: 2026-11-24T11:59:59Z\r\n"),
            Err(TermsError::Past(_))
        ));
        assert_eq!(
            parse("Embargo-Until: 2026-12-24T12:00:00Z\r\n"),
            Err(TermsError::TooLong {
                days: 30,
                max_days: 14
            })
        );
        assert!(matches!(
            parse("Embargo-Untill: 2026-12-01T16:00:00Z\r\n"),
            Err(TermsError::UnknownField { .. })
        ));
        assert!(matches!(
            parse("Embargo-Until: 2026-12-01T16:00:00Z\r\nEmbargo-Until: 2026-12-02T16:00:00Z\r\n"),
            Err(TermsError::Duplicate { .. })
        ));
        assert!(matches!(
            parse("Embargo-Until: 2026-12-01T16:00:00Z\r\nPublic-To: not an address\r\n"),
            Err(TermsError::BadPublicTo(_))
        ));
        // One list named twice, in any case, is one release (it broke the
        // spool's primary key and answered 451 forever).
        let t = parse(
            "Embargo-Until: 2026-12-01T16:00:00Z\r\nPublic-To: oss@x.org, OSS@x.org, b@y.org, oss@X.ORG\r\n",
        )
        .unwrap();
        assert_eq!(t.public_to, ["oss@x.org", "b@y.org"]);
    }

    #[test]
    fn an_explicit_override_allows_a_longer_embargo() {
        let t = parse("Embargo-Until: 2026-12-24T12:00:00Z\r\nEmbargo-Override: coordinated with three upstreams\r\n").unwrap();
        assert_eq!(
            t.override_reason.as_deref(),
            Some("coordinated with three upstreams")
        );
    }

    #[test]
    fn fields_are_read_from_the_first_text_part_of_a_multipart_entity() {
        let entity = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nEmbargo-Until: 2026-12-01T16:00:00=\r\nZ\r\n\r\nText.\r\n--b\r\nContent-Type: text/plain; name=\"public-advisory.txt\"\r\nContent-Disposition: attachment; filename=\"public-advisory.txt\"\r\n\r\nPublic.\r\n--b--\r\n";
        let t = terms(entity, now(), chrono::Duration::days(14)).unwrap();
        assert_eq!(t.until.to_rfc3339(), "2026-12-01T16:00:00+00:00");
    }

    #[test]
    fn the_public_advisory_is_the_named_attachment() {
        let entity = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nEmbargo-Until: 2026-12-01T16:00:00Z\r\n\r\nPrivate.\r\n--b\r\nContent-Type: text/plain; name=\"public-advisory.txt\"\r\nContent-Disposition: attachment; filename=\"public-advisory.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\nUHVibGljIGFkdmlzb3J5Lg==\r\n--b--\r\n";
        assert_eq!(public_advisory(entity).as_deref(), Some("Public advisory."));
        assert_eq!(
            public_advisory(b"Content-Type: text/plain\r\n\r\nEmbargo-Until: x\r\n"),
            None
        );
        // The announcement itself is never published, whatever it is named.
        let named = b"Content-Type: text/plain; name=\"public-advisory.txt\"\r\nContent-Disposition: attachment; filename=\"public-advisory.txt\"\r\n\r\nEmbargo-Until: x\r\n";
        assert_eq!(public_advisory(named), None);
    }

    #[test]
    fn commands_are_read_and_must_stand_alone() {
        let req = |text: &str| {
            let entity = format!("Content-Type: text/plain\r\n\r\n{text}");
            request(entity.as_bytes(), now(), chrono::Duration::days(14)).map(|(r, _)| r)
        };
        assert_eq!(
            req("Embargo-Release-Now: 5C74C187E80A969C\r\n\r\nLeaked on a forum.\r\n"),
            Ok(Request::PstCommand(PstCommand::ReleaseNow {
                id: "5c74c187e80a969c".into()
            }))
        );
        assert_eq!(
            req("Embargo-Extend: 5c74c187e80a969c 2026-12-10T16:00:00+01:00\r\n"),
            Ok(Request::PstCommand(PstCommand::Extend {
                id: "5c74c187e80a969c".into(),
                to: DateTime::parse_from_rfc3339("2026-12-10T15:00:00Z")
                    .unwrap()
                    .into()
            }))
        );
        assert!(matches!(
            req("Embargo-Cancel: nope\r\n"),
            Err(TermsError::BadCommand { .. })
        ));
        assert!(matches!(
            req("Embargo-Extend: 5c74c187e80a969c tomorrow\r\n"),
            Err(TermsError::BadTime(..))
        ));
        assert!(matches!(
            req("Embargo-Cancel: 5c74c187e80a969c\r\nEmbargo-Until: 2026-12-01T16:00:00Z\r\n"),
            Err(TermsError::BadCommand { .. })
        ));
        assert!(matches!(
            req("Embargo-Until: 2026-12-01T16:00:00Z\r\n"),
            Ok(Request::Announce(_))
        ));
    }

    #[test]
    fn errors_never_quote_more_than_a_field() {
        let long = format!("Embargo-Until: {}\r\n", "x".repeat(500));
        let err = parse(&long).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }
}
