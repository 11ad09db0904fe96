//! Printing results: an aligned table for people and one JSON line for scripts.

pub fn print(title: &str, rows: &[(&str, String)], json: serde_json::Value) {
    println!("\n{title}");
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("  {key:<width$}  {value}");
    }
    println!("{json}");
}

/// The value at quantile `q` of sorted `values`.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Latency quantiles in milliseconds, from microseconds (sorted here).
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(latencies_us: &mut [u64]) -> Self {
        latencies_us.sort_unstable();
        let q = |p| quantile(latencies_us, p) as f64 / 1000.0;
        Self { p50: q(0.5), p90: q(0.9), p99: q(0.99), p999: q(0.999), max: q(1.0) }
    }
}

/// A table with a header row, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).chain([header[c].len()]).max().unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, &w)| format!("{cell:>w$}")).collect();
        println!("  {}", padded.join("  "));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Microseconds of CPU per delivery, or `None` without a measurement.
pub fn per_delivery_us(cpu_seconds: Option<f64>, delivered: u64) -> Option<f64> {
    cpu_seconds.map(|c| c * 1e6 / delivered.max(1) as f64)
}

/// `1.23 µs`, or the hint when there is no figure.
pub fn micros(value: Option<f64>, hint: &str) -> String {
    value.map_or_else(|| hint.to_owned(), |v| format!("{v:.2} µs"))
}
