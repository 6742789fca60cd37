//! Kiln runs background jobs whose handlers are WebAssembly components.
//!
//! Layout:
//! - `bindings`: the only `bindgen!` of the `kiln:handler` world.
//! - `config`: `config.toml` and `KILN_*` overrides -> validated `Config`.

pub mod config;
