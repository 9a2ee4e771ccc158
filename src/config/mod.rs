//! Configuration: the TOML file ([`RawConfig`]) is read once and validated into
//! a [`Config`] that the rest of the daemon trusts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::address::check_address;
use crate::crypto::ListKey;
use crate::roster::{Member, Roster};
use crate::secret::Secret;

mod hooks;
mod lists;
mod raw;
#[cfg(test)]
mod tests;
mod units;
mod validate;

pub use raw::*;
pub use units::*;
use validate::Validator;

/// A configuration problem, naming the file and the field and saying how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// The file serves several lists and the command named none (or one
    /// it does not serve).
    #[error("{path}: {problem}")]
    Choose { path: PathBuf, problem: String },
    #[error("{path}: field `{field}`: {problem}")]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
}

/// The validated configuration of one list (with the daemon-wide sections
/// it shares with the file's other lists: SMTP, outbound, the spool).
#[derive(Debug)]
pub struct Config {
    pub list_address: String,
    /// Join requests to this address are forwarded to the PST with a checklist.
    pub request_address: String,
    /// The file `Roster-Add`/`Roster-Remove` commands edit (none: refused).
    pub roster_file: Option<PathBuf>,
    pub hostname: String,
    pub list_key: ListKey,
    pub state_dir: PathBuf,
    pub smtp: SmtpConfig,
    /// The mailbox to poll, if any.
    pub imap: Option<ImapConfig>,
    pub outbound: OutboundConfig,
    pub policy: PolicyConfig,
    pub roster: Roster,
    /// The list's own S/MIME certificate and key (for S/MIME members).
    pub smime: Option<crate::crypto::smime::SmimeIdentity>,
    /// `[http]`: the status API and metrics (none: off).
    pub http: Option<HttpConfig>,
    /// `[discovery]`: where members' keys are looked up (none: nowhere).
    pub discovery: Option<crate::discovery::DiscoveryConfig>,
    /// Release hooks (issue 21), in the file's order.
    pub hooks: Vec<ReleaseHook>,
    /// The file's other lists.
    pub neighbours: Neighbours,
}

/// A release hook (`[[release_hook]]`): an HTTPS endpoint called at the
/// lift of every embargo of the list, or when one is cancelled.
#[derive(Debug, Clone)]
pub struct ReleaseHook {
    /// `[a-z0-9_-]`, at most 40: it names the hook's deliveries.
    pub name: String,
    pub kind: HookKind,
    /// The webhook's address, or the GitHub API's.
    pub url: crate::discovery::https::Url,
    /// The webhook's HMAC-SHA256 key, or the GitHub token.
    pub secret: crate::secret::Secret,
    pub on_lift: bool,
    pub on_cancel: bool,
    /// PEM certificates trusted besides the system's roots.
    pub extra_ca: Option<Vec<u8>>,
    /// The longest one call may take.
    pub timeout: Duration,
}

/// What a release hook calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// A JSON POST signed with HMAC-SHA256.
    Webhook,
    /// GitHub's REST API: publishes the repository security advisories
    /// the announcement names (`GitHub-Advisory:`).
    Github,
}

impl Config {
    /// The hook called `name`, if the list still has it.
    pub fn hook(&self, name: &str) -> Option<&ReleaseHook> {
        self.hooks.iter().find(|h| h.name == name)
    }
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub max_embargo: chrono::Duration,
    /// The default public lists for a held advisory.
    pub public_recipients: Vec<String>,
    /// How long before the embargo lifts the PST is reminded.
    pub reminder_before: chrono::Duration,
    /// How long before the embargo lifts members who have not acknowledged
    /// it are reminded to.
    pub ack_reminder_before: chrono::Duration,
    /// A release later than this after its time is reported as late.
    pub late_after: chrono::Duration,
    /// Signatures older than this are refused (replay window).
    pub signature_max_age: chrono::Duration,
    pub member_posts: MemberPosts,
    /// Accept a body that is one cleartext-signed block (default: no).
    pub inline_pgp: bool,
    /// Bounds on the MIME structure of every mail taken in.
    pub mime: MimeLimits,
    /// When a lift earns the PST a warning in its receipt.
    pub release: ReleaseGuard,
}

