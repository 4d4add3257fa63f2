//! "Did you mean": the closest of some names to a misspelt one. Shared by the run-time error
//! messages (unknown fields and functions) and `engine check`.

/// Levenshtein distance over characters, ASCII case ignored.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Names longer than this are compared only by case: the distance is quadratic.
const MAX_SUGGEST_CHARS: usize = 100;

/// The candidate closest to `name` if close enough to be a likely typo: a case-only difference,
/// or at most one edit per three characters.
pub fn nearest(name: &str, candidates: &[String]) -> Option<String> {
    if let Some(c) = candidates.iter().find(|c| c.eq_ignore_ascii_case(name)) {
        return Some(c.clone());
    }
    let n = name.chars().count();
    if n > MAX_SUGGEST_CHARS {
        return None;
    }
    let limit = (n / 3).max(1);
    candidates
        .iter()
        .filter(|c| c.chars().count() <= MAX_SUGGEST_CHARS)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= limit && *d < n.max(c.chars().count()))
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, c)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_suggestions() {
        assert_eq!(edit_distance("actr", "actor"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        let known: Vec<String> = ["actor", "alternateId", "target"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(nearest("actr", &known).as_deref(), Some("actor"));
        assert_eq!(
            nearest("alternatId", &known).as_deref(),
            Some("alternateId")
        );
        assert_eq!(
            nearest("ALTERNATEID", &known).as_deref(),
            Some("alternateId")
        );
        assert_eq!(nearest("zzz", &known), None);
        assert_eq!(nearest("", &known), None);
    }
}
