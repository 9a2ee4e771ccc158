//! `[[release_hook]]` checked: a name, an https:// address, a secret that
//! is there (from a file or a systemd credential), when it is called.

use super::validate::Validator;
use super::*;

/// The systemd credential a hook's secret may come in as:
/// `release-hook-<name>` (`LoadCredential=release-hook-github:/etc/…`).
const HOOK_CREDENTIAL_PREFIX: &str = "release-hook-";

/// GitHub's REST API, for a `github` hook without a `url`.
const GITHUB_API: &str = "https://api.github.com";

/// The shortest webhook key accepted, in octets.
const MIN_WEBHOOK_KEY: usize = 16;

impl Validator<'_> {
    /// The list's release hooks; `table` is `release_hook` or
    /// `list.release_hook` (for errors).
    pub(super) fn hooks(
        &self,
        raw: Vec<RawReleaseHook>,
        table: &str,
        default_timeout: Duration,
    ) -> Result<Vec<ReleaseHook>, ConfigError> {
        let mut hooks: Vec<ReleaseHook> = Vec::with_capacity(raw.len());
        for (i, h) in raw.into_iter().enumerate() {
            let field = |f: &str| format!("{table}[{i}].{f}");
            let name = h.name;
            if name.is_empty()
                || name.len() > 40
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            {
                return Err(self.err(
                    &field("name"),
                    format!("`{name}`: 1 to 40 of a-z, 0-9, `-` and `_` (it names the hook's deliveries and credential)"),
                ));
            }
            if hooks.iter().any(|o| o.name == name) {
                return Err(self.err(&field("name"), format!("`{name}` names two hooks")));
            }
            let kind = match h.kind.as_deref().unwrap_or("webhook") {
                "webhook" => HookKind::Webhook,
                "github" => HookKind::Github,
                other => {
                    return Err(self.err(
                        &field("kind"),
                        format!("`{other}`: use \"webhook\" or \"github\""),
                    ));
                }
            };
            let url = match (kind, h.url.as_deref()) {
                (HookKind::Webhook, None) => {
                    return Err(self.err(&field("url"), "missing: the webhook's https:// address"));
                }
                (HookKind::Github, None) => GITHUB_API,
                (_, Some(url)) => url,
            };
            let url = crate::discovery::https::Url::parse(url).map_err(|p| {
                self.err(
                    &field("url"),
                    format!("{p} (hooks are called over HTTPS only)"),
                )
            })?;
            if kind == HookKind::Github && url.path != "/" {
                return Err(self.err(
                    &field("url"),
                    "for a github hook, the API's address without a path (default https://api.github.com)",
                ));
            }
            let (mut on_lift, mut on_cancel) = (false, false);
            for when in h.on.unwrap_or_else(|| vec!["lift".to_owned()]) {
                match when.as_str() {
                    "lift" => on_lift = true,
                    "cancel" => on_cancel = true,
                    other => {
                        return Err(self.err(
                            &field("on"),
                            format!(
                                "`{other}`: use [\"lift\"], [\"cancel\"] or [\"lift\", \"cancel\"]"
                            ),
                        ));
                    }
                }
            }
            if !on_lift && !on_cancel {
                return Err(self.err(&field("on"), "empty: the hook would never be called"));
            }
            if kind == HookKind::Github && on_cancel {
                return Err(self.err(
                    &field("on"),
                    "a github hook publishes at the lift only (a cancelled embargo's draft advisory is left as it is)",
                ));
            }
            let credentials = std::env::var_os("CREDENTIALS_DIRECTORY");
            let secret = self.hook_secret(
                &name,
                h.secret_file.as_deref(),
                credentials.as_deref().map(Path::new),
                kind,
                &field("secret_file"),
            )?;
            let extra_ca = h
                .extra_ca
                .map(|p| self.extra_ca(&field("extra_ca"), &p))
                .transpose()?;
            let timeout = match h.timeout {
                None => default_timeout.clamp(Duration::from_secs(1), Duration::from_secs(300)),
                Some(t) => self.duration(&field("timeout"), Some(t), "30s")?,
            };
            if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&timeout) {
                return Err(self.err(&field("timeout"), "between 1s and 300s"));
            }
            hooks.push(ReleaseHook {
                name,
                kind,
                url,
                secret,
                on_lift,
                on_cancel,
                extra_ca,
                timeout,
            });
        }
        Ok(hooks)
    }

    /// The hook's secret: the credential `release-hook-<name>` when the
    /// service manager passed it, else `secret_file`; trailing white space
    /// (a file's last newline) dropped.
    pub(super) fn hook_secret(
        &self,
        name: &str,
        file: Option<&Path>,
        credentials: Option<&Path>,
        kind: HookKind,
        field: &str,
    ) -> Result<crate::secret::Secret, ConfigError> {
        let credential = format!("{HOOK_CREDENTIAL_PREFIX}{name}");
        let path = match (file, credentials) {
            (Some(f), dir) => credential_or(&credential, &self.resolve(f), dir),
            (None, Some(dir)) if dir.join(&credential).is_file() => dir.join(&credential),
            (None, _) => {
                return Err(self.err(
                    field,
                    format!("missing: the file with the hook's {} (or the systemd credential `{credential}`)", what(kind)),
                ));
            }
        };
        let mut bytes = std::fs::read(&path)
            .map_err(|e| self.err(field, format!("{}: {e}", path.display())))?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        let problem = match kind {
            HookKind::Webhook if bytes.len() < MIN_WEBHOOK_KEY => Some(format!(
                "shorter than {MIN_WEBHOOK_KEY} octets: make one with `openssl rand -hex 32`"
            )),
            HookKind::Github if bytes.is_empty() => Some("empty".to_owned()),
            // It goes in an HTTP header.
            HookKind::Github if !bytes.iter().all(|b| b.is_ascii_graphic()) => {
                Some("a token is one word of printable ASCII".to_owned())
            }
            _ => None,
        };
        match problem {
            // The secret itself is never shown.
            Some(p) => Err(self.err(
                field,
                format!("{}: the {} is {p}", path.display(), what(kind)),
            )),
            None => Ok(crate::secret::Secret::new(bytes)),
        }
    }
}

fn what(kind: HookKind) -> &'static str {
    match kind {
        HookKind::Webhook => "HMAC key",
        HookKind::Github => "GitHub token",
    }
}

impl Config {
    /// The hook deliveries an announcement makes, due at its lift, by the
    /// hook's name: every webhook called at the lift, and every `github`
    /// hook if the announcement names GitHub advisories (one delivery
    /// publishes them all: how many stays in the sealed record).
    pub fn lift_hook_rows(&self, names_github_advisories: bool) -> Vec<String> {
        self.hooks
            .iter()
            .filter(|h| h.on_lift && (h.kind == HookKind::Webhook || names_github_advisories))
            .map(|h| h.name.clone())
            .collect()
    }

    /// The hooks called when an embargo is cancelled, by name.
    pub fn cancel_hook_rows(&self) -> Vec<String> {
        self.hooks
            .iter()
            .filter(|h| h.on_cancel)
            .map(|h| h.name.clone())
            .collect()
    }
}
