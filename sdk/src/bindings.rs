//! The one place the handler world's bindings are generated.
//!
//! Everything else in the SDK wraps these types and functions; handler crates never name the
//! generated paths, so they need no copy of the WIT (it is read from the repository's `wit/`)
//! and survive changes in how it is generated.

#![allow(unsafe_code, missing_docs, clippy::all)]

wit_bindgen::generate!({
    world: "handler",
    path: "../wit",
    pub_export_macro: true,
    default_bindings_module: "kiln_sdk::bindings",
});
