//! Why a component does not fit this host, said in a handler author's terms: which
//! `kiln:handler` version it was built against and which ones the host serves, or which
//! imported interfaces no host provides. The linker's own message ("instance export `log`
//! has the wrong type: function implementation is missing") is kept only as a fallback.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::bindings::CONTRACT_VERSIONS;

/// The WASI 0.2 packages every handler is linked with (denied by default where they reach
/// outside the sandbox; see `capabilities`).
const WASI_PACKAGES: &[&str] = &[
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
    "wasi:http",
];

/// What `component` imports that this host does not provide, as a sentence, if anything.
pub fn explain(component: &Component, engine: &Engine) -> Option<String> {
    let served = CONTRACT_VERSIONS
        .iter()
        .map(|v| format!("kiln:handler@{v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut missing = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        let (path, version) = name.split_once('@').unwrap_or((name, ""));
        let package = path.split_once('/').map_or(path, |(package, _)| package);
        if package == "kiln:handler" {
            if !CONTRACT_VERSIONS.contains(&version) {
                return Some(format!(
                    "it was built against kiln:handler@{version}; this host serves {served}"
                ));
            }
        } else if !(WASI_PACKAGES.contains(&package) && version.starts_with("0.2.")) {
            missing.push(format!("`{name}`"));
        }
    }
    (!missing.is_empty()).then(|| {
        format!(
            "it imports {}, which this host does not provide (it provides {served} and \
             WASI 0.2: {})",
            missing.join(", "),
            WASI_PACKAGES.join(", ")
        )
    })
}
