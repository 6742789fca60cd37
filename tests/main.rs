//! Kiln integration tests.
mod config;
