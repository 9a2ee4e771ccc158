//! Configuration: the TOML file ([`RawConfig`]) is read once and validated into
//! a [`Config`] that the rest of the daemon trusts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::address::check_address;
use crate::crypto::ListKey;
use crate::roster::{Member, Roster};
use crate::secret::Secret;

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
    #[error("{path}: field `{field}`: {problem}")]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub list: RawList,
    #[serde(default)]
    pub inbound: RawInbound,
    pub outbound: RawOutbound,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub public: RawPublic,
    #[serde(default, rename = "member")]
    pub members: Vec<RawMember>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawList {
    pub address: String,
    pub secret_key: PathBuf,
    pub state_dir: PathBuf,
    /// Name used in the SMTP greeting and in Message-IDs; defaults to the
    /// domain of the list address.
    pub hostname: Option<String>,
    /// Where join requests go; defaults to `<list>-request@<domain>`.
    pub request_address: Option<String>,
    /// Members added by signed `Roster-Add:` commands live here.
    pub roster_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInbound {
    #[serde(default)]
    pub smtp: RawSmtp,
    pub imap: Option<RawImap>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImap {
    pub host: String,
    pub port: Option<u16>,
    /// `tls` (implicit TLS, port 993), `starttls` (port 143) or `none`
    /// (loopback only).
    pub tls: Option<String>,
    /// Extra trust root (PEM) for the server's certificate, e.g. a private CA.
    pub ca_file: Option<PathBuf>,
    pub user: String,
    pub password_file: PathBuf,
    pub mailbox: Option<String>,
    pub poll_interval: Option<String>,
    /// Move processed mail here instead of deleting it.
    pub done_folder: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub listen: Option<String>,
    pub max_message_size: Option<String>,
    /// Message bytes all SMTP sessions may hold at once.
    pub max_data_in_flight: Option<String>,
    pub max_sessions: Option<usize>,
    /// Sessions one untrusted address may hold at once.
    pub max_sessions_per_peer: Option<usize>,
    /// Addresses exempt from the per-address limit, with slots of their own.
    #[serde(default)]
    pub trusted_peers: Vec<String>,
    /// Of max_sessions, the slots only trusted peers may take.
    pub reserved_sessions: Option<usize>,
    pub command_timeout: Option<String>,
    pub data_timeout: Option<String>,
    pub session_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    pub smarthost: String,
    pub timeout: Option<String>,
    pub retry_initial: Option<String>,
    pub retry_max: Option<String>,
    pub retry_lifetime: Option<String>,
    pub concurrency: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// The longest embargo accepted without an `Embargo-Override:` field.
    pub max_embargo: Option<String>,
    /// How long before an embargo lifts the PST is reminded.
    pub reminder_before: Option<String>,
    /// A release later than this after its time is reported as late.
    pub late_after: Option<String>,
    /// Signatures older than this are refused as possible replays.
    pub signature_max_age: Option<String>,
    /// What happens to a signed post from a member: `list`, `pst` or `reject`.
    pub member_posts: Option<String>,
    /// Accept inline PGP (a cleartext-signed body) as well as PGP/MIME.
    pub inline_pgp: Option<bool>,
    /// Bounds on a mail's MIME structure (see [`MimeLimits`]).
    pub mime_max_depth: Option<usize>,
    pub mime_max_parts: Option<usize>,
    pub mime_max_headers: Option<usize>,
    pub mime_max_header_size: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublic {
    /// Where a held public advisory goes when the announcement names no `Public-To`.
    #[serde(default)]
    pub recipients: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    pub email: String,
    pub organization: String,
    pub key: PathBuf,
    #[serde(default)]
    pub pst: bool,
}

/// The validated configuration.
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
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub max_embargo: chrono::Duration,
    /// The default public lists for a held advisory.
    pub public_recipients: Vec<String>,
    /// How long before the embargo lifts the PST is reminded.
    pub reminder_before: chrono::Duration,
    /// A release later than this after its time is reported as late.
    pub late_after: chrono::Duration,
    /// Signatures older than this are refused (replay window).
    pub signature_max_age: chrono::Duration,
    pub member_posts: MemberPosts,
    /// Accept a body that is one cleartext-signed block (default: no).
    pub inline_pgp: bool,
    /// Bounds on the MIME structure of every mail taken in.
    pub mime: MimeLimits,
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
    }

    /// Reads and validates the configuration file; relative paths in it are
    /// taken from the file's own directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        // Relative paths are taken from the config file's directory, made
        // absolute now: `--config config.toml` has the empty parent "", in
        // which no file can be created (a roster rewrite's temp file).
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let base = absolute.parent().unwrap_or(Path::new("."));
        Validator { path, base }.config(raw)
    }
}

