//! What changed between two configs, in words, for the "config reloaded" log line.

use std::collections::BTreeMap;

use super::Config;

/// A phrase listing what `new` changes from `old`: schedules and queues added, removed and
/// changed by name, handlers changed, `[defaults]` and the host's graces; "no changes"
/// when it is the same.
pub fn describe_changes(old: &Config, new: &Config) -> String {
    let mut parts = Vec::new();
    let schedules = |c: &Config| -> BTreeMap<String, _> {
        (c.schedules.iter())
            .map(|s| (s.name.clone(), s.clone()))
            .collect()
    };
    names(&mut parts, "schedules", &schedules(old), &schedules(new));
    names(&mut parts, "queues", &old.queues, &new.queues);
    names(&mut parts, "handlers", &old.handlers, &new.handlers);
    if old.defaults != new.defaults || old.retention != new.retention {
        parts.push("defaults changed".to_owned());
    }
    if old.host != new.host {
        parts.push("host graces changed".to_owned());
    }
    if parts.is_empty() {
        "no changes".to_owned()
    } else {
        parts.join("; ")
    }
}

/// Adds "KIND added [a, b]", "KIND removed [..]" and "KIND changed [..]" to `parts`, each
/// only when not empty.
fn names<T: PartialEq>(
    parts: &mut Vec<String>,
    kind: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
) {
    let added: Vec<&str> = (new.keys())
        .filter(|k| !old.contains_key(*k))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = (old.keys())
        .filter(|k| !new.contains_key(*k))
        .map(String::as_str)
        .collect();
    let changed: Vec<&str> = (new.iter())
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k.as_str())
        .collect();
    for (what, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            parts.push(format!("{kind} {what} [{}]", list.join(", ")));
        }
    }
}
