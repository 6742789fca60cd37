//! The `kiln` binary: parses the command line and maps errors to exit codes.
fn main() {}
