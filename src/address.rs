//! The rules of a member entry, written once: a plain address (returned
//! lowercased) and an organization on one non-empty line. Used by the
//! configuration, the roster file, the operator's `roster add`, the PST's
//! `Roster-Add` mails and the announcement grammar's addresses.

/// Checks that `addr` is a plain `local@domain` address and returns it lowercased.
pub(crate) fn check_address(addr: &str) -> Result<String, String> {
    let addr = addr.trim();
    let bad = addr.is_empty()
        || addr.len() > 254
        || addr
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c));
    match addr.split_once('@') {
        Some((local, domain))
            if !bad && !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(addr.to_ascii_lowercase())
        }
        _ => Err(format!(
            "`{addr}` is not a plain address such as list@example.org"
        )),
    }
}

/// What is wrong with an organization, for the caller to put after the
/// field's name.
pub(crate) const ORGANIZATION_RULE: &str = "must be a non-empty single line";

/// Checks a member's organization and returns it trimmed.
pub(crate) fn check_organization(organization: &str) -> Result<&str, &'static str> {
    let organization = organization.trim();
    if organization.is_empty() || organization.contains(['\r', '\n']) {
        return Err(ORGANIZATION_RULE);
    }
    Ok(organization)
}

/// What is wrong with a member entry, by field.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EntryError {
    /// The address is not a plain address (the text says why).
    Email(String),
    /// The organization is empty or more than one line.
    Organization(&'static str),
    /// The address is already on the roster (it is given, lowercased).
    Twice(String),
}

/// The whole rule of a member entry: a plain address (returned lowercased),
/// an organization on one non-empty line (returned trimmed), and an address
/// that `taken` says is not on the roster already.
pub(crate) fn check_entry<'a>(
    email: &str,
    organization: &'a str,
    taken: impl Fn(&str) -> bool,
) -> Result<(String, &'a str), EntryError> {
    let email = check_address(email).map_err(EntryError::Email)?;
    let organization = check_organization(organization).map_err(EntryError::Organization)?;
    if taken(&email) {
        return Err(EntryError::Twice(email));
    }
    Ok((email, organization))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_a_plain_address_and_one_line_of_organization() {
        assert_eq!(
            check_address(" Sec@Distro.Example ").unwrap(),
            "sec@distro.example"
        );
        for bad in ["", "a", "@x", "a@", "a@b@c", "a b@c", "<a@b>", "a@b,c@d"] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_organization("  Org A ").unwrap(), "Org A");
        for bad in ["", "   ", "A\nB", "A\rB"] {
            assert_eq!(check_organization(bad), Err(ORGANIZATION_RULE), "{bad:?}");
        }
        assert_eq!(
            check_entry("A@X.example", " Org ", |_| false),
            Ok(("a@x.example".to_owned(), "Org"))
        );
        assert_eq!(
            check_entry("A@X.example", "Org", |e| e == "a@x.example"),
            Err(EntryError::Twice("a@x.example".to_owned()))
        );
        assert!(matches!(
            check_entry("nope", "Org", |_| false),
            Err(EntryError::Email(_))
        ));
        assert!(matches!(
            check_entry("a@x.example", "", |_| false),
            Err(EntryError::Organization(_))
        ));
    }
}