/// Release-time guardrails (issue 21): the receipt warns, never refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseGuard {
    /// Less notice than this before the lift is warned of (default 7 days,
    /// what the Kubernetes process promises distributors).
    pub min_notice: chrono::Duration,
    /// The list's release hours in UTC (`policy.release_hours`, e.g.
    /// `"14:00-18:00"`); a lift outside them is warned of. None: any hour.
    pub hours: Option<(chrono::NaiveTime, chrono::NaiveTime)>,
}

impl Default for ReleaseGuard {
    fn default() -> ReleaseGuard {
        ReleaseGuard {
            min_notice: chrono::Duration::days(7),
            hours: None,
        }
    }
}

/// Where a member's signed, encrypted post goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberPosts {
    /// Re-encrypted to every member (the PST included).
    List,
    /// Re-encrypted to the PST only.
    Pst,
    /// Refused.
    Reject,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmtpConfig {
    pub listen: SocketAddr,
    pub max_message_size: usize,
    /// Message bytes all sessions hold at once, DATA to answer (default
    /// four messages of the largest size); beyond, DATA gets 452.
    pub max_data_in_flight: usize,
    pub max_sessions: usize,
    /// Sessions one untrusted address may hold (default: an eighth of
    /// max_sessions, at least 1).
    pub max_sessions_per_peer: usize,
    /// Exempt from that, and with `reserved_sessions` of their own (default:
    /// loopback, where the local MTA connects from).
    pub trusted_peers: Vec<std::net::IpAddr>,
    pub reserved_sessions: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub session_timeout: Duration,
}

/// `[http]`, validated.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: HttpListen,
    /// The file with the bearer token (the systemd credential `http-token`
    /// wins when present). Read when the daemon starts, not at every
    /// configuration load: `submit` and the CLI do not need it.
    pub token_file: Option<PathBuf>,
    pub metrics_open: bool,
}

impl HttpConfig {
    /// The bearer token: one line of at least 32 printable ASCII
    /// characters, from the credential or the file; the error says which
    /// and why.
    pub fn token(&self) -> Result<Secret, String> {
        let creds = std::env::var_os("CREDENTIALS_DIRECTORY");
        let credential = creds
            .as_deref()
            .map(|d| Path::new(d).join(HTTP_TOKEN_CREDENTIAL))
            .filter(|p| p.is_file());
        let path = credential.or_else(|| self.token_file.clone()).ok_or(
            "http.token_file: missing: the API needs a bearer token (a file with one line of 32+ random characters, e.g. `openssl rand -hex 32`), or the credential http-token",
        )?;
        let token = std::fs::read_to_string(&path)
            .map_err(|e| format!("http.token_file: {}: {e}", path.display()))?
            .trim()
            .to_owned();
        if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "http.token_file: {}: the token must be one line of at least 32 printable ASCII characters without spaces",
                path.display()
            ));
        }
        Ok(Secret::new(token.into_bytes()))
    }
}

/// Where `[http]` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// How the IMAP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapTls {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain connection upgraded with STARTTLS before login (port 143).
    StartTls,
    /// No TLS: allowed only to a loopback address.
    None,
}

/// Compared whole by `Relay::reload` (never by its `Debug` text, which
/// hides the password's value).
#[derive(Debug, Clone, PartialEq)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub tls: ImapTls,
    /// Extra trust root (PEM) for the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    pub user: String,
    pub password: Secret,
    pub mailbox: String,
    pub poll_interval: Duration,
    pub done_folder: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OutboundConfig {
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long after its first transient failure a delivery is given up.
    pub retry_lifetime: Duration,
    /// How many deliveries run at once (public releases have as many more of their own).
    pub concurrency: usize,
}

impl Config {
    /// Whether the list takes mail for `rcpt`: its address or its request
    /// address, in any case. The one recipient check (SMTP's RCPT, `submit`).
    pub fn serves(&self, rcpt: &str) -> bool {
        rcpt.eq_ignore_ascii_case(&self.list_address)
            || rcpt.eq_ignore_ascii_case(&self.request_address)
            || self.bounce_token(rcpt).is_some()
    }

    /// The envelope sender of the delivery with `copy_id` (VERP): the
    /// list's address with `+bounce-<copy id>`, so that a delivery status
    /// notification names the delivery it is about.
    pub fn bounce_address(&self, copy_id: &str) -> String {
        let (local, domain) = self
            .list_address
            .split_once('@')
            .unwrap_or((&self.list_address, ""));
        format!("{local}+bounce-{copy_id}@{domain}")
    }

