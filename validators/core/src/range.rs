//! The interval syntax of `range`: `[min,max]`, `(min,max)`, or a mix; either bound may be
//! left out, for no bound on that side.

/// A parsed `range`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range<T> {
    /// The lower bound and whether it is included.
    pub min: Option<(T, bool)>,
    /// The upper bound and whether it is included.
    pub max: Option<(T, bool)>,
}

impl<T: PartialOrd + Copy + std::str::FromStr> Range<T> {
    /// Parses `text`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an interval such as `[0,100)` or `(,10]`");
        let mut chars = text.chars();
        let open = chars.next().ok_or_else(bad)?;
        let close = chars.next_back().ok_or_else(bad)?;
        let min_included = match open {
            '[' => true,
            '(' => false,
            _ => return Err(bad()),
        };
        let max_included = match close {
            ']' => true,
            ')' => false,
            _ => return Err(bad()),
        };
        let (min, max) = chars.as_str().split_once(',').ok_or_else(bad)?;
        let bound = |text: &str| -> Result<Option<T>, String> {
            if text.is_empty() {
                Ok(None)
            } else {
                text.trim().parse::<T>().map(Some).map_err(|_| bad())
            }
        };
        let range = Self {
            min: bound(min)?.map(|value| (value, min_included)),
            max: bound(max)?.map(|value| (value, max_included)),
        };
        if let (Some((min, _)), Some((max, _))) = (range.min, range.max)
            && min > max
        {
            return Err(format!(
                "`{text}` is empty: its lower bound is above its upper"
            ));
        }
        Ok(range)
    }

    /// Whether `value` lies in the interval.
    pub fn contains(&self, value: T) -> bool {
        let above_min = match self.min {
            None => true,
            Some((min, true)) => value >= min,
            Some((min, false)) => value > min,
        };
        let below_max = match self.max {
            None => true,
            Some((max, true)) => value <= max,
            Some((max, false)) => value < max,
        };
        above_min && below_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_or_exclusive_as_bracketed() {
        let range = Range::<i64>::parse("[0,100)").unwrap();
        assert!(range.contains(0));
        assert!(range.contains(99));
        assert!(!range.contains(100));
        assert!(!range.contains(-1));
        let range = Range::<i64>::parse("(-5,5]").unwrap();
        assert!(!range.contains(-5));
        assert!(range.contains(5));
        let open = Range::<i64>::parse("[,10]").unwrap();
        assert!(open.contains(i64::MIN));
        assert!(!open.contains(11));
        let open = Range::<i64>::parse("(3,)").unwrap();
        assert!(open.contains(i64::MAX));
        assert!(!open.contains(3));
        let decimal = Range::<f64>::parse("[0.5,1.5)").unwrap();
        assert!(decimal.contains(0.5));
        assert!(!decimal.contains(1.5));
    }

    #[test]
    fn malformed_intervals_are_refused() {
        for bad in ["", "[", "0,1", "[0;1]", "{0,1}", "[a,1]", "[2,1]", "[0,1"] {
            assert!(Range::<i64>::parse(bad).is_err(), "{bad}");
        }
    }
}
