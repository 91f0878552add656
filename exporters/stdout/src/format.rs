//! Zilla's event line: `<qname> [dd/MMM/yyyy:HH:mm:ss Z] [<trace id>d] <EVENT_NAME> <message>`.
//!
//! The timestamp is in the local time zone, to the second, with the month abbreviated in
//! English and the offset as `+HHMM`, as Java formats `dd/MMM/yyyy:HH:mm:ss Z`. The trace id is
//! 16 lower-case hex digits followed by a literal `d`: Zilla's format string is `[%016xd]`, and
//! log tooling written against Zilla's output expects that `d`.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Offset, TimeZone, Timelike, Utc};
use zilla_engine::events::Event;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The line for `event` (without the line end), its time shown in `zone`.
pub(crate) fn event_line<Z: TimeZone>(event: &Event, zone: &Z) -> String {
    let time = DateTime::<Utc>::from(event.timestamp).with_timezone(zone);
    let offset_minutes = time.offset().fix().local_minus_utc() / 60;
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let offset_minutes = offset_minutes.unsigned_abs();
    let month = MONTHS.get(time.month0() as usize).copied().unwrap_or("???");
    let mut line =
        String::with_capacity(event.qname.len() + event.name.len() + event.message.len() + 64);
    // Writing into a String cannot fail.
    let _ = write!(
        line,
        "{qname} [{day:02}/{month}/{year:04}:{hour:02}:{minute:02}:{second:02} {sign}{offset_hours:02}{offset_rest:02}] [{trace_id:016x}d] {name} {message}",
        qname = event.qname,
        day = time.day(),
        year = time.year(),
        hour = time.hour(),
        minute = time.minute(),
        second = time.second(),
        offset_hours = offset_minutes / 60,
        offset_rest = offset_minutes % 60,
        trace_id = event.trace_id,
        name = event.name,
        message = event.message,
    );
    line
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use chrono::FixedOffset;

    use super::*;

    fn event(seconds: u64, millis: u64, trace_id: u64) -> Event {
        Event {
            qname: "test:net0".into(),
            timestamp: SystemTime::UNIX_EPOCH
                + Duration::from_secs(seconds)
                + Duration::from_millis(millis),
            trace_id,
            name: "BINDING_TCP_DNS_FAILED",
            message: "Unable to resolve host dns for address example.com:9092.".into(),
        }
    }

    fn zone(seconds_east: i32) -> FixedOffset {
        FixedOffset::east_opt(seconds_east).unwrap()
    }

    #[test]
    fn formats_a_known_event_exactly() {
        // 1700000000 is 2023-11-14 22:13:20 UTC.
        assert_eq!(
            event_line(&event(1_700_000_000, 0, 0x2a), &Utc),
            "test:net0 [14/Nov/2023:22:13:20 +0000] [000000000000002ad] BINDING_TCP_DNS_FAILED \
             Unable to resolve host dns for address example.com:9092."
        );
    }

    #[test]
    fn shows_the_time_in_the_given_zone_with_its_offset() {
        let known = event(1_700_000_000, 0, 1);
        assert!(
            event_line(&known, &zone(-7 * 3600))
                .starts_with("test:net0 [14/Nov/2023:15:13:20 -0700] ")
        );
        assert!(
            event_line(&known, &zone(5 * 3600 + 1800))
                .starts_with("test:net0 [15/Nov/2023:03:43:20 +0530] ")
        );
        assert!(
            event_line(&known, &zone(-(9 * 3600 + 1800)))
                .starts_with("test:net0 [14/Nov/2023:12:43:20 -0930] ")
        );
    }

    #[test]
    fn truncates_to_the_second_and_pads_day_and_time() {
        // 1704164645.999 is 2024-01-02 03:04:05.999 UTC.
        assert!(
            event_line(&event(1_704_164_645, 999, 0), &Utc)
                .starts_with("test:net0 [02/Jan/2024:03:04:05 +0000] [0000000000000000d] ")
        );
    }

    #[test]
    fn writes_the_whole_trace_id_in_hex() {
        let line = event_line(&event(0, 0, u64::MAX), &Utc);
        assert_eq!(
            line,
            "test:net0 [01/Jan/1970:00:00:00 +0000] [ffffffffffffffffd] BINDING_TCP_DNS_FAILED \
             Unable to resolve host dns for address example.com:9092."
        );
        let line = event_line(&event(0, 0, 0x0123_4567_89ab_cdef), &Utc);
        assert!(line.contains(" [0123456789abcdefd] "), "{line}");
    }

    #[test]
    fn every_month_has_its_english_abbreviation() {
        // The 15th of each month of 2024, at noon UTC.
        let starts = [
            1_705_320_000u64,
            1_707_998_400,
            1_710_504_000,
            1_713_182_400,
            1_715_774_400,
            1_718_452_800,
            1_721_044_800,
            1_723_723_200,
            1_726_401_600,
            1_728_993_600,
            1_731_672_000,
            1_734_264_000,
        ];
        for (start, month) in starts.iter().zip(MONTHS) {
            let line = event_line(&event(*start, 0, 0), &Utc);
            assert!(
                line.starts_with(&format!("test:net0 [15/{month}/2024:12:00:00 +0000] ")),
                "{line}"
            );
        }
    }
}
