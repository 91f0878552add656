//! Topic names and topic filters (MQTT 4.7), and matching one against the other.

/// Whether `name` is a valid topic name to publish to: not empty, no wildcards.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', '#'])
}

/// The parts of a shared subscription (`$share/<group>/<filter>`), if `filter` is one.
pub fn shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    rest.split_once('/').or(Some((rest, "")))
}

/// Whether `filter` is a valid topic filter: not empty, `#` only as the whole last level,
/// `+` only as a whole level; a shared subscription names a group without wildcards.
pub fn valid_filter(filter: &str) -> bool {
    let filter = match shared(filter) {
        Some((group, inner)) => {
            if group.is_empty() || group.contains(['+', '#']) {
                return false;
            }
            inner
        }
        None => filter,
    };
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            level if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// Whether `filter` contains a wildcard.
pub fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// Whether topic `name` matches `filter` (both valid). Names starting with `$` are not
/// matched by a filter starting with a wildcard (MQTT 4.7.2).
pub fn matches(filter: &str, name: &str) -> bool {
    let filter = shared(filter).map_or(filter, |(_, inner)| inner);
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut names = name.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if names.next().is_none() {
                    return false;
                }
            }
            level => {
                if names.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    names.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters() {
        assert!(valid_name("a/b"));
        assert!(valid_name("/"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/+"));
        assert!(!valid_name("a/#"));
        for good in [
            "#",
            "+",
            "a/+/b",
            "a/#",
            "+/+",
            "/",
            "$share/g/a/#",
            "sport/tennis/#",
        ] {
            assert!(valid_filter(good), "{good}");
        }
        for bad in [
            "",
            "a/#/b",
            "a#",
            "a/b+",
            "$share//a",
            "$share/g+/a",
            "$share/g",
            "#/",
        ] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }

    #[test]
    fn matching() {
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("+/+", "/x"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("$share/g/a/+", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
    }
}
