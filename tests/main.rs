//! Kiln integration tests.
