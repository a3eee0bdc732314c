//! Checks of admin input that the types cannot make: durations, free text, e-mail addresses.

use super::admin::{AdminError, invalid};
use crate::store::now_ms;

/// Milliseconds in a duration written as a number and a unit (`s`, `m`, `h`, `d`, `w`).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("`{}` is not a duration like 90m, 12h, 30d or 2w", shown(s));
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms)
        .filter(|ms| *ms > 0 && *ms <= 100 * 365 * 86_400_000)
        .ok_or_else(|| {
            format!(
                "`{}` is out of range (more than 0, at most 100 years)",
                shown(s)
            )
        })
}

pub(super) fn shown(s: &str) -> String {
    s.chars().take(40).flat_map(char::escape_default).collect()
}

/// Free text (a display name, a token name): bounded and printable.
pub(super) fn text(what: &str, s: &str, max: usize) -> Result<String, AdminError> {
    if s.chars().count() > max {
        return invalid(format!("{what} is longer than {max} characters"));
    }
    if s.chars().any(char::is_control) {
        return invalid(format!("{what} contains control characters"));
    }
    Ok(s.to_owned())
}

pub(super) fn email(s: &str) -> Result<String, AdminError> {
    let s = text("the e-mail address", s, 254)?;
    if !s.is_empty() && (!s.contains('@') || s.contains(char::is_whitespace)) {
        return invalid(format!("`{}` is not an e-mail address", shown(&s)));
    }
    Ok(s)
}

pub(super) fn expiry(expires_in: Option<&str>) -> Result<Option<u64>, AdminError> {
    expires_in
        .map(|d| parse_duration(d).map(|ms| now_ms() + ms))
        .transpose()
        .map_err(AdminError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration("90m"), Ok(90 * 60_000));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400_000));
        for bad in [
            "",
            "d",
            "30",
            "3.5d",
            "-1d",
            "0h",
            "30 days",
            "99999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
