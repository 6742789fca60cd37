//! The one place that runs `bindgen!` for the `kiln:handler` world.
//!
//! Everything else in the host names the generated items through the re-exports below, so
//! a change in the WIT (or in how bindings are generated) touches only this file.

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

pub use self::kiln::handler::host::Host as HostImports;
pub use self::kiln::handler::types::{
    EnqueueOptions, Host as TypesImports, Job as WitJob, Level, RetryInfo,
};

/// The `kiln:handler` contract versions this host serves (the `package` line of `wit/`).
pub const CONTRACT_VERSIONS: &[&str] = &["0.1.0"];
