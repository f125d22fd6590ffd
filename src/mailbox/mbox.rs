//! Reading mbox files (`tern mailbox import ADDRESS FILE`): messages start at `From ` lines; `>From ` lines
//! (any number of `>`) lose one `>` (mboxrd), which also undoes mboxo's quoting of `From ` lines.

/// The messages of an mbox file, each with the date of its `From ` line when it has one (Unix seconds).
pub fn split(data: &[u8]) -> Vec<(Option<u64>, Vec<u8>)> {
    let mut out = Vec::new();
    let _ = for_each(data, &mut |date, body| {
        out.push((date, body));
        Ok(())
    });
    out
}

/// Streams the messages of an mbox: one message in memory at a time, however large the file.
pub fn for_each(
    mut input: impl std::io::BufRead,
    f: &mut dyn FnMut(Option<u64>, Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut current: Option<(Option<u64>, Vec<u8>)> = None;
    let mut at_line_start = true;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let line = line.as_slice();
        if at_line_start && line.starts_with(b"From ") {
            if let Some(m) = current.take() {
                let (date, body) = finish(m);
                f(date, body)?;
            }
            current = Some((from_line_date(line), Vec::new()));
            continue;
        }
        at_line_start = line.ends_with(b"\n");
        let Some((_, body)) = current.as_mut() else {
            continue;
        };
        let stripped = line
            .iter()
            .position(|b| *b != b'>')
            .filter(|&n| n > 0 && line[n..].starts_with(b"From "));
        match stripped {
            Some(_) => body.extend_from_slice(&line[1..]),
            None => body.extend_from_slice(line),
        }
    }
    if let Some(m) = current.take() {
        let (date, body) = finish(m);
        f(date, body)?;
    }
    Ok(())
}

/// Drops the blank line that separates a message from the next `From ` line.
fn finish((date, mut body): (Option<u64>, Vec<u8>)) -> (Option<u64>, Vec<u8>) {
    if body.ends_with(b"\n\n") {
        body.pop();
    } else if body.ends_with(b"\r\n\r\n") {
        body.truncate(body.len() - 2);
    }
    (date, body)
}

/// `From sender Mon Nov 23 10:00:00 2026` → Unix seconds (asctime in UTC).
fn from_line_date(line: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(line);
    let words: Vec<&str> = text.split_whitespace().collect();
    // From, sender, weekday, month, day, time, year
    let (month, day, time, year) = (words.get(3)?, words.get(4)?, words.get(5)?, words.get(6)?);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| x == month)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_and_unquotes_from_lines() {
        let mbox = b"From alice@example.test Mon Nov 23 18:00:00 2026\nSubject: one\n\n>From the start\n>>From deeper\nbody\n\n\
                     From bob@example.test Tue Nov 24 09:30:00 2026\nSubject: two\n\nFrom\n";
        let msgs = super::split(mbox);
        assert_eq!(msgs.len(), 2);
        assert_eq!(
            msgs[0].1,
            b"Subject: one\n\nFrom the start\n>From deeper\nbody\n"
        );
        assert_eq!(msgs[0].0, Some(1_795_456_800));
        assert_eq!(msgs[1].1, b"Subject: two\n\nFrom\n");
    }
}