    /// The copy id a bounce address of this list names (lower case), if
    /// `rcpt` is one: `<list local part>+bounce-<hex>@<list domain>`, any case.
    pub fn bounce_token(&self, rcpt: &str) -> Option<String> {
        let (local, domain) = self.list_address.split_once('@')?;
        let (their_local, their_domain) = rcpt.trim().rsplit_once('@')?;
        if !their_domain.eq_ignore_ascii_case(domain) {
            return None;
        }
        let prefix = format!("{local}+bounce-");
        let head = their_local.get(..prefix.len())?;
        let token = &their_local[prefix.len()..];
        (head.eq_ignore_ascii_case(&prefix)
            && token.len() == 24
            && token.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| token.to_ascii_lowercase())
    }

    /// Reads and validates the configuration file of one list: the file's
    /// only list (a file with several is refused: see [`Config::load_list`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_list(path, None)
    }

    /// The list of the file with address `list` (any case); `None`: the
    /// file's only list. What the operator's `--list` chooses.
    pub fn load_list(path: &Path, list: Option<&str>) -> Result<Config, ConfigError> {
        Self::choose(Self::load_all(path)?, list, path)
    }

    /// The list with address `list` among `lists`, or the only one.
    pub fn choose(
        lists: Vec<Config>,
        list: Option<&str>,
        path: &Path,
    ) -> Result<Config, ConfigError> {
        let names = || {
            lists
                .iter()
                .map(|c| c.list_address.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let problem = match list {
            Some(wanted) => match lists
                .iter()
                .position(|c| c.list_address.eq_ignore_ascii_case(wanted.trim()))
            {
                Some(i) => return Ok(lists.into_iter().nth(i).expect("found")),
                None => format!("no list {wanted} in this file; its lists: {}", names()),
            },
            None if lists.len() == 1 => {
                return Ok(lists.into_iter().next().expect("one"));
            }
            None => format!(
                "the file serves {} lists ({}): name one with --list ADDRESS",
                lists.len(),
                names()
            ),
        };
        Err(ConfigError::Choose {
            path: path.to_owned(),
            problem,
        })
    }

    /// Reads and validates the configuration file: every list it serves,
    /// in its order. Relative paths in it are taken from the file's own
    /// directory.
    pub fn load_all(path: &Path) -> Result<Vec<Config>, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_all(&text, path)
    }

    /// Validates the configuration text of one list (see [`Config::load`]).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Self::choose(Self::parse_all(text, path)?, None, path)
    }

    /// Validates configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse_all(text: &str, path: &Path) -> Result<Vec<Config>, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        // Relative paths are taken from the config file's directory, made
        // absolute now: `--config config.toml` has the empty parent "", in
        // which no file can be created (a roster rewrite's temp file).
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let base = absolute.parent().unwrap_or(Path::new("."));
        Validator {
            path,
            base,
            which: None,
        }
        .lists(raw)
    }
}

/// What one list knows of the daemon's other lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbours {
    /// The first list of the file: a spool written before lists were
    /// marked belongs to it (`Spool::open`).
    pub first: String,
    /// The other lists' addresses and request addresses.
    pub addresses: Vec<String>,
    /// Every list of the file (this one included), in its order.
    pub lists: Vec<String>,
    /// The file is in the one-list form (`[list]`).
    pub one_list_form: bool,
}

/// Bounds on a mail's MIME structure, checked right after the parse and
/// before anything in the mail is looked at (`policy.mime_max_*`). The parse
/// itself is linear in the mail's size, which `inbound.smtp.max_message_size`
/// bounds; these bound what it builds and what later steps walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MimeLimits {
    /// Nesting of multiparts and attached messages (the root is level 1).
    pub max_depth: usize,
    /// Parts in all, nested messages' parts included.
    pub max_parts: usize,
    /// Header fields in any one part (or the mail's own header).
    pub max_headers: usize,
    /// Octets of one header field, folded lines included.
    pub max_header_size: usize,
}

impl Default for MimeLimits {
    /// Far above what a mail client makes (a signed announcement with a few
    /// attachments has depth 3 and under 10 parts), far below what hurts.
    fn default() -> Self {
        MimeLimits {
            max_depth: 8,
            max_parts: 64,
            max_headers: 500,
            max_header_size: 16 * 1024,
        }
    }
}
