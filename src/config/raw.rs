//! The configuration file as TOML gives it, before validation: every
//! field optional, unknown fields refused.

use std::path::PathBuf;

use serde::Deserialize;

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
    /// Bounds on a mail's MIME structure (see [`MimeLimits`](super::MimeLimits)).
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
