//! Arithmetic on time ranges `[start, end)` where `None` is unbounded.

/// The later of two starts (`None` = unbounded).
pub fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The earlier of two ends (`None` = unbounded).
pub fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Whether `[start, end)` holds nothing.
pub fn is_empty_range(start: Option<i64>, end: Option<i64>) -> bool {
    matches!((start, end), (Some(a), Some(b)) if a >= b)
}

/// The parts of `range` that none of `covers` (non-overlapping ranges) contains.
pub fn subtract(
    range: (Option<i64>, Option<i64>),
    covers: &[(Option<i64>, Option<i64>)],
) -> Vec<(Option<i64>, Option<i64>)> {
    let lo = |v: Option<i64>| v.unwrap_or(i64::MIN);
    let hi = |v: Option<i64>| v.unwrap_or(i64::MAX);
    let mut sorted: Vec<(i64, i64)> = covers.iter().map(|(a, b)| (lo(*a), hi(*b))).collect();
    sorted.sort();
    let (mut cur, end) = (lo(range.0), hi(range.1));
    let mut out = Vec::new();
    for (a, b) in sorted {
        if b <= cur || a >= end {
            continue;
        }
        if a > cur {
            out.push((cur, a));
        }
        cur = cur.max(b);
        if cur >= end {
            break;
        }
    }
    if cur < end {
        out.push((cur, end));
    }
    let back = |v: i64| (v != i64::MIN && v != i64::MAX).then_some(v);
    out.into_iter().map(|(a, b)| (back(a), back(b))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracts_ranges() {
        assert_eq!(
            subtract(
                (Some(0), Some(10)),
                &[(Some(2), Some(4)), (Some(6), Some(8))]
            ),
            vec![(Some(0), Some(2)), (Some(4), Some(6)), (Some(8), Some(10))]
        );
        assert_eq!(subtract((Some(0), Some(10)), &[(None, Some(20))]), vec![]);
        assert_eq!(
            subtract((Some(0), None), &[(Some(0), Some(5))]),
            vec![(Some(5), None)]
        );
    }

    #[test]
    fn clips() {
        assert_eq!(max_opt(None, Some(3)), Some(3));
        assert_eq!(min_opt(Some(5), Some(3)), Some(3));
        assert!(is_empty_range(Some(3), Some(3)));
        assert!(!is_empty_range(None, Some(3)));
    }
}
