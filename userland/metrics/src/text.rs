//! The Prometheus text exposition format (0.0.4): metric families (`# HELP`, `# TYPE`)
//! followed by their samples, label values escaped (`\\`, `\"`, `\n`).

use alloc::string::String;
use core::fmt::Write as _;

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Whether `name` is a valid metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`; label
/// names may not contain `:` but ours never do).
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Writes a whole exposition into a string.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    pub fn new() -> Writer {
        Writer { out: String::new() }
    }

    /// Starts a family: its help and type lines. Counters' names end in `_total`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "{name}");
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "{name}");
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push_str(match kind {
            Kind::Counter => " counter\n",
            Kind::Gauge => " gauge\n",
        });
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                debug_assert!(valid_name(label), "{label}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                escape_label_value(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// One sample whose value is `thousandths / 1000` (milliseconds shown as seconds).
    pub fn sample_milli(&mut self, name: &str, labels: &[(&str, &str)], thousandths: u64) {
        let start = self.out.len();
        self.sample(name, labels, thousandths / 1000);
        // Replace the trailing "\n" with the fraction.
        self.out.truncate(self.out.len() - 1);
        let _ = writeln!(self.out, ".{:03}", thousandths % 1000);
        debug_assert!(self.out.len() > start);
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn families_and_escaped_samples() {
        let mut w = Writer::new();
        w.family("gridos_workload_cpu_seconds_total", Kind::Counter, "CPU time.\nBack\\slash");
        w.sample("gridos_workload_cpu_seconds_total", &[("name", "a\"b\\c\nd"), ("id", "7")], 3);
        w.single("gridos_uptime_seconds", Kind::Gauge, "Uptime.", 12);
        assert_eq!(
            w.finish(),
            "# HELP gridos_workload_cpu_seconds_total CPU time.\\nBack\\\\slash\n\
             # TYPE gridos_workload_cpu_seconds_total counter\n\
             gridos_workload_cpu_seconds_total{name=\"a\\\"b\\\\c\\nd\",id=\"7\"} 3\n\
             # HELP gridos_uptime_seconds Uptime.\n\
             # TYPE gridos_uptime_seconds gauge\n\
             gridos_uptime_seconds 12\n"
        );
    }

    #[test]
    fn milli_values_print_as_decimals() {
        let mut w = Writer::new();
        w.sample_milli("a_seconds", &[], 12_034);
        w.sample_milli("b_seconds", &[("x", "y")], 7);
        assert_eq!(w.finish(), "a_seconds 12.034\nb_seconds{x=\"y\"} 0.007\n");
    }

    #[test]
    fn names() {
        assert!(valid_name("gridos_node_heap_used_bytes"));
        assert!(valid_name("_a:b1"));
        assert!(!valid_name("1a"));
        assert!(!valid_name(""));
        assert!(!valid_name("a-b"));
    }
}
