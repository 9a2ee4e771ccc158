//! Join requests: the membership criteria of the distributors list policy
//! (shared/reference/private-distributors-list.md, "Membership Criteria")
//! and a checklist of which of them a request answers, for the PST.

/// The criteria, in the policy's order and numbering, with words that show
/// a request talks about one when it does not quote it.
pub(crate) const CRITERIA: [(&str, &[&str]); 9] = [
    (
        "Have an actively monitored security email alias for our project.",
        &["alias", "security email", "security contact", "subscribe"],
    ),
    (
        "Be an actively maintained and CNCF certified distribution of Kubernetes components.",
        &["certified", "conformance", "distribution of", "maintained"],
    ),
    (
        "Have a user base not limited to your own organization.",
        &["user base", "users", "customers"],
    ),
    (
        "Have a publicly verifiable track record up to present day of fixing security issues.",
        &["track record", "advisories", "security fixes", "cve"],
    ),
    (
        "Not be a downstream or rebuild of another distribution.",
        &["downstream", "rebuild"],
    ),
    (
        "Be a participant and active contributor in the community.",
        &["contributor", "contribute to", "participant"],
    ),
    (
        "Accept the Embargo Policy that is outlined above.",
        &["embargo policy", "accept the embargo"],
    ),
    (
        "Be willing to contribute back as outlined above.",
        &["contribute back", "contributing back"],
    ),
    (
        "Have someone already on the list vouch for the person requesting membership on behalf of your distribution.",
        &["vouch"],
    ),
];

/// For each criterion, whether the request answers it.
///
/// A request written as the policy asks (each criterion quoted with `>`,
/// the answer below it) is read that way: a criterion counts as answered
/// when its quote is followed by an answer. Otherwise, the request's own
/// (unquoted) words are searched for the criterion's key words.
pub(crate) fn checklist(body: &str) -> [bool; 9] {
    let mut answered = [false; 9];
    let mut quoted_any = false;
    let mut current: Option<usize> = None;
    let mut in_quote = false;
    let mut quote = String::new();
    let mut own_words = String::new();
    for line in body.lines() {
        let trimmed = line.trim_start();
        let continues_quote = in_quote && !line.is_empty() && line.starts_with(char::is_whitespace);
        if trimmed.starts_with('>') || continues_quote {
            if !in_quote {
                quote.clear();
            }
            in_quote = true;
            quote.push(' ');
            quote.push_str(trimmed.trim_start_matches('>'));
            continue;
        }
        if in_quote {
            in_quote = false;
            current = best_match(&quote);
            quoted_any |= current.is_some();
        }
        if trimmed.is_empty() {
            continue;
        }
        own_words.push_str(trimmed);
        own_words.push('\n');
        if let Some(i) = current {
            answered[i] = true;
        }
    }
    if !quoted_any {
        let text = own_words.to_lowercase();
        for (i, (_, keys)) in CRITERIA.iter().enumerate() {
            answered[i] = keys.iter().any(|k| text.contains(k));
        }
    }
    answered
}

/// The criterion a quoted passage is, by the words they share (at least
/// half of the criterion's longer words).
fn best_match(quote: &str) -> Option<usize> {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 3)
            .map(str::to_lowercase)
            .collect()
    };
    let quoted = words(quote);
    CRITERIA
        .iter()
        .enumerate()
        .map(|(i, (text, _))| {
            let own = words(text);
            let shared = own.iter().filter(|w| quoted.contains(w)).count();
            (i, shared, own.len())
        })
        .filter(|(_, shared, len)| *shared * 2 >= *len && *shared > 0)
        .max_by_key(|(_, shared, _)| *shared)
        .map(|(i, _, _)| i)
}

/// The checklist as text for the PST.
pub(crate) fn checklist_text(answered: &[bool; 9]) -> String {
    let mut out = String::new();
    for (i, ((text, _), yes)) in CRITERIA.iter().zip(answered).enumerate() {
        let mark = if *yes { "[x]" } else { "[ ]" };
        let note = if *yes { "" } else { "  <- not addressed" };
        out.push_str(&format!("  {mark} {i}. {text}{note}\n"));
    }
    let missing: Vec<String> = answered
        .iter()
        .enumerate()
        .filter(|(_, yes)| !**yes)
        .map(|(i, _)| i.to_string())
        .collect();
    out.push_str(&format!(
        "\nAnswered: {} of {}.{}\n",
        answered.iter().filter(|a| **a).count(),
        CRITERIA.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!(" Not addressed: {}.", missing.join(", "))
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_in_the_policys_format_is_read_criterion_by_criterion() {
        // Shaped like the policy's own example, with criteria 4 and 8 left out
        // and criterion 2 quoted but not answered.
        let body = "Below are each criterion and why I think we, Seven-Corp, qualify.\n\n\
> 0. Have an actively monitored security alias email for our project.\n\n\
Yes, please subscribe kubernetes-security-team@example.com.\n\n\
> 1. Be an actively maintained distribution of kubernetes components.\n\n\
We distribute the \"Seven\" distribution.\n\n\
> 2. Have a user base not limited to your own organization.\n\n\
> 3. Have a publicly verifiable track record up to present day of fixing security\n   issues.\n\n\
We announce on our blog all upstream patches.\n\n\
> 5. Be a participant and active contributor in the community.\n\nOur members are well known.\n\n\
> 6. Accept the Embargo Policy that is outlined above.\n\nWe accept.\n\n\
> 7. Be willing to contribute back as outlined above.\n\nWe are definitely willing to help!\n";
        let got = checklist(body);
        assert_eq!(
            got,
            [true, true, false, true, false, true, true, true, false]
        );
        let text = checklist_text(&got);
        assert!(
            text.contains("[ ] 8. Have someone already on the list vouch"),
            "{text}"
        );
        assert!(
            text.contains("Answered: 6 of 9. Not addressed: 2, 4, 8."),
            "{text}"
        );
    }

    #[test]
    fn a_free_form_request_is_read_by_key_words() {
        let got = checklist(
            "Hi, we run a certified distribution with many users. Our security alias is \
sec@example.org. We accept the embargo policy, and Jane (already a member) will vouch for us.",
        );
        assert_eq!(
            got,
            [true, true, true, false, false, false, true, false, true]
        );
    }
}
