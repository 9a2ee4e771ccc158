//! SMTP command lines parsed, with no I/O.

/// A parsed command line. Parsing does no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpCommand {
    Ehlo(String),
    Helo(String),
    Mail { from: String, size: Option<usize> },
    Rcpt(String),
    Data,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Unknown,
    Invalid(&'static str),
}

/// Parses one command line (without CRLF).
pub fn parse_command(line: &str) -> SmtpCommand {
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" if !rest.is_empty() => SmtpCommand::Ehlo(rest.to_owned()),
        "HELO" if !rest.is_empty() => SmtpCommand::Helo(rest.to_owned()),
        "EHLO" | "HELO" => SmtpCommand::Invalid("a domain is required"),
        "MAIL" => parse_mail(rest),
        "RCPT" => match path_arg(rest, "TO:") {
            Some((addr, _)) if !addr.is_empty() => SmtpCommand::Rcpt(addr),
            _ => SmtpCommand::Invalid("syntax: RCPT TO:<address>"),
        },
        "DATA" if rest.is_empty() => SmtpCommand::Data,
        "RSET" if rest.is_empty() => SmtpCommand::Rset,
        "NOOP" => SmtpCommand::Noop,
        "QUIT" if rest.is_empty() => SmtpCommand::Quit,
        "VRFY" => SmtpCommand::Vrfy,
        "DATA" | "RSET" | "QUIT" => SmtpCommand::Invalid("no parameters allowed"),
        _ => SmtpCommand::Unknown,
    }
}

fn parse_mail(rest: &str) -> SmtpCommand {
    let Some((from, params)) = path_arg(rest, "FROM:") else {
        return SmtpCommand::Invalid("syntax: MAIL FROM:<address>");
    };
    let mut size = None;
    for param in params.split_ascii_whitespace() {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => match value.parse() {
                Ok(n) => size = Some(n),
                Err(_) => return SmtpCommand::Invalid("SIZE needs a number"),
            },
            "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
            _ => return SmtpCommand::Invalid("unsupported MAIL parameter"),
        }
    }
    SmtpCommand::Mail { from, size }
}

/// Splits `FROM:<addr> params` into the address and the parameters.
fn path_arg<'a>(rest: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let head = rest.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = rest[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let addr = &rest[..end];
    if addr.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    Some((addr.to_owned(), rest[end + 1..].trim()))
}
