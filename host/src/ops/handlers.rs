//! Handlers as users see them: what a registry serves and refused, and the check of one
//! component file against the contract (`kiln check`).

use std::path::Path;

use serde::Serialize;
use wasmtime::component::types::ComponentItem;

use crate::engine::Runtime;
use crate::registry::{LoadSource, Registry, describe, digest, name_of};

/// One handler name: the version serving it, or why its file was refused.
#[derive(Debug, Clone, Serialize)]
pub struct HandlerView {
    pub name: String,
    /// Hex SHA-256 of the serving `.wasm`.
    pub digest: Option<String>,
    /// Size of the serving `.wasm` in bytes.
    pub size: Option<u64>,
    /// Milliseconds (to the hundredth) it took to compile or map from the cache, and
    /// type-check.
    pub load_ms: Option<f64>,
    pub source: Option<LoadSource>,
    /// Why the newest file was refused.
    pub error: Option<String>,
}

/// Every handler `registry` serves or refused, by name.
pub fn handlers(registry: &Registry) -> Vec<HandlerView> {
    let serving = registry.handlers().into_iter().map(|h| HandlerView {
        name: h.name.clone(),
        digest: Some(h.digest.clone()),
        size: Some(h.size),
        load_ms: Some(round_ms(h.took)),
        source: Some(h.source),
        error: None,
    });
    let refused = registry
        .errors()
        .into_iter()
        .map(|(name, error)| HandlerView {
            name,
            digest: None,
            size: None,
            load_ms: None,
            source: None,
            error: Some(error),
        });
    let mut rows: Vec<HandlerView> = serving.chain(refused).collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// `took` in milliseconds, to the hundredth (more digits are noise, and print as such).
fn round_ms(took: std::time::Duration) -> f64 {
    (took.as_secs_f64() * 100_000.0).round() / 100.0
}

/// What `kiln check` found out about one component file.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub file: String,
    /// Whether the file is a handler this host can serve.
    pub valid: bool,
    /// Why not, when it is not.
    pub error: Option<String>,
    pub digest: Option<String>,
    pub size: Option<u64>,
    /// What the component imports and exports, `name (kind)`.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Reads, compiles and type-checks `file` against the contract, and checks that its memory
/// fits the runtime's cap and its file name is one a host serves (a valid component under a
/// bad name is reported invalid).
pub fn check(runtime: &Runtime, file: &Path) -> CheckReport {
    let mut report = CheckReport {
        file: file.display().to_string(),
        valid: false,
        error: None,
        digest: None,
        size: None,
        imports: Vec::new(),
        exports: Vec::new(),
    };
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) => {
            report.error = Some(format!("failed to read `{}`: {error}", file.display()));
            return report;
        }
    };
    report.digest = Some(digest(&bytes));
    report.size = Some(bytes.len() as u64);
    let name = file.display().to_string();
    if let Err(error) = runtime.fits_memory(&bytes, &name) {
        report.error = Some(describe(&error));
        return report;
    }
    let component = match runtime.compile(&bytes, &name) {
        Ok(component) => component,
        Err(error) => {
            report.error = Some(describe(&error));
            return report;
        }
    };
    let engine = runtime.engine();
    let ty = component.component_type();
    report.imports = ty
        .imports(engine)
        .map(|(n, item)| item_line(n, &item.ty))
        .collect();
    report.exports = ty
        .exports(engine)
        .map(|(n, item)| item_line(n, &item.ty))
        .collect();
    if let Err(error) = runtime.pre_instantiate(&component, &name) {
        report.error = Some(describe(&error));
        return report;
    }
    match name_of(file) {
        Ok(_) => report.valid = true,
        Err(error) => {
            report.error = Some(format!(
                "a valid component, but a host would not serve it: {}",
                describe(&error)
            ))
        }
    }
    report
}

fn item_line(name: &str, item: &ComponentItem) -> String {
    let kind = match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "interface",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    };
    format!("{name} ({kind})")
}
