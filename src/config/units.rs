//! The value syntaxes the file uses: durations, sizes, host names, the
//! smarthost URL, and where the list key is read from.

use super::*;

pub(super) fn check_hostname(h: &str) -> Result<String, String> {
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
pub(super) fn parse_smarthost(url: &str) -> Result<(String, u16), String> {
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
    credential_or(KEY_CREDENTIAL, secret_key, credentials_dir)
}

/// The systemd credential the `[http]` bearer token may come in as.
pub const HTTP_TOKEN_CREDENTIAL: &str = "http-token";

/// The systemd credential the list's S/MIME key may come in as
/// (`LoadCredential=list-smime-key:…`).
pub const SMIME_KEY_CREDENTIAL: &str = "list-smime-key";

/// The credential `name` when the service manager passed it, else `path`.
pub fn credential_or(name: &str, path: &Path, credentials_dir: Option<&Path>) -> PathBuf {
    credentials_dir
        .map(|dir| dir.join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| path.to_owned())
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
