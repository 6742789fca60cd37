//! Environment overrides: `KILN_SECTION__KEY=value` sets `section.key` in the parsed TOML
//! document before it is validated, so an override is checked exactly like a value in the
//! file. `__` separates path segments (`KILN_QUEUES__DEFAULT__CONCURRENCY=2`); segments are
//! matched against existing keys ignoring case and treating `_` and `-` alike, so
//! `KILN_HANDLERS__RESIZE_IMAGE__TIMEOUT` reaches `[handlers.resize-image]`. Of the
//! variables without `__`, Kiln reads `KILN_CONFIG` and `KILN_LOG`, and `KILN_BENCH_*` and
//! `KILN_TEST_*` belong to its benches and tests; any other `KILN_*` name is refused, as an
//! unknown key in an override is, so `KILN_STORE_PATH` (one `_`) is not silently ignored.
//!
//! A value is read as a TOML value when it parses as one (`4`, `true`, `0.5`,
//! `["redis://a:7000"]`), otherwise as a plain string (`redis://host:6379`, `10s`).

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::error::{ConfigError, Origins};

const PREFIX: &str = "KILN_";
const SEPARATOR: &str = "__";

/// `KILN_*` variables that are not overrides: read by the binary, or reserved (prefixes) for
/// Kiln's own benches and tests.
const NOT_OVERRIDES: [&str; 2] = ["KILN_CONFIG", "KILN_LOG"];
const RESERVED_PREFIXES: [&str; 2] = ["KILN_BENCH_", "KILN_TEST_"];

/// The overrides among `vars`, sorted by name so errors do not depend on environment order;
/// a `KILN_*` variable that is neither an override nor one Kiln reads is an error.
pub(super) fn overrides(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut found = Vec::new();
    let mut unknown = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if rest.contains(SEPARATOR) {
            found.push((name, value));
        } else if !NOT_OVERRIDES.contains(&name.as_str())
            && !RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            unknown.push(name);
        }
    }
    unknown.sort();
    if let Some(var) = unknown.into_iter().next() {
        return Err(ConfigError::UnknownVariable { var });
    }
    found.sort();
    Ok(found)
}

/// Applies each `(variable, value)` override to `root`. Values and keys borrow from `vars`.
pub(super) fn apply<'i>(
    root: &mut DeTable<'i>,
    vars: &'i [(String, String)],
    origins: &mut Origins<'_>,
) -> Result<(), ConfigError> {
    for (var, value) in vars {
        let start = origins.reserve_env(var, value.len());
        let span = start..start + value.len() + 1;
        let segments: Vec<String> = var[PREFIX.len()..]
            .split(SEPARATOR)
            .map(str::to_ascii_lowercase)
            .collect();
        if segments.iter().any(String::is_empty) {
            return Err(origins.invalid(
                segments.join("."),
                &span,
                "the variable name has an empty path segment",
            ));
        }
        set(root, &segments, parse_value(value, start), &span, origins)?;
    }
    Ok(())
}

/// Sets `root[segments...] = value`, creating intermediate tables as needed.
fn set<'i>(
    root: &mut DeTable<'i>,
    segments: &[String],
    value: Spanned<DeValue<'i>>,
    span: &Range<usize>,
    origins: &Origins<'_>,
) -> Result<(), ConfigError> {
    let (last, parents) = segments.split_last().expect("segments is never empty");
    let mut table = root;
    for (depth, segment) in parents.iter().enumerate() {
        let key = existing_key(table, segment).unwrap_or_else(|| segment.clone());
        let entry = table
            .entry(Spanned::new(span.clone(), Cow::Owned(key)))
            .or_insert_with(|| Spanned::new(span.clone(), DeValue::Table(DeTable::new())));
        table = match entry.get_mut() {
            DeValue::Table(inner) => inner,
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: segments.join("."),
                    at: origins.locate(span),
                    expected: Some(format!("`{}` is not a table", segments[..=depth].join("."))),
                });
            }
        };
    }
    let key = existing_key(table, last).unwrap_or_else(|| last.clone());
    table.remove(key.as_str());
    table.insert(Spanned::new(span.clone(), Cow::Owned(key)), value);
    Ok(())
}

/// The key of `table` that `segment` names: same letters ignoring case, `-` equal to `_`.
fn existing_key(table: &DeTable<'_>, segment: &str) -> Option<String> {
    let normal = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    table
        .keys()
        .map(|k| k.get_ref().to_string())
        .find(|k| normal(k) == normal(segment))
}

/// Reads `text` as a TOML value if it is one, else as a string; every span in the result is
/// moved into the variable's synthetic region starting at `start`.
fn parse_value(text: &str, start: usize) -> Spanned<DeValue<'_>> {
    match DeValue::parse(text) {
        Ok(value) => shift(value, start),
        Err(_) => Spanned::new(
            start..start + text.len() + 1,
            DeValue::String(Cow::Borrowed(text)),
        ),
    }
}

fn shift(value: Spanned<DeValue<'_>>, start: usize) -> Spanned<DeValue<'_>> {
    let span = value.span();
    let moved = match value.into_inner() {
        DeValue::Array(items) => DeValue::Array(
            items
                .into_iter()
                .map(|v| shift(v, start))
                .collect::<DeArray<'_>>(),
        ),
        DeValue::Table(table) => DeValue::Table(
            table
                .into_iter()
                .map(|(k, v)| {
                    let key_span = k.span();
                    let key =
                        Spanned::new(key_span.start + start..key_span.end + start, k.into_inner());
                    (key, shift(v, start))
                })
                .collect(),
        ),
        other => other,
    };
    Spanned::new(span.start + start..span.end + start, moved)
}
