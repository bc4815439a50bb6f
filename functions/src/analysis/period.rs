//! Calendar periods in UTC (days, weeks from Monday, months) and small statistics.

use serde::{Deserialize, Serialize};

/// A day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// A calendar period, in UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Days.
    Day,
    /// Weeks, from Monday.
    #[default]
    Week,
    /// Calendar months.
    Month,
}

impl Period {
    /// The number of the period `ms` falls in (consecutive periods have consecutive numbers).
    pub fn index(self, ms: i64) -> i64 {
        let day = ms.div_euclid(DAY_MS);
        match self {
            Period::Day => day,
            // 1970-01-01 was a Thursday: Monday-based weeks start 3 days before it.
            Period::Week => (day + 3).div_euclid(7),
            Period::Month => {
                let (year, month, _) = civil(day);
                year * 12 + i64::from(month) - 1
            }
        }
    }

    /// When period number `index` starts (ms).
    pub fn start(self, index: i64) -> i64 {
        match self {
            Period::Day => index * DAY_MS,
            Period::Week => (index * 7 - 3) * DAY_MS,
            Period::Month => days_from_civil(index.div_euclid(12), (index.rem_euclid(12) + 1) as u32, 1) * DAY_MS,
        }
    }
}

/// (year, month, day) of a day number since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The day number since 1970-01-01 of a date (`days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The median of `values` (sorted in place); none when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::time::UtcTime;

    fn ms(text: &str) -> i64 {
        UtcTime::parse(text).unwrap().unix_millis()
    }

    #[test]
    fn periods_are_utc_days_monday_weeks_and_calendar_months() {
        // 2026-03-04 is a Wednesday.
        let at = ms("2026-03-04T23:59:59Z");
        assert_eq!(Period::Day.start(Period::Day.index(at)), ms("2026-03-04T00:00:00Z"));
        assert_eq!(Period::Week.start(Period::Week.index(at)), ms("2026-03-02T00:00:00Z"), "the Monday before");
        assert_eq!(Period::Week.index(ms("2026-03-08T23:00:00Z")), Period::Week.index(at), "Sunday ends the week");
        assert_eq!(Period::Week.index(ms("2026-03-09T00:00:00Z")), Period::Week.index(at) + 1);
        assert_eq!(Period::Month.start(Period::Month.index(at)), ms("2026-03-01T00:00:00Z"));
        assert_eq!(Period::Month.start(Period::Month.index(at) + 10), ms("2027-01-01T00:00:00Z"));
        assert_eq!(
            Period::Month.index(ms("2024-02-29T12:00:00Z")) + 1,
            Period::Month.index(ms("2024-03-01T00:00:00Z"))
        );
        for days in [-800_000, -1, 0, 59, 10_000, 20_513, 2_932_896] {
            let (y, m, d) = civil(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
