//! The configuration file as TOML gives it, before validation: every
//! field optional, unknown fields refused.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[list]` (one list) or `[[list]]` (one table per list).
    pub list: RawLists,
    /// List fields a `[[list]]` table may leave to a shared value.
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub inbound: RawInbound,
    pub outbound: RawOutbound,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub public: RawPublic,
    #[serde(default, rename = "member")]
    pub members: Vec<RawMember>,
    /// `[discovery]`: looking members' keys up (daemon-wide).
    pub discovery: Option<RawDiscovery>,
    /// `[http]`: the status API and metrics (daemon-wide; off without it).
    pub http: Option<RawHttp>,
    /// `[[release_hook]]`: endpoints called at every lift (or cancel).
    #[serde(default, rename = "release_hook")]
    pub hooks: Vec<RawReleaseHook>,
}

/// `[[release_hook]]`: an HTTPS endpoint called at the lift of every
/// embargo of the list (and at a cancel, if asked).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReleaseHook {
    /// Names its deliveries, its credential (`release-hook-<name>`), its
    /// lines in receipts and `status`.
    pub name: String,
    /// `webhook` (default) or `github`.
    pub kind: Option<String>,
    /// The webhook's address; for `github`, the API's (default
    /// `https://api.github.com`).
    pub url: Option<String>,
    /// The webhook's HMAC key, or the GitHub token (or the systemd
    /// credential `release-hook-<name>`).
    pub secret_file: Option<PathBuf>,
    /// `["lift"]` (default), `["lift", "cancel"]` or `["cancel"]`.
    pub on: Option<Vec<String>>,
    /// A PEM file of CA certificates trusted besides the system's.
    pub extra_ca: Option<PathBuf>,
    /// How long one call may take (default: `outbound.timeout`).
    pub timeout: Option<String>,
}

/// `[http]`: where the status API and `/metrics` listen, and who may read them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `127.0.0.1:8025`, or the path of a Unix socket (`/run/embargo-relay/http.sock`).
    pub listen: String,
    /// A file holding the bearer token (or the systemd credential `http-token`).
    pub token_file: Option<PathBuf>,
    /// `/metrics` without the token (default: it needs the token too).
    pub metrics_open: Option<bool>,
}

/// `[discovery]`: Web Key Directory and a keyserver, over HTTPS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub wkd: Option<bool>,
    /// `https://keys.openpgp.org` (VKS) or an HKP keyserver over HTTPS.
    pub keyserver: Option<String>,
    /// `vks` (default) or `hkp`.
    pub keyserver_protocol: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's.
    pub extra_ca: Option<PathBuf>,
    /// Host name → `address:port` to connect to instead.
    #[serde(default)]
    pub connect_to: std::collections::BTreeMap<String, String>,
    pub timeout: Option<String>,
    pub refresh: Option<bool>,
}

/// `[defaults]`: what a list's table takes when it does not set it. Only
/// these: what a list must have of its own (address, request address,
/// roster file) cannot be shared, and the shared sections ([policy],
/// [public], [[member]], [inbound.imap]) are defaults already.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// The one spool of the daemon.
    pub state_dir: Option<PathBuf>,
    /// A list key for a list without its own (no two lists may share one).
    pub secret_key: Option<PathBuf>,
    pub hostname: Option<String>,
}

/// The two forms of the `list` key.
#[derive(Debug, Clone)]
pub enum RawLists {
    /// `[list]`: the file serves one list (the form before several lists).
    One(Box<RawList>),
    /// `[[list]]`: one table per list.
    Many(Vec<RawList>),
}

impl<'de> Deserialize<'de> for RawLists {
    /// A table is the one-list form, an array of tables the other; each is
    /// read by `RawList`'s own rules, so an error keeps its place in the file.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = RawLists;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [list] table or [[list]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawLists, A::Error> {
                RawList::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|l| RawLists::One(Box::new(l)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawLists, A::Error> {
                Vec::<RawList>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RawLists::Many)
            }
        }
        d.deserialize_any(Either)
    }
}

