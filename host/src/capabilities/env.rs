//! The `env` grant: environment variables a handler sees, `grants = { env = { KEY = "v" } }`.
//! Values come from the config only, never from the host's own environment, so a handler
//! cannot read the host's secrets by naming them.

use std::collections::BTreeMap;

use wasmtime_wasi::WasiCtxBuilder;

/// Variable name -> value.
pub type EnvGrant = BTreeMap<String, String>;

/// Why `name = value` cannot be an environment variable, if it cannot: an empty name, or a
/// name with `=` or NUL, or a value with NUL, would not survive the guest's `environ`.
pub fn check(name: &str, value: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
        return Err("not a valid environment variable name and value");
    }
    Ok(())
}

/// Adds the granted variables to an attempt's WASI context.
pub(crate) fn apply(grant: &EnvGrant, builder: &mut WasiCtxBuilder) {
    for (name, value) in grant {
        builder.env(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn names_that_cannot_be_variables_are_refused() {
        assert!(check("API_BASE", "https://example.test").is_ok());
        for (name, value) in [("", "x"), ("A=B", "x"), ("A\0", "x"), ("A", "x\0y")] {
            assert!(check(name, value).is_err(), "{name:?}={value:?}");
        }
    }
}
