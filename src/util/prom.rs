//! Prometheus text exposition: metric families and samples, with every label value escaped here
//! (script and hook names come from file names and the config, and may hold `"`, `\\` or a line
//! break that would otherwise break the text or inject a series).

use std::fmt::{Display, Write};

/// A part that adds its metrics to `/metrics`.
pub trait MetricsSource: Send + Sync {
    /// Appends this part's metric families to `out`.
    fn render_metrics(&self, out: &mut String);
}

/// Writes the `# HELP` and `# TYPE` lines of a family (`kind`: `counter`, `gauge`, `histogram`).
/// The help text escapes backslash and line feed, as the format requires.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample: `name{label="value",…} value`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A family with one unlabelled sample.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl Display) {
    family(out, name, kind, help);
    sample(out, name, &[], value);
}

/// A label value with backslash, double quote and line feed escaped, as the exposition format
/// requires.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_the_text() {
        let mut out = String::new();
        sample(
            &mut out,
            "engine_runs_total",
            &[("script", "quote\"name\\x\nengine_injected_total 42")],
            3,
        );
        assert_eq!(
            out,
            "engine_runs_total{script=\"quote\\\"name\\\\x\\nengine_injected_total 42\"} 3\n"
        );
        assert_eq!(out.lines().count(), 1);
    }

    #[test]
    fn help_text_cannot_break_the_text() {
        let mut out = String::new();
        family(&mut out, "a", "gauge", "one\ntwo \\ three");
        assert_eq!(out, "# HELP a one\\ntwo \\\\ three\n# TYPE a gauge\n");
    }
}
