//! Kiln SDK.
