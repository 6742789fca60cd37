//! Kiln integration tests.

mod store;
