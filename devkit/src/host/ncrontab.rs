//! NCRONTAB schedules as the timer trigger reads them: six fields
//! (`{second} {minute} {hour} {day} {month} {day-of-week}`), or five without the seconds (WebJobs'
//! `CronSchedule.HasSeconds`: exactly five space-separated fields mean no seconds field, so the
//! schedule fires at second 0). Day-of-month and day-of-week must both match (NCrontab ANDs
//! them, unlike Vixie cron).

use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid NCRONTAB {expr:?}: {reason}")]
pub struct ScheduleError {
    pub expr: String,
    pub reason: String,
}

/// A parsed schedule: one bit set per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError {
            expr: expr.to_string(),
            reason,
        };
        // Split as the host does: on spaces, empty entries removed.
        let mut fields: Vec<&str> = expr.split(' ').filter(|f| !f.is_empty()).collect();
        match fields.len() {
            5 => fields.insert(0, "0"),
            6 => {}
            n => {
                return Err(err(format!(
                    "{n} fields; the timer trigger takes 6 (seconds first) or 5 (no seconds)"
                )))
            }
        }
        let f = |i: usize, name: &str, lo: u32, hi: u32, names: &[&str]| {
            parse_field(fields[i], lo, hi, names)
                .map_err(|r| err(format!("{name} field {:?}: {r}", fields[i])))
        };
        let mut weekdays = f(5, "day-of-week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Self {
            seconds: f(0, "second", 0, 59, &[])?,
            minutes: f(1, "minute", 0, 59, &[])?,
            hours: f(2, "hour", 0, 23, &[])?,
            days: f(3, "day", 1, 31, &[])?,
            months: f(4, "month", 1, 12, &MONTHS)?,
            weekdays,
        })
    }

    /// The first occurrence strictly after `t` (UTC), searched up to five years ahead.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let mut t = t.replace_nanosecond(0).ok()? + Duration::SECOND;
        let limit = t + Duration::days(5 * 366);
        let has = |mask: u64, v: u32| mask & (1u64 << v) != 0;
        while t < limit {
            if !has(self.months, u8::from(t.month()) as u32) {
                let (y, m) = if t.month() == time::Month::December {
                    (t.year() + 1, time::Month::January)
                } else {
                    (t.year(), t.month().next())
                };
                t = time::Date::from_calendar_date(y, m, 1)
                    .ok()?
                    .midnight()
                    .assume_utc();
                continue;
            }
            if !has(self.days, t.day() as u32)
                || !has(self.weekdays, t.weekday().number_days_from_sunday() as u32)
            {
                t = (t.date().next_day()?).midnight().assume_utc();
                continue;
            }
            if !has(self.hours, t.hour() as u32) {
                t = t.replace_minute(0).ok()?.replace_second(0).ok()? + Duration::HOUR;
                continue;
            }
            if !has(self.minutes, t.minute() as u32) {
                t = t.replace_second(0).ok()? + Duration::MINUTE;
                continue;
            }
            if !has(self.seconds, t.second() as u32) {
                t += Duration::SECOND;
                continue;
            }
            return Some(t);
        }
        None
    }
}

fn parse_value(s: &str, names: &[&str], base: u32) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(&s[..s.len().min(3)]) && s.len() >= 3)
        .map(|i| i as u32 + base)
        .ok_or_else(|| format!("{s:?} is not a number"))
}

fn parse_field(field: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let base = if names.len() == 12 { 1 } else { 0 };
    let mut mask = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("step {s:?} is not a number"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err("step 0".into());
        }
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (parse_value(a, names, base)?, parse_value(b, names, base)?)
        } else {
            let a = parse_value(range, names, base)?;
            (a, if part.contains('/') { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("{range:?} is outside {lo}-{hi}"));
        }
        let mut v = a;
        while v <= b {
            mask |= 1u64 << v;
            v += step;
        }
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn every_fifteen_minutes() {
        let s = Schedule::parse("0 */15 * * * *").unwrap();
        assert_eq!(
            s.next_after(datetime!(2026-12-01 23:07:13 UTC)),
            Some(datetime!(2026-12-01 23:15:00 UTC))
        );
        assert_eq!(
            s.next_after(datetime!(2026-12-01 23:45:00 UTC)),
            Some(datetime!(2026-12-02 00:00:00 UTC))
        );
    }

    #[test]
    fn weekdays_and_names() {
        let s = Schedule::parse("30 0 9 * Dec Mon-Fri").unwrap();
        // 2026-12-05 is a Saturday.
        assert_eq!(
            s.next_after(datetime!(2026-12-04 10:00:00 UTC)),
            Some(datetime!(2026-12-07 09:00:30 UTC))
        );
    }

    #[test]
    fn five_fields_have_no_seconds() {
        let five = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(five, Schedule::parse("0 */5 * * * *").unwrap());
        assert_eq!(
            five.next_after(datetime!(2026-12-01 23:07:13 UTC)),
            Some(datetime!(2026-12-01 23:10:00 UTC))
        );
        // Extra spaces are not fields, as in the host's split.
        assert_eq!(
            Schedule::parse(" 30  9 * * Mon-Fri ").unwrap(),
            Schedule::parse("0 30 9 * * Mon-Fri").unwrap()
        );
    }

    #[test]
    fn other_field_counts_or_garbage_are_refused() {
        for expr in ["* * * *", "0 0 * * * * *", ""] {
            let e = Schedule::parse(expr).unwrap_err();
            assert!(e.reason.contains("6 (seconds first) or 5"), "{e}");
        }
        assert!(Schedule::parse("0 61 * * * *").is_err());
        assert!(Schedule::parse("0 */0 * * * *").is_err());
    }
}
