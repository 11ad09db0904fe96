//! The Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Small enough not to need a crate: a family is its `# HELP` and `# TYPE` lines followed by its
//! samples, and only help text and label values need escaping. Names are fixed strings chosen in
//! this crate, never input, so they are not checked at run time. This module knows nothing about
//! what is measured; `metrics` decides that.

use std::fmt::Write;

/// The `Content-Type` of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a family's samples mean to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (names end in `_total`).
    Counter,
    /// Goes up and down; read at scrape time.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

/// A page of metric families being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// One family: every sample written through it carries its name.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Exposition {
    /// Starts a family: writes its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_into(&mut self.out, help, false);
        self.out.push('\n');
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        Family { out: &mut self.out, name }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

impl Family<'_> {
    /// Writes `name{label="value",...} value`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (n, (label, text)) in labels.iter().enumerate() {
                if n > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_into(self.out, text, true);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

/// Escapes `\` and newlines (help text), and `"` too in label values.
fn escape_into(out: &mut String, text: &str, quoted: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quoted => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(write: impl FnOnce(&mut Exposition), expected: &str) {
        let mut page = Exposition::default();
        write(&mut page);
        assert_eq!(page.finish(), expected);
    }

    #[test]
    fn a_family_has_help_and_type_before_its_samples() {
        check(
            |page| {
                page.family("herald_connections", Kind::Gauge, "Open connections.")
                    .sample(&[("app", "1")], 3)
                    .sample(&[("app", "2")], 0);
                page.family("herald_deliveries_total", Kind::Counter, "Frames written.").sample(&[], 7);
            },
            "# HELP herald_connections Open connections.\n\
             # TYPE herald_connections gauge\n\
             herald_connections{app=\"1\"} 3\n\
             herald_connections{app=\"2\"} 0\n\
             # HELP herald_deliveries_total Frames written.\n\
             # TYPE herald_deliveries_total counter\n\
             herald_deliveries_total 7\n",
        );
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        check(
            |page| {
                page.family("m", Kind::Gauge, "h").sample(&[("app", "a\\b\"c\nd"), ("class", "2xx")], 1);
            },
            "# HELP m h\n# TYPE m gauge\nm{app=\"a\\\\b\\\"c\\nd\",class=\"2xx\"} 1\n",
        );
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        check(
            |page| {
                page.family("m", Kind::Counter, "say \"hi\"\\\nbye");
            },
            "# HELP m say \"hi\"\\\\\\nbye\n# TYPE m counter\n",
        );
    }

    #[test]
    fn labels_keep_their_order_and_unicode() {
        check(
            |page| {
                page.family("m", Kind::Gauge, "h").sample(&[("b", "é"), ("a", "")], 0);
            },
            "# HELP m h\n# TYPE m gauge\nm{b=\"é\",a=\"\"} 0\n",
        );
    }
}
