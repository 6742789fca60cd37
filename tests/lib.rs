//! Nothing here: the tests live in the `integration` test binary (main.rs).