struct Validator<'a> {
    path: &'a Path,
    base: &'a Path,
}

impl Validator<'_> {
    fn err(&self, field: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Field {
            path: self.path.to_owned(),
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let list_address =
            check_address(&raw.list.address).map_err(|p| self.err("list.address", p))?;
        let hostname = match raw.list.hostname {
            Some(h) => check_hostname(&h).map_err(|p| self.err("list.hostname", p))?,
            None => list_address
                .rsplit_once('@')
                .map(|(_, d)| d.to_owned())
                .unwrap_or_default(),
        };
        let request_address = match raw.list.request_address {
            Some(a) => check_address(&a).map_err(|p| self.err("list.request_address", p))?,
            None => {
                let (local, domain) = list_address.split_once('@').unwrap_or_default();
                format!("{local}-request@{domain}")
            }
        };
        if request_address == list_address {
            return Err(self.err("list.request_address", "must differ from list.address"));
        }
        let key_path = key_source(
            &self.resolve(&raw.list.secret_key),
            std::env::var_os("CREDENTIALS_DIRECTORY")
                .as_deref()
                .map(Path::new),
        );
        let list_key = ListKey::load(&key_path)
            .map_err(|e| self.err("list.secret_key", format!("{}: {e:#}", key_path.display())))?;
        let smtp = self.smtp(raw.inbound.smtp)?;
        let imap = raw.inbound.imap.map(|i| self.imap(i)).transpose()?;
        let outbound = self.outbound(raw.outbound)?;
        let mime = self.mime_limits(&raw.policy)?;
        let max_embargo = self.duration("policy.max_embargo", raw.policy.max_embargo, "14d")?;
        let reminder_before =
            self.duration("policy.reminder_before", raw.policy.reminder_before, "24h")?;
        let late_after = self.duration("policy.late_after", raw.policy.late_after, "60s")?;
        let signature_max_age = self.duration(
            "policy.signature_max_age",
            raw.policy.signature_max_age,
            "72h",
        )?;
        let public_recipients = raw
            .public
            .recipients
            .iter()
            .map(|a| check_address(a))
            .collect::<Result<_, _>>()
            .map_err(|p| self.err("public.recipients", p))?;
        let policy = PolicyConfig {
            max_embargo: chrono::Duration::from_std(max_embargo)
                .map_err(|_| self.err("policy.max_embargo", "too long"))?,
            public_recipients,
            reminder_before: chrono::Duration::from_std(reminder_before)
                .map_err(|_| self.err("policy.reminder_before", "too long"))?,
            late_after: chrono::Duration::from_std(late_after)
                .map_err(|_| self.err("policy.late_after", "too long"))?,
            signature_max_age: chrono::Duration::from_std(signature_max_age)
                .map_err(|_| self.err("policy.signature_max_age", "too long"))?,
            inline_pgp: raw.policy.inline_pgp.unwrap_or(false),
            mime,
            member_posts: match raw.policy.member_posts.as_deref().unwrap_or("list") {
                "list" => MemberPosts::List,
                "pst" => MemberPosts::Pst,
                "reject" => MemberPosts::Reject,
                other => {
                    return Err(self.err(
                        "policy.member_posts",
                        format!("`{other}`: use \"list\", \"pst\" or \"reject\""),
                    ));
                }
            },
        };
        let roster_file = raw.list.roster_file.as_deref().map(|p| self.resolve(p));
        let roster = self.roster(raw.members, roster_file.as_deref())?;
        Ok(Config {
            list_address,
            request_address,
            roster_file,
            hostname,
            list_key,
            state_dir: self.resolve(&raw.list.state_dir),
            smtp,
            imap,
            outbound,
            policy,
            roster,
        })
    }

    fn imap(&self, raw: RawImap) -> Result<ImapConfig, ConfigError> {
        let tls = match raw.tls.as_deref().unwrap_or("tls") {
            "tls" => ImapTls::Implicit,
            "starttls" => ImapTls::StartTls,
            "none" => ImapTls::None,
            other => {
                return Err(self.err(
                    "inbound.imap.tls",
                    format!("`{other}`: use \"tls\" (port 993), \"starttls\" (port 143) or \"none\" (loopback only)"),
                ));
            }
        };
        let host = raw.host.trim().to_owned();
        if host.is_empty() {
            return Err(self.err("inbound.imap.host", "names no host"));
        }
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if tls == ImapTls::None && !loopback {
            return Err(self.err(
                "inbound.imap.tls",
                format!("\"none\" would send the password to {host} in clear; it is allowed only for 127.0.0.1, ::1 or localhost"),
            ));
        }
        let read = |field: &str, p: &Path| {
            let p = self.resolve(p);
            std::fs::read(&p).map_err(|e| self.err(field, format!("{}: {e}", p.display())))
        };
        let password = read("inbound.imap.password_file", &raw.password_file)?;
        let password = String::from_utf8(password)
            .map_err(|_| self.err("inbound.imap.password_file", "is not UTF-8 text"))?;
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() || password.contains(['\r', '\n']) {
            return Err(self.err(
                "inbound.imap.password_file",
                "must hold the password on one line",
            ));
        }
        let ca_pem = raw
            .ca_file
            .map(|p| read("inbound.imap.ca_file", &p))
            .transpose()?;
        let poll_interval =
            self.duration("inbound.imap.poll_interval", raw.poll_interval, "60s")?;
        if poll_interval < Duration::from_secs(1) {
            return Err(self.err("inbound.imap.poll_interval", "must be at least 1s"));
        }
        Ok(ImapConfig {
            port: raw
                .port
                .unwrap_or(if tls == ImapTls::Implicit { 993 } else { 143 }),
            host,
            tls,
            ca_pem,
            user: raw.user,
            password: Secret::new(password.as_bytes().to_vec()),
            mailbox: raw.mailbox.unwrap_or_else(|| "INBOX".to_owned()),
            poll_interval,
            done_folder: raw.done_folder,
        })
    }

    fn smtp(&self, raw: RawSmtp) -> Result<SmtpConfig, ConfigError> {
        let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:2525");
        let listen = listen.parse().map_err(|_| {
            self.err(
                "inbound.smtp.listen",
                format!("`{listen}` is not an IP:port address such as 127.0.0.1:2525"),
            )
        })?;
        let max_message_size = parse_size(raw.max_message_size.as_deref().unwrap_or("10MiB"))
            .map_err(|p| self.err("inbound.smtp.max_message_size", p))?;
        let max_data_in_flight = match raw.max_data_in_flight.as_deref() {
            None => max_message_size.saturating_mul(4),
            Some(size) => {
                parse_size(size).map_err(|p| self.err("inbound.smtp.max_data_in_flight", p))?
            }
        };
        if max_data_in_flight < max_message_size {
            return Err(self.err(
                "inbound.smtp.max_data_in_flight",
                "must be at least inbound.smtp.max_message_size, or no message of the largest size could ever be taken",
            ));
        }
        let max_sessions = raw.max_sessions.unwrap_or(32);
        if max_sessions == 0 {
            return Err(self.err("inbound.smtp.max_sessions", "must be at least 1"));
        }
        let max_sessions_per_peer = raw
            .max_sessions_per_peer
            .unwrap_or((max_sessions / 8).max(1));
        if max_sessions_per_peer == 0 {
            return Err(self.err("inbound.smtp.max_sessions_per_peer", "must be at least 1"));
        }
        let trusted_peers = if raw.trusted_peers.is_empty() {
            vec![
                std::net::IpAddr::from([127, 0, 0, 1]),
                std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ]
        } else {
            raw.trusted_peers
                .iter()
                .map(|a| {
                    a.parse().map_err(|_| {
                        self.err(
                            "inbound.smtp.trusted_peers",
                            format!("`{a}` is not an IP address such as 127.0.0.1 or ::1"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let reserved_sessions = raw.reserved_sessions.unwrap_or(max_sessions / 4);
        if reserved_sessions >= max_sessions {
            return Err(self.err(
                "inbound.smtp.reserved_sessions",
                "must be less than inbound.smtp.max_sessions, or untrusted peers get no session at all",
            ));
        }
        Ok(SmtpConfig {
            listen,
            max_message_size,
            max_data_in_flight,
            max_sessions,
            max_sessions_per_peer,
            trusted_peers,
            reserved_sessions,
            command_timeout: self.duration(
                "inbound.smtp.command_timeout",
                raw.command_timeout,
                "5m",
            )?,
            data_timeout: self.duration("inbound.smtp.data_timeout", raw.data_timeout, "3m")?,
            session_timeout: self.duration(
                "inbound.smtp.session_timeout",
                raw.session_timeout,
                "30m",
            )?,
        })
    }

    fn outbound(&self, raw: RawOutbound) -> Result<OutboundConfig, ConfigError> {
        let (host, port) =
            parse_smarthost(&raw.smarthost).map_err(|p| self.err("outbound.smarthost", p))?;
        Ok(OutboundConfig {
            host,
            port,
            timeout: self.duration("outbound.timeout", raw.timeout, "60s")?,
            retry_initial: self.duration("outbound.retry_initial", raw.retry_initial, "5m")?,
            retry_max: self.duration("outbound.retry_max", raw.retry_max, "1h")?,
            retry_lifetime: self.duration("outbound.retry_lifetime", raw.retry_lifetime, "5d")?,
            concurrency: match raw.concurrency {
                None => 8,
                Some(n @ 1..=1024) => n,
                Some(_) => {
                    return Err(self.err("outbound.concurrency", "must be between 1 and 1024"));
                }
            },
        })
    }

    fn mime_limits(&self, raw: &RawPolicy) -> Result<MimeLimits, ConfigError> {
        let d = MimeLimits::default();
        let count = |field: &str, value: Option<usize>, default: usize| match value {
            Some(0) => Err(self.err(field, "must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let max_header_size = match raw.mime_max_header_size.as_deref() {
            Some(text) => {
                parse_size(text).map_err(|p| self.err("policy.mime_max_header_size", p))?
            }
            None => d.max_header_size,
        };
        if max_header_size < 1000 {
            return Err(self.err(
                "policy.mime_max_header_size",
                "must be at least 1000 octets (one SMTP line)",
            ));
        }
        Ok(MimeLimits {
            max_depth: count("policy.mime_max_depth", raw.mime_max_depth, d.max_depth)?,
            max_parts: count("policy.mime_max_parts", raw.mime_max_parts, d.max_parts)?,
            max_headers: count(
                "policy.mime_max_headers",
                raw.mime_max_headers,
                d.max_headers,
            )?,
            max_header_size,
        })
    }

    fn duration(
        &self,
        field: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        parse_duration(value.as_deref().unwrap_or(default)).map_err(|p| self.err(field, p))
    }

    fn roster(&self, raw: Vec<RawMember>, file: Option<&Path>) -> Result<Roster, ConfigError> {
        let mut members: Vec<Member> = Vec::with_capacity(raw.len());
        for (i, m) in raw.into_iter().enumerate() {
            use crate::address::{EntryError, check_entry};
            let field = format!("member[{i}]");
            let (email, organization) = check_entry(&m.email, &m.organization, |e| {
                members.iter().any(|o| o.email == e)
            })
            .map_err(|e| match e {
                EntryError::Email(p) => self.err(&format!("{field}.email"), p),
                EntryError::Organization(p) => self.err(&format!("{field}.organization"), p),
                EntryError::Twice(email) => self.err(
                    &format!("{field}.email"),
                    format!("{email} is listed twice; remove one entry"),
                ),
            })?;
            let organization = organization.to_owned();
            members.push(Member::load(
                email,
                organization,
                self.resolve(&m.key),
                m.pst,
            ));
        }
        if let Some(file) = file {
            for m in crate::roster::file::load(file).map_err(|p| self.err("list.roster_file", p))? {
                if members.iter().any(|o| o.email == m.email) {
                    return Err(self.err(
                        "list.roster_file",
                        format!(
                            "{} is also a [[member]] of the config; remove one entry",
                            m.email
                        ),
                    ));
                }
                members.push(m);
            }
        }
        if members.is_empty() {
            return Err(self.err(
                "member",
                "no [[member]] entries: the list has nobody to send to",
            ));
        }
        if !members.iter().any(|m| m.pst && m.cert().is_ok()) {
            return Err(self.err(
                "member",
                "no member with `pst = true` has a readable certificate: nobody could post",
            ));
        }
        Ok(Roster::new(members))
    }
}

fn check_hostname(h: &str) -> Result<String, String> {
    if !h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        Ok(h.to_owned())
    } else {
        Err(format!(
            "`{h}` is not a host name such as lists.example.org"
        ))
    }
}

/// Parses `smtp://host:port` (port defaults to 25).
fn parse_smarthost(url: &str) -> Result<(String, u16), String> {
    let Some(rest) = url.strip_prefix("smtp://") else {
        return Err(format!(
            "`{url}`: only plain `smtp://host:port` smarthosts (a local MTA) are supported so far"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse()
                .map_err(|_| format!("`{p}` is not a port number"))?,
        ),
        _ => (rest, 25),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    Ok((host.to_owned(), port))
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `14d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 30s, 5m, 2h or 14d"))?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("`{s}`: unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_millis(ms))
}

/// The systemd credential the list's secret key may come in as
/// (`LoadCredential=list-key:…`).
pub const KEY_CREDENTIAL: &str = "list-key";

/// Where the list's secret key is read from: the systemd credential when
/// the service manager passed one (`$CREDENTIALS_DIRECTORY/list-key`),
/// else `list.secret_key` (as for `submit`, run by the MTA outside the unit).
pub fn key_source(secret_key: &Path, credentials_dir: Option<&Path>) -> PathBuf {
    credentials_dir
        .map(|dir| dir.join(KEY_CREDENTIAL))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| secret_key.to_owned())
}

/// Writes a duration the way the configuration spells it: `5d`, `90m`, `30s`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses `1000`, `512KiB`, `25MiB`, `1GiB` (also KB/MB as powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 25MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("`{s}`: unit must be B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_the_systemd_credential_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = Path::new("/etc/embargo-relay/keys/list.key");
        assert_eq!(key_source(file, None), file);
        assert_eq!(
            key_source(file, Some(dir.path())),
            file,
            "no such credential"
        );
        std::fs::write(dir.path().join(KEY_CREDENTIAL), "key").unwrap();
        assert_eq!(
            key_source(file, Some(dir.path())),
            dir.path().join("list-key")
        );
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            parse_duration("72h").unwrap(),
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("5 weeks").is_err());
        for spelled in ["5d", "90m", "1h", "30s", "250ms"] {
            assert_eq!(human_duration(parse_duration(spelled).unwrap()), spelled);
        }
        assert_eq!(parse_size("25MiB").unwrap(), 25 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn smarthost_forms() {
        assert_eq!(
            parse_smarthost("smtp://127.0.0.1:2526").unwrap(),
            ("127.0.0.1".into(), 2526)
        );
        assert_eq!(
            parse_smarthost("smtp://mx.example.org").unwrap(),
            ("mx.example.org".into(), 25)
        );
        assert_eq!(
            parse_smarthost("smtp://[::1]:25").unwrap(),
            ("::1".into(), 25)
        );
        assert!(parse_smarthost("smtps://mx.example.org").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(check_address("Sec@Example.org").unwrap(), "sec@example.org");
        for bad in ["", "nobody", "a@b@c", "x\r\nBcc: y@z", "<a@b>", "a b@c"] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_example_config_uses_only_known_fields() {
        let raw: RawConfig = toml::from_str(include_str!("../config/embargo-relay.example.toml"))
            .expect("config/embargo-relay.example.toml must parse");
        assert_eq!(raw.members.len(), 2);
        assert!(raw.members[0].pst);
        parse_smarthost(&raw.outbound.smarthost).unwrap();
    }

    #[test]
    fn imap_settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let path = dir.path().join("c.toml");
        let v = Validator {
            path: &path,
            base: dir.path(),
        };
        let raw = |host: &str, tls: Option<&str>, pw: &str| RawImap {
            host: host.into(),
            port: None,
            tls: tls.map(Into::into),
            ca_file: None,
            user: "relay".into(),
            password_file: pw.into(),
            mailbox: None,
            poll_interval: None,
            done_folder: None,
        };
        let ok = v.imap(raw("imap.example.org", None, "pw")).unwrap();
        assert_eq!((ok.port, ok.tls), (993, ImapTls::Implicit));
        assert_eq!(ok.password.expose(), b"s3cret");
        assert!(!format!("{ok:?}").contains("s3cret"), "password redacted");
        assert_eq!(ok.mailbox, "INBOX");
        let local = v.imap(raw("127.0.0.1", Some("none"), "pw")).unwrap();
        assert_eq!(local.port, 143);
        let err = v
            .imap(raw("imap.example.org", Some("none"), "pw"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("inbound.imap.tls") && err.contains("in clear"),
            "{err}"
        );
        let err = v
            .imap(raw("imap.example.org", None, "missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("inbound.imap.password_file"), "{err}");
    }

    #[test]
    fn mime_limits_default_and_are_checked() {
        let path = Path::new("/etc/er.toml");
        let v = Validator {
            path,
            base: Path::new("/etc"),
        };
        assert_eq!(
            v.mime_limits(&RawPolicy::default()).unwrap(),
            MimeLimits::default()
        );
        let set = v
            .mime_limits(&RawPolicy {
                mime_max_parts: Some(10),
                mime_max_header_size: Some("4KiB".into()),
                ..RawPolicy::default()
            })
            .unwrap();
        assert_eq!((set.max_parts, set.max_header_size), (10, 4096));
        let zero = RawPolicy {
            mime_max_depth: Some(0),
            ..RawPolicy::default()
        };
        let err = v.mime_limits(&zero).unwrap_err().to_string();
        assert!(err.contains("policy.mime_max_depth"), "{err}");
        let tiny = RawPolicy {
            mime_max_header_size: Some("100".into()),
            ..RawPolicy::default()
        };
        let err = v.mime_limits(&tiny).unwrap_err().to_string();
        assert!(err.contains("policy.mime_max_header_size"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse(
            "[list]\naddress='l@x.org'\nsecret_key='k'\nstate_dir='s'\nsurprise=1\n[outbound]\nsmarthost='smtp://h'\n",
            Path::new("/etc/er.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("surprise"), "{err}");
        assert!(err.contains("/etc/er.toml"), "{err}");
    }
}
