//! The date extension's parts (RFC 5260 section 4.2) of a date and time in some zone.

use mail_parser::DateTime;

/// The date parts the `date` and `currentdate` tests know.
pub const PARTS: &[&str] = &[
    "year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601",
    "std11", "zone", "weekday",
];

/// A zone argument (`+0100`, `-0830`) as seconds east of UTC.
pub fn parse_zone(z: &str) -> Option<i64> {
    let b = z.as_bytes();
    if b.len() != 5 || !matches!(b[0], b'+' | b'-') || !b[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let h: i64 = z[1..3].parse().ok()?;
    let m: i64 = z[3..5].parse().ok()?;
    if h > 23 || m > 59 {
        return None;
    }
    let s = h * 3600 + m * 60;
    Some(if b[0] == b'-' { -s } else { s })
}

/// The server's UTC offset now, in seconds.
pub fn local_offset(unix: i64) -> i64 {
    let t = unix as libc::time_t;
    // SAFETY: localtime_r writes only into the tm we pass; both pointers are valid for the call.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

/// A Unix time as a date in the zone `offset` seconds east of UTC.
pub fn at(unix: i64, offset: i64) -> DateTime {
    let mut dt = DateTime::from_timestamp(unix + offset);
    dt.tz_before_gmt = offset < 0;
    dt.tz_hour = (offset.abs() / 3600) as u8;
    dt.tz_minute = ((offset.abs() % 3600) / 60) as u8;
    dt
}

fn zone(dt: &DateTime) -> String {
    format!(
        "{}{:02}{:02}",
        if dt.tz_before_gmt { '-' } else { '+' },
        dt.tz_hour,
        dt.tz_minute
    )
}

/// One part of a date, as RFC 5260 writes it; `None` for an unknown part.
pub fn part(dt: &DateTime, name: &str) -> Option<String> {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    Some(match name.to_ascii_lowercase().as_str() {
        "year" => format!("{:04}", dt.year),
        "month" => format!("{:02}", dt.month),
        "day" => format!("{:02}", dt.day),
        "date" => format!("{:04}-{:02}-{:02}", dt.year, dt.month, dt.day),
        // Modified Julian Day: days since 1858-11-17.
        "julian" => (dt.julian_day() - 2_400_001).to_string(),
        "hour" => format!("{:02}", dt.hour),
        "minute" => format!("{:02}", dt.minute),
        "second" => format!("{:02}", dt.second),
        "time" => format!("{:02}:{:02}:{:02}", dt.hour, dt.minute, dt.second),
        "iso8601" => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}:{:02}",
            dt.year,
            dt.month,
            dt.day,
            dt.hour,
            dt.minute,
            dt.second,
            if dt.tz_before_gmt { '-' } else { '+' },
            dt.tz_hour,
            dt.tz_minute
        ),
        "std11" => format!(
            "{}, {} {} {:04} {:02}:{:02}:{:02} {}",
            DAYS[usize::from(dt.day_of_week()) % 7],
            dt.day,
            MONTHS[usize::from(dt.month.clamp(1, 12)) - 1],
            dt.year,
            dt.hour,
            dt.minute,
            dt.second,
            zone(dt)
        ),
        "zone" => zone(dt),
        "weekday" => dt.day_of_week().to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_date() {
        let dt = DateTime::parse_rfc822("Tue, 1 Dec 2026 09:05:07 +0100").unwrap();
        assert_eq!(part(&dt, "date").unwrap(), "2026-12-01");
        assert_eq!(part(&dt, "time").unwrap(), "09:05:07");
        assert_eq!(part(&dt, "zone").unwrap(), "+0100");
        assert_eq!(part(&dt, "weekday").unwrap(), "2");
        assert_eq!(part(&dt, "iso8601").unwrap(), "2026-12-01T09:05:07+01:00");
        assert_eq!(
            part(&dt, "std11").unwrap(),
            "Tue, 1 Dec 2026 09:05:07 +0100"
        );
        let mjd0 = DateTime::parse_rfc822("Wed, 17 Nov 1858 00:00:00 +0000").unwrap();
        assert_eq!(part(&mjd0, "julian").unwrap(), "0");
        let utc = at(dt.to_timestamp(), parse_zone("-0500").unwrap());
        assert_eq!(part(&utc, "time").unwrap(), "03:05:07");
        assert_eq!(part(&utc, "zone").unwrap(), "-0500");
        assert_eq!(parse_zone("+2460"), None);
    }
}
