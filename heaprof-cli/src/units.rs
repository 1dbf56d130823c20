//! Formatting values for people, by the sample type's unit: bytes in binary units
//! (`8MiB`, `1.50KiB`), nanoseconds in `ns`/`us`/`ms`/`s`, anything else as a plain number;
//! and profile times as UTC dates. Pure functions, used by `table` and `flame`.

/// `v` in `unit`, scaled, with two decimals unless they are `.00` (like pprof).
pub fn format(v: i64, unit: &str) -> String {
    let steps: &[(f64, &str)] = match unit {
        "bytes" => &[
            (1.0, "B"),
            (1024.0, "KiB"),
            (1048576.0, "MiB"),
            (1073741824.0, "GiB"),
            (1099511627776.0, "TiB"),
        ],
        "nanoseconds" => &[(1.0, "ns"), (1e3, "us"), (1e6, "ms"), (1e9, "s")],
        _ => return v.to_string(),
    };
    let a = v.unsigned_abs() as f64;
    let (div, name) = steps
        .iter()
        .rev()
        .find(|(d, _)| a >= *d)
        .copied()
        .unwrap_or(steps[0]);
    let n = format!("{:.2}", a / div);
    let n = n.strip_suffix(".00").unwrap_or(&n);
    format!("{}{n}{name}", if v < 0 { "-" } else { "" })
}

/// Like [`format()`] with a `+` on positive values: for growth.
pub fn signed(v: i64, unit: &str) -> String {
    if v > 0 {
        format!("+{}", format(v, unit))
    } else {
        format(v, unit)
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0), as `12.34%`.
pub fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{:.2}%", part as f64 * 100.0 / whole as f64)
}

/// A Unix time in ns as `YYYY-MM-DD hh:mm:ss UTC` (proleptic Gregorian calendar).
pub fn utc(time_nanos: i64) -> String {
    let secs = time_nanos.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Days since 1970-01-01 → civil date (H. Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_like_pprof_with_binary_units() {
        assert_eq!(format(512, "bytes"), "512B");
        assert_eq!(format(8 << 20, "bytes"), "8MiB");
        assert_eq!(format(1536, "bytes"), "1.50KiB");
        assert_eq!(format(-(3 << 30), "bytes"), "-3GiB");
        assert_eq!(format(0, "bytes"), "0B");
        assert_eq!(format(10_000_000, "nanoseconds"), "10ms");
        assert_eq!(format(1_234_000_000, "nanoseconds"), "1.23s");
        assert_eq!(format(1234, "count"), "1234");
        assert_eq!(signed(1 << 20, "bytes"), "+1MiB");
        assert_eq!(signed(-(1 << 20), "bytes"), "-1MiB");
        assert_eq!(percent(1, 3), "33.33%");
        assert_eq!(percent(1, 0), "0%");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // 2000-02-29 12:34:56 UTC = 951827696 s.
        assert_eq!(utc(951_827_696_000_000_000), "2000-02-29 12:34:56 UTC");
        assert_eq!(utc(-1_000_000_000), "1969-12-31 23:59:59 UTC");
    }
}
