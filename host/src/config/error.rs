//! Configuration errors and where they point. Every error names the key as a dotted path
//! (`queues.images.concurrency`) and its origin: the file and line, or the environment
//! variable that set it. Byte spans from the TOML parser are turned into those origins here.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config file `{}`", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("invalid TOML {at}: {message}")]
    Syntax {
        at: Location,
        /// The TOML parser's description of the problem.
        message: String,
    },
    /// A key Kiln does not know, in the file or named by a `KILN_*` variable.
    #[error("unknown key `{key}` {at}{}", expected.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    UnknownKey {
        /// The dotted path of the key, e.g. `queues.images.concurency`.
        key: String,
        at: Location,
        /// The keys that would have been accepted there, as a phrase.
        expected: Option<String>,
    },
    /// A `KILN_*` environment variable that is neither an override nor one Kiln reads.
    #[error(
        "unknown environment variable `{var}`: Kiln reads `KILN_CONFIG`, `KILN_LOG` and \
         overrides named like `KILN_HOST__CONCURRENCY` (`__` between the key's parts)"
    )]
    UnknownVariable {
        /// The variable's name, e.g. `KILN_STORE_PATH`.
        var: String,
    },
    /// A known key with a value Kiln cannot use.
    #[error("invalid `{key}` {at}: {reason}")]
    Invalid {
        /// The dotted path of the key, e.g. `host.concurrency`.
        key: String,
        at: Location,
        /// What is wrong with the value, e.g. "0 is less than 1".
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UnknownKey { key, .. } | Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } | Self::Syntax { .. } | Self::UnknownVariable { .. } => None,
        }
    }

    /// Where the offending value came from, if it came from somewhere more precise than a file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Syntax { at, .. } | Self::UnknownKey { at, .. } | Self::Invalid { at, .. } => {
                Some(at)
            }
            Self::Read { .. } | Self::UnknownVariable { .. } => None,
        }
    }

    /// The 1-based line in the config file, for errors about a value written in the file.
    pub fn line(&self) -> Option<usize> {
        match self.location()? {
            Location::File { line, .. } => Some(*line),
            Location::Env { .. } => None,
        }
    }
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Written in the config file at this 1-based line.
    File {
        /// The config file.
        path: PathBuf,
        /// 1-based line number of the key or value.
        line: usize,
    },
    /// Set by an environment override such as `KILN_HOST__CONCURRENCY`.
    Env {
        /// The variable's name, e.g. `KILN_HOST__CONCURRENCY`.
        var: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, line } => write!(f, "in `{}` at line {line}", path.display()),
            Self::Env { var } => write!(f, "from environment variable `{var}`"),
        }
    }
}

/// Maps byte spans to locations. Spans inside the file text are file lines; environment
/// overrides are given synthetic spans past the end of the text, one region per variable.
pub(super) struct Origins<'a> {
    path: &'a Path,
    text: &'a str,
    /// `(region, variable name)` for each override, regions disjoint and beyond `text`.
    env: Vec<(Range<usize>, String)>,
}

impl<'a> Origins<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Self {
            path,
            text,
            env: Vec::new(),
        }
    }

    /// Reserves a region of `len` synthetic bytes for the variable `var`, returning its start.
    pub fn reserve_env(&mut self, var: &str, len: usize) -> usize {
        let start = self
            .env
            .last()
            .map_or(self.text.len() + 1, |(region, _)| region.end);
        self.env.push((start..start + len + 1, var.to_owned()));
        start
    }

    pub fn locate(&self, span: &Range<usize>) -> Location {
        if let Some((_, var)) = self.env.iter().find(|(r, _)| r.contains(&span.start)) {
            return Location::Env { var: var.clone() };
        }
        let start = span.start.min(self.text.len());
        let line = self.text.as_bytes()[..start]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        Location::File {
            path: self.path.to_owned(),
            line,
        }
    }

    pub fn invalid(
        &self,
        key: impl Into<String>,
        span: &Range<usize>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            at: self.locate(span),
            reason: reason.into(),
        }
    }

    /// Turns a deserialization error (unknown key, wrong type) into one naming the key.
    pub fn deserialize_error(&self, root: &DeTable<'_>, error: &toml::de::Error) -> ConfigError {
        let span = error.span().unwrap_or(0..0);
        let mut path = Vec::new();
        find_key(root, &span, &mut path);
        let key = if path.is_empty() {
            "(root)".to_owned()
        } else {
            path.join(".")
        };
        let at = self.locate(&span);
        let message = error.message();
        match message.strip_prefix("unknown field `") {
            Some(rest) => ConfigError::UnknownKey {
                key,
                at,
                expected: rest.split_once("`, ").map(|(_, e)| e.to_owned()),
            },
            None => ConfigError::Invalid {
                key,
                at,
                reason: plain_types(message),
            },
        }
    }
}

/// serde's type-mismatch message with Rust type names replaced by TOML ones.
fn plain_types(message: &str) -> String {
    [
        ("expected i64", "expected an integer"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
    ]
    .iter()
    .fold(raw_struct_to_table(message), |m, (rust, toml)| {
        m.replace(rust, toml)
    })
}

/// "expected struct RawQueue" names a Rust type; the user wrote TOML, where it is a table.
fn raw_struct_to_table(message: &str) -> String {
    match message.find("expected struct ") {
        Some(at) => format!("{}expected a table", &message[..at]),
        None => message.to_owned(),
    }
}

/// Pushes onto `path` the keys leading to the key or value whose span holds `span`.
/// Tables are always searched: a `[header]` table's own span covers only its header.
fn find_key(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    let holds = |outer: Range<usize>| outer.start <= span.start && span.end <= outer.end;
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        let found =
            holds(key.span()) || find_in_value(value.get_ref(), span, path) || holds(value.span());
        if found {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &DeValue<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    match value {
        DeValue::Table(table) => find_key(table, span, path),
        DeValue::Array(items) => items
            .iter()
            .any(|item| find_in_value(item.get_ref(), span, path)),
        _ => false,
    }
}