/// One list's table (or `[defaults]`): every field optional here, the
/// validator says what is missing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawList {
    pub address: Option<String>,
    pub secret_key: Option<PathBuf>,
    /// The one spool of the daemon: the same for every list.
    pub state_dir: Option<PathBuf>,
    /// Name used in the SMTP greeting and in Message-IDs; defaults to the
    /// domain of the list address.
    pub hostname: Option<String>,
    /// Where join requests go; defaults to `<list>-request@<domain>`.
    pub request_address: Option<String>,
    /// Members added by signed `Roster-Add:` commands live here.
    pub roster_file: Option<PathBuf>,
    /// This list's policy, field by field over the file's `[policy]`.
    pub policy: Option<RawPolicy>,
    /// This list's public recipients, instead of the file's `[public]`.
    pub public: Option<RawPublic>,
    /// This list's members, instead of the file's `[[member]]`.
    #[serde(default, rename = "member")]
    pub members: Vec<RawMember>,
    /// This list's mailbox, instead of the file's `[inbound.imap]`.
    pub imap: Option<RawImap>,
    /// The list's S/MIME certificate (PEM, intermediates after it), for
    /// members with `smime_cert`.
    pub smime_cert: Option<PathBuf>,
    /// Its private key (PEM, unencrypted; or a systemd credential).
    pub smime_key: Option<PathBuf>,
    /// This list's release hooks, instead of the file's `[[release_hook]]`.
    #[serde(default, rename = "release_hook")]
    pub hooks: Vec<RawReleaseHook>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInbound {
    #[serde(default)]
    pub smtp: RawSmtp,
    pub imap: Option<RawImap>,
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Default, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    pub smarthost: String,
    pub timeout: Option<String>,
    pub retry_initial: Option<String>,
    pub retry_max: Option<String>,
    pub retry_lifetime: Option<String>,
    pub concurrency: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// The longest embargo accepted without an `Embargo-Override:` field.
    pub max_embargo: Option<String>,
    /// How long before an embargo lifts the PST is reminded.
    pub reminder_before: Option<String>,
    /// How long before an embargo lifts members who have not acknowledged
    /// it are reminded to.
    pub ack_reminder_before: Option<String>,
    /// A release later than this after its time is reported as late.
    pub late_after: Option<String>,
    /// Signatures older than this are refused as possible replays.
    pub signature_max_age: Option<String>,
    /// Less notice than this before a lift is warned of in the receipt.
    pub min_notice: Option<String>,
    /// The list's release hours in UTC, `"HH:MM-HH:MM"`; a lift outside
    /// them is warned of in the receipt.
    pub release_hours: Option<String>,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublic {
    /// Where a held public advisory goes when the announcement names no `Public-To`.
    #[serde(default)]
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    pub email: String,
    pub organization: String,
    /// The member's OpenPGP certificate; or `smime_cert`.
    pub key: Option<PathBuf>,
    /// The member's X.509 certificate (PEM or DER): copies are S/MIME.
    pub smime_cert: Option<PathBuf>,
    #[serde(default)]
    pub pst: bool,
}

/// One list's table with the shared sections it falls back on, as the
/// validator takes it.
pub struct OneList {
    pub list: RawList,
    pub inbound: RawInbound,
    pub outbound: RawOutbound,
    pub policy: RawPolicy,
    pub public: RawPublic,
    pub members: Vec<RawMember>,
    pub discovery: Option<RawDiscovery>,
    pub http: Option<RawHttp>,
    /// Where the members come from, for errors: `member` (the file's
    /// `[[member]]`) or `list.member` (the list's own).
    pub members_field: &'static str,
    pub hooks: Vec<RawReleaseHook>,
    /// `release_hook` or `list.release_hook`, for errors.
    pub hooks_field: &'static str,
}
