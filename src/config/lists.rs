//! Several lists in one file: the `[[list]]` tables merged with the shared
//! sections, each validated as one list, then checked against each other
//! (one spool, distinct addresses) and told of each other (`Neighbours`).

use super::validate::Validator;
use super::*;

/// `list`'s own value, else the default's.
fn or<T>(own: Option<T>, default: &Option<T>) -> Option<T>
where
    T: Clone,
{
    own.or_else(|| default.clone())
}

/// A list's policy: each field its own when set, else the file's `[policy]`.
fn policy(own: Option<RawPolicy>, shared: &RawPolicy) -> RawPolicy {
    let own = own.unwrap_or_default();
    RawPolicy {
        max_embargo: or(own.max_embargo, &shared.max_embargo),
        reminder_before: or(own.reminder_before, &shared.reminder_before),
        ack_reminder_before: or(own.ack_reminder_before, &shared.ack_reminder_before),
        late_after: or(own.late_after, &shared.late_after),
        signature_max_age: or(own.signature_max_age, &shared.signature_max_age),
        min_notice: or(own.min_notice, &shared.min_notice),
        release_hours: or(own.release_hours, &shared.release_hours),
        member_posts: or(own.member_posts, &shared.member_posts),
        inline_pgp: or(own.inline_pgp, &shared.inline_pgp),
        mime_max_depth: or(own.mime_max_depth, &shared.mime_max_depth),
        mime_max_parts: or(own.mime_max_parts, &shared.mime_max_parts),
        mime_max_headers: or(own.mime_max_headers, &shared.mime_max_headers),
        mime_max_header_size: or(own.mime_max_header_size, &shared.mime_max_header_size),
    }
}

/// A list's table over the shared sections: what it sets is its own, the
/// rest comes from `[defaults]` (list fields), `[policy]` (field by field),
/// `[public]`, `[[member]]` and `[inbound.imap]` (each as a whole).
fn merged(list: RawList, raw: &RawConfig) -> OneList {
    let d = &raw.defaults;
    let mut inbound = raw.inbound.clone();
    if list.imap.is_some() {
        inbound.imap = list.imap.clone();
    }
    OneList {
        discovery: raw.discovery.clone(),
        http: raw.http.clone(),
        policy: policy(list.policy.clone(), &raw.policy),
        public: list.public.clone().unwrap_or_else(|| raw.public.clone()),
        members: if list.members.is_empty() {
            raw.members.clone()
        } else {
            list.members.clone()
        },
        members_field: if list.members.is_empty() {
            "member"
        } else {
            "list.member"
        },
        hooks: if list.hooks.is_empty() {
            raw.hooks.clone()
        } else {
            list.hooks.clone()
        },
        hooks_field: if list.hooks.is_empty() {
            "release_hook"
        } else {
            "list.release_hook"
        },
        list: RawList {
            address: list.address,
            secret_key: or(list.secret_key, &d.secret_key),
            state_dir: or(list.state_dir, &d.state_dir),
            hostname: or(list.hostname, &d.hostname),
            request_address: list.request_address,
            roster_file: list.roster_file,
            policy: None,
            public: None,
            members: Vec::new(),
            imap: None,
            smime_cert: list.smime_cert,
            smime_key: list.smime_key,
            hooks: Vec::new(),
        },
        inbound,
        outbound: raw.outbound.clone(),
    }
}

impl Validator<'_> {
    /// Every list of the file, in its order, each told of the others.
    pub(super) fn lists(&self, mut raw: RawConfig) -> Result<Vec<Config>, ConfigError> {
        let (tables, several) = match std::mem::replace(&mut raw.list, RawLists::Many(Vec::new())) {
            RawLists::One(list) => (vec![*list], false),
            RawLists::Many(lists) => (lists, true),
        };
        if tables.is_empty() {
            return Err(self.err_at("list", "no [[list]] table: the file serves no list"));
        }
        let mut lists: Vec<Config> = Vec::with_capacity(tables.len());
        for (i, table) in tables.into_iter().enumerate() {
            let which = several.then(|| (i + 1, table.address.clone().unwrap_or_default()));
            let one = Validator {
                path: self.path,
                base: self.base,
                which,
            };
            let config = one.config(merged(table, &raw))?;
            let clash = |a: &str| {
                lists
                    .iter()
                    .find(|o| o.list_address == a || o.request_address == a)
                    .map(|o| o.list_address.clone())
            };
            for (field, address) in [
                ("list.address", &config.list_address),
                ("list.request_address", &config.request_address),
            ] {
                if let Some(other) = clash(address) {
                    return Err(one.err(
                        field,
                        format!("{address} is already an address of the list {other}; every list needs its own address and request address"),
                    ));
                }
            }
            if let Some(file) = &config.roster_file
                && let Some(other) = lists.iter().find(|o| o.roster_file.as_ref() == Some(file))
            {
                return Err(one.err(
                    "list.roster_file",
                    format!(
                        "{} is already the roster file of {}: each list needs its own (a roster change on one list must not touch another)",
                        file.display(),
                        other.list_address
                    ),
                ));
            }
            if let Some(other) = lists.iter().find(|o| o.list_key.same_as(&config.list_key)) {
                return Err(one.err(
                    "list.secret_key",
                    format!(
                        "the same key as the list {}: each list needs its own (it signs the list's copies and opens its records in the spool)",
                        other.list_address
                    ),
                ));
            }
            if let Some(first) = lists.first()
                && first.state_dir != config.state_dir
            {
                return Err(one.err(
                    "list.state_dir",
                    format!(
                        "the lists share one spool: set state_dir once, in [defaults] (the first list has {})",
                        first.state_dir.display()
                    ),
                ));
            }
            lists.push(config);
        }
        introduce(&mut lists, !several);
        Ok(lists)
    }

    fn err_at(&self, field: &str, problem: &str) -> ConfigError {
        ConfigError::Field {
            path: self.path.to_owned(),
            field: field.to_owned(),
            problem: problem.to_owned(),
        }
    }
}

/// Tells each list of the others: their addresses, and the file's lists.
/// (Whose keys another list knows is asked at run time, of the rosters in
/// force: `Relay::shared_keys`.)
fn introduce(lists: &mut [Config], one_list_form: bool) {
    let all: Vec<(String, String)> = lists
        .iter()
        .map(|c| (c.list_address.clone(), c.request_address.clone()))
        .collect();
    for (i, config) in lists.iter_mut().enumerate() {
        let mut neighbours = Neighbours {
            first: all[0].0.clone(),
            lists: all.iter().map(|(address, _)| address.clone()).collect(),
            one_list_form,
            ..Neighbours::default()
        };
        for (address, request) in all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| o)
        {
            neighbours.addresses.push(address.clone());
            neighbours.addresses.push(request.clone());
        }
        config.neighbours = neighbours;
    }
}
