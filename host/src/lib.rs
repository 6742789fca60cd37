//! Kiln runs background jobs whose handlers are WebAssembly components.
//!
//! Layout:
//! - `bindings`: the only `bindgen!` of the `kiln:handler` world.

pub mod store;
