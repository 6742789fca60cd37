//! Parsing of the two unit-bearing value kinds in `config.toml`: durations (`"30s"`,
//! `"1h 30m"`, `"250ms"`) and byte sizes (`"64MiB"`, `"64 MiB"`, `"10MB"`, `1000`).
//! Each parser returns the reason for a rejection as a lowercase phrase; the caller adds the
//! key and line.

use std::time::Duration;

use super::raw::Scalar;

/// Binary and decimal size units, matched case-insensitively. Bare `K`/`M`/`G` are left out
/// on purpose: whether they mean 1000 or 1024 is a guess this file should not make.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

/// Parses a duration such as `"30s"`, `"5m"`, `"1h 30m"` or `"250ms"`. A bare integer is
/// rejected rather than guessed to be seconds.
pub(super) fn duration(value: &Scalar) -> Result<Duration, String> {
    match value {
        Scalar::Text(text) => humantime::parse_duration(text.trim())
            .map_err(|e| format!("`{text}` is not a duration ({e}); use e.g. \"30s\" or \"5m\"")),
        Scalar::Int(n) => Err(format!(
            "`{n}` has no unit; write a duration such as \"{n}s\" or \"{n}ms\""
        )),
    }
}

/// Parses a byte size: an integer number of bytes, or a number with a unit (`KiB`, `MiB`,
/// `GiB`, `TiB` are powers of 1024; `KB`, `MB`, `GB`, `TB` powers of 1000). A decimal
/// fraction is allowed (`"1.5GiB"`) and rounded down to whole bytes.
pub(super) fn size(value: &Scalar) -> Result<u64, String> {
    let text = match value {
        Scalar::Int(n) if *n < 0 => return Err(format!("`{n}` is negative")),
        Scalar::Int(n) => return Ok(n.unsigned_abs()),
        Scalar::Text(text) => text.trim(),
    };
    if text.starts_with('-') {
        return Err(format!("`{text}` is negative"));
    }
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let unit = unit.trim_start();
    let multiplier = SIZE_UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|(_, m)| *m)
        .ok_or_else(|| {
            format!(
                "`{text}` has an unknown unit `{unit}`; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            )
        })?;
    scale(number, multiplier)
        .ok_or_else(|| format!("`{text}` is not a byte size such as \"64MiB\""))
}

/// `number * multiplier` for a decimal `number` with an optional fraction, in whole bytes;
/// `None` if the number is malformed or the result does not fit in a `u64`.
fn scale(number: &str, multiplier: u64) -> Option<u64> {
    let number = number.replace('_', "");
    let (whole, fraction) = number.split_once('.').unwrap_or((&number, ""));
    if whole.is_empty() || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let mut bytes = whole.checked_mul(u128::from(multiplier))?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).ok().filter(|d| *d <= 18)?;
        let numerator: u128 = fraction.parse().ok()?;
        bytes += numerator * u128::from(multiplier) / 10u128.pow(digits);
    }
    u64::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Scalar {
        Scalar::Text(s.to_owned())
    }

    #[test]
    fn sizes() {
        assert_eq!(size(&text("64MiB")), Ok(64 << 20));
        assert_eq!(size(&text("64 MiB")), Ok(64 << 20));
        assert_eq!(size(&text("512KiB")), Ok(512 << 10));
        assert_eq!(size(&text("1GiB")), Ok(1 << 30));
        assert_eq!(size(&text("1000")), Ok(1000));
        assert_eq!(size(&text("10MB")), Ok(10_000_000));
        assert_eq!(size(&text("1.5KiB")), Ok(1536));
        assert_eq!(size(&Scalar::Int(4096)), Ok(4096));
        assert!(
            size(&text("64 MiBs"))
                .unwrap_err()
                .contains("unknown unit `MiBs`")
        );
        assert!(size(&text("-1MiB")).unwrap_err().contains("negative"));
        assert!(size(&Scalar::Int(-5)).unwrap_err().contains("negative"));
        assert!(size(&text("MiB")).is_err());
        assert!(size(&text("99999999999TiB")).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration(&text("30s")), Ok(Duration::from_secs(30)));
        assert_eq!(duration(&text("1h 30m")), Ok(Duration::from_secs(5400)));
        assert_eq!(duration(&text("250ms")), Ok(Duration::from_millis(250)));
        assert!(
            duration(&text("10 parsecs"))
                .unwrap_err()
                .contains("10 parsecs")
        );
        assert!(duration(&Scalar::Int(10)).unwrap_err().contains("no unit"));
    }
}
