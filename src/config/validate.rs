//! [`RawConfig`] checked field by field into a [`Config`]: each problem
//! names the file and the field and says how to fix it.

use super::units::{check_hostname, parse_smarthost};
use super::*;

pub(super) struct Validator<'a> {
    pub(super) path: &'a Path,
    pub(super) base: &'a Path,
    /// In the `[[list]]` form, the list being checked (its number from 1
    /// and its address as written), named in every error.
    pub(super) which: Option<(usize, String)>,
}

impl Validator<'_> {
    pub(super) fn err(&self, field: &str, problem: impl Into<String>) -> ConfigError {
        let field = match &self.which {
            None => field.to_owned(),
            Some((n, address)) => format!("{field} ([[list]] #{n}, {address})"),
        };
        ConfigError::Field {
            path: self.path.to_owned(),
            field,
            problem: problem.into(),
        }
    }

    pub(super) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// One list's configuration, from its table merged with the shared
    /// sections (`lists::merged`).
    pub(super) fn config(&self, raw: OneList) -> Result<Config, ConfigError> {
        let missing = |field: &str, what: &str| self.err(field, format!("missing: {what}"));
        let address = raw
            .list
            .address
            .as_deref()
            .ok_or_else(|| missing("list.address", "the list's own address"))?;
        let secret_key = raw.list.secret_key.as_deref().ok_or_else(|| {
            missing(
                "list.secret_key",
                "the file with the list's secret key (or in [defaults])",
            )
        })?;
        let state_dir = raw.list.state_dir.as_deref().ok_or_else(|| {
            missing(
                "list.state_dir",
                "the directory of the spool (in [defaults] when there are several lists)",
            )
        })?;
        let list_address = check_address(address).map_err(|p| self.err("list.address", p))?;
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
            &self.resolve(secret_key),
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
        let ack_reminder_before = self.duration(
            "policy.ack_reminder_before",
            raw.policy.ack_reminder_before,
            "24h",
        )?;
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
        let min_notice = self.duration("policy.min_notice", raw.policy.min_notice, "7d")?;
        let release = super::ReleaseGuard {
            min_notice: chrono::Duration::from_std(min_notice)
                .map_err(|_| self.err("policy.min_notice", "too long"))?,
            hours: raw
                .policy
                .release_hours
                .as_deref()
                .map(|h| {
                    release_hours(h).ok_or_else(|| {
                        self.err(
                            "policy.release_hours",
                            format!("`{h}`: write the hours in UTC as \"HH:MM-HH:MM\", the start before the end (e.g. \"14:00-18:00\"; a window across midnight is not supported)"),
                        )
                    })
                })
                .transpose()?,
        };
        let policy = PolicyConfig {
            release,
            max_embargo: chrono::Duration::from_std(max_embargo)
                .map_err(|_| self.err("policy.max_embargo", "too long"))?,
            public_recipients,
            reminder_before: chrono::Duration::from_std(reminder_before)
                .map_err(|_| self.err("policy.reminder_before", "too long"))?,
            late_after: chrono::Duration::from_std(late_after)
                .map_err(|_| self.err("policy.late_after", "too long"))?,
            ack_reminder_before: chrono::Duration::from_std(ack_reminder_before)
                .map_err(|_| self.err("policy.ack_reminder_before", "too long"))?,
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
        let state_dir = self.resolve(state_dir);
        let smime = self.smime(
            raw.list.smime_cert.as_deref(),
            raw.list.smime_key.as_deref(),
        )?;
        let roster = self
            .roster(
                raw.members,
                raw.members_field,
                roster_file.as_deref(),
                smime.is_some(),
            )?
            .with_updates(&state_dir.join(crate::roster::UPDATES_DIR));
        let discovery = self.discovery(raw.discovery)?;
        let http = raw.http.map(|h| self.http(h)).transpose()?;
        let hooks = self.hooks(raw.hooks, raw.hooks_field, outbound.timeout)?;
        let neighbours = Neighbours {
            first: list_address.clone(),
            lists: vec![list_address.clone()],
            ..Neighbours::default()
        };
        Ok(Config {
            list_address,
            request_address,
            roster_file,
            hostname,
            list_key,
            state_dir,
            smtp,
            imap,
            outbound,
            policy,
            roster,
            discovery,
            smime,
            http,
            hooks,
            neighbours,
        })
    }

    pub(super) fn imap(&self, raw: RawImap) -> Result<ImapConfig, ConfigError> {
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

    pub(super) fn mime_limits(&self, raw: &RawPolicy) -> Result<MimeLimits, ConfigError> {
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

    /// `[http]`: an address or a Unix socket path; the token file is read
    /// when the daemon starts (`HttpConfig::token`).
    pub(super) fn http(&self, raw: RawHttp) -> Result<HttpConfig, ConfigError> {
        let listen = if raw.listen.starts_with('/') {
            HttpListen::Unix(PathBuf::from(&raw.listen))
        } else {
            HttpListen::Tcp(raw.listen.parse().map_err(|_| {
                self.err(
                    "http.listen",
                    format!("`{}`: give address:port (e.g. \"127.0.0.1:8025\") or an absolute Unix socket path", raw.listen),
                )
            })?)
        };
        Ok(HttpConfig {
            listen,
            token_file: raw.token_file.map(|p| self.resolve(&p)),
            metrics_open: raw.metrics_open.unwrap_or(false),
        })
    }

    /// The list's S/MIME identity: both files or neither; the key may be
    /// a systemd credential, as the OpenPGP key.
    fn smime(
        &self,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<crate::crypto::smime::SmimeIdentity>, ConfigError> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err(self.err("list.smime_key", "missing: the key of list.smime_cert"))
            }
            (None, Some(_)) => Err(self.err(
                "list.smime_cert",
                "missing: the certificate of list.smime_key",
            )),
            (Some(cert), Some(key)) => {
                let key = credential_or(
                    SMIME_KEY_CREDENTIAL,
                    &self.resolve(key),
                    std::env::var_os("CREDENTIALS_DIRECTORY")
                        .as_deref()
                        .map(Path::new),
                );
                crate::crypto::smime::SmimeIdentity::load(&self.resolve(cert), &key)
                    .map(Some)
                    .map_err(|p| self.err("list.smime_cert", p))
            }
        }
    }

    /// `[discovery]`: the keyserver an https:// address, the extra CA a
    /// readable PEM file, each `connect_to` an `address:port`.
    pub(super) fn discovery(
        &self,
        raw: Option<RawDiscovery>,
    ) -> Result<Option<crate::discovery::DiscoveryConfig>, ConfigError> {
        use crate::discovery::{DiscoveryConfig, Keyserver, Protocol, https::Url};
        let Some(raw) = raw else { return Ok(None) };
        let protocol = match raw.keyserver_protocol.as_deref().unwrap_or("vks") {
            "vks" => Protocol::Vks,
            "hkp" => Protocol::Hkp,
            other => {
                return Err(self.err(
                    "discovery.keyserver_protocol",
                    format!("`{other}`: use \"vks\" (keys.openpgp.org) or \"hkp\""),
                ));
            }
        };
        let keyserver = raw
            .keyserver
            .map(|k| {
                Url::parse(&k)
                    .map(|url| Keyserver { url, protocol })
                    .map_err(|p| {
                        self.err(
                            "discovery.keyserver",
                            format!("{p} (keys are fetched over HTTPS only; for HKP give the server's https:// address)"),
                        )
                    })
            })
            .transpose()?;
        let extra_ca = raw
            .extra_ca
            .map(|p| self.extra_ca("discovery.extra_ca", &p))
            .transpose()?;
        let mut connect_to = Vec::new();
        for (host, addr) in raw.connect_to {
            let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
                self.err(
                    &format!("discovery.connect_to.{host}"),
                    format!("`{addr}` is not an address:port (e.g. \"127.0.0.1:8443\")"),
                )
            })?;
            connect_to.push((host.to_ascii_lowercase(), addr));
        }
        let timeout = self.duration("discovery.timeout", raw.timeout, "20s")?;
        if !(Duration::from_secs(1)..=Duration::from_secs(120)).contains(&timeout) {
            return Err(self.err(
                "discovery.timeout",
                "between 1s and 120s (each HTTPS exchange; a lookup makes up to four)",
            ));
        }
        let wkd = raw.wkd.unwrap_or(true);
        if !wkd && keyserver.is_none() {
            return Err(self.err(
                "discovery",
                "wkd = false and no keyserver: nothing to look keys up in (remove [discovery] to turn it off)",
            ));
        }
        Ok(Some(DiscoveryConfig {
            wkd,
            keyserver,
            extra_ca,
            connect_to,
            timeout,
            refresh: raw.refresh.unwrap_or(true),
        }))
    }

    /// A PEM file of CA certificates trusted besides the system's.
    pub(super) fn extra_ca(&self, field: &str, p: &Path) -> Result<Vec<u8>, ConfigError> {
        let path = self.resolve(p);
        let pem = std::fs::read(&path)
            .map_err(|e| self.err(field, format!("{}: {e}", path.display())))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(self.err(
                field,
                format!("{}: no PEM certificate in it", path.display()),
            ));
        }
        Ok(pem)
    }

    pub(super) fn duration(
        &self,
        field: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        parse_duration(value.as_deref().unwrap_or(default)).map_err(|p| self.err(field, p))
    }

    fn roster(
        &self,
        raw: Vec<RawMember>,
        table: &str,
        file: Option<&Path>,
        smime: bool,
    ) -> Result<Roster, ConfigError> {
        let mut members: Vec<Member> = Vec::with_capacity(raw.len());
        for (i, m) in raw.into_iter().enumerate() {
            use crate::address::{EntryError, check_entry};
            let field = format!("{table}[{i}]");
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
            let member = match (&m.key, &m.smime_cert) {
                (Some(key), None) => Member::load(email, organization, self.resolve(key), m.pst),
                (None, Some(_)) if m.pst => {
                    return Err(self.err(
                        &format!("{field}.key"),
                        "a PST member needs `key` too: receipts and notices to the PST are OpenPGP (`smime_cert` beside it pins the certificate its S/MIME-signed mail is verified against)",
                    ));
                }
                (Some(key), Some(cert)) if m.pst => {
                    Member::load(email, organization, self.resolve(key), m.pst)
                        .with_smime_signing(&self.resolve(cert))
                }
                (None, Some(_)) if !smime => {
                    return Err(self.err(
                        &format!("{field}.smime_cert"),
                        "an S/MIME member needs the list's own S/MIME certificate: set list.smime_cert and list.smime_key",
                    ));
                }
                (None, Some(cert)) => Member::load_smime(email, organization, self.resolve(cert)),
                (Some(_), Some(_)) => {
                    return Err(self.err(
                        &field,
                        "give `key` (OpenPGP) or `smime_cert` (S/MIME), not both (only a PST member has both: it may sign with either)",
                    ));
                }
                (None, None) => {
                    return Err(self.err(
                        &format!("{field}.key"),
                        "missing: the member's OpenPGP certificate (`key`) or X.509 certificate (`smime_cert`)",
                    ));
                }
            };
            members.push(member);
        }
        if let Some(file) = file {
            for m in crate::roster::file::load(file).map_err(|p| self.err("list.roster_file", p))? {
                if members.iter().any(|o| o.email == m.email) {
                    return Err(self.err(
                        "list.roster_file",
                        format!(
                            "{} is also a member in the configuration file; remove one entry",
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
        // A key pinned for the PST must not be an S/MIME member's too: its
        // mail would be taken as the PST's.
        let key_of = |c: &Option<Result<crate::crypto::smime::SmimeCert, String>>| {
            c.as_ref()
                .and_then(|c| c.as_ref().ok())
                .and_then(|c| c.key_fingerprint())
        };
        for pst in members.iter().filter(|m| m.pst) {
            if let Some(key) = key_of(&pst.smime_signing)
                && let Some(other) = members
                    .iter()
                    .find(|m| !m.pst && key_of(&m.smime).as_deref() == Some(key.as_str()))
            {
                return Err(self.err(
                    "member",
                    format!(
                        "{} (PST) and {} have S/MIME certificates with the same key: give each its own",
                        pst.email, other.email
                    ),
                ));
            }
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

/// `"HH:MM-HH:MM"` (UTC); the first before the second.
fn release_hours(text: &str) -> Option<(chrono::NaiveTime, chrono::NaiveTime)> {
    let (from, to) = text.split_once('-')?;
    let time = |t: &str| chrono::NaiveTime::parse_from_str(t.trim(), "%H:%M").ok();
    let (from, to) = (time(from)?, time(to)?);
    (from < to).then_some((from, to))
}
