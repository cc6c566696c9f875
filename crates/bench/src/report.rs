//! The results: one row per figure, rendered as Markdown and put into `docs/BENCHMARKS.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the generated section starts and ends in the output file.
const BEGIN: &str = "<!-- bench:begin (written by scripts/bench.sh; edit outside the markers) -->";
const END: &str = "<!-- bench:end -->";

/// One measured figure.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) workload: &'static str,
    pub(crate) what: String,
    pub(crate) ours: String,
    pub(crate) reference: String,
    pub(crate) ratio: String,
    pub(crate) target: String,
    /// Whether the target is met; `None` where the row has no target.
    pub(crate) met: Option<bool>,
}

/// A comparison of a rate with the peer's, under construction.
#[derive(Debug, Clone)]
pub(crate) struct Compare {
    row: Row,
    ours: f64,
    unit: &'static str,
    ratio_ok: bool,
}

impl Row {
    /// Our rate against distribution's, with a target ratio.
    pub(crate) fn compare(
        workload: &'static str,
        what: &str,
        ours: f64,
        theirs: f64,
        unit: &'static str,
        times: f64,
    ) -> Compare {
        let ratio = ours / theirs;
        Compare {
            row: Row {
                workload,
                what: what.to_owned(),
                ours: format!("{ours:.0} {unit}"),
                reference: format!("distribution: {theirs:.0} {unit}"),
                ratio: format!("{ratio:.2}× distribution"),
                target: format!("≥ {times}× distribution"),
                met: Some(ratio >= times),
            },
            ours,
            unit,
            ratio_ok: ratio >= times,
        }
    }
}

impl Compare {
    /// An absolute target as well.
    pub(crate) fn with_floor(mut self, floor: f64) -> Compare {
        self.row.target = format!("≥ {floor:.0} {} and {}", self.unit, self.row.target);
        self.row.met = Some(self.ratio_ok && self.ours >= floor);
        self
    }

    /// One more condition of the target, in words, and whether it holds.
    pub(crate) fn also(mut self, target: &str, ok: bool) -> Compare {
        self.row.target = format!("{} and {target}", self.row.target);
        self.ratio_ok &= ok;
        self.row.met = self.row.met.map(|met| met && ok);
        self
    }

    /// The machine's limit for this figure, shown as a share.
    pub(crate) fn with_limit(mut self, limit: f64) -> Compare {
        self.row.ratio = format!("{}; {:.0}% of the limit", self.row.ratio, 100.0 * self.ours / limit);
        self
    }

    pub(crate) fn with_note(mut self, note: String) -> Compare {
        self.row.ours = format!("{} ({note})", self.row.ours);
        self
    }
}

impl From<Compare> for Row {
    fn from(compare: Compare) -> Row {
        compare.row
    }
}

/// Every row of one run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    rows: Vec<Row>,
    limits: Vec<(&'static str, String, String)>,
}

impl Report {
    pub(crate) fn push(&mut self, row: impl Into<Row>) {
        self.rows.push(row.into());
    }

    /// A limit of the machine measured for a workload.
    pub(crate) fn limit(&mut self, workload: &'static str, what: &str, value: String) {
        self.limits.push((workload, what.to_owned(), value));
    }

    /// The figures whose targets were missed.
    pub(crate) fn missed(&self) -> Vec<String> {
        self.rows.iter().filter(|r| r.met == Some(false)).map(|r| format!("{} ({})", r.workload, r.what)).collect()
    }

    pub(crate) fn markdown(&self, command: &str, quick: bool) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "Measured {} with `{command}`{}.\n\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            if quick { " (quick mode: tiny counts, the figures mean nothing)" } else { "" }
        ));
        out.push_str(&format!("Machine: {}.\n\n", machine()));
        out.push_str("The machine's limits, measured in the same run:\n\n| # | limit | measured |\n|---|---|---|\n");
        for (workload, what, value) in &self.limits {
            out.push_str(&format!("| {workload} | {what} | {value} |\n"));
        }
        out.push_str("\n| # | workload | artifactstore | peer or limit | ratio | target | met |\n|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {met} |\n",
                r.workload, r.what, r.ours, r.reference, r.ratio, r.target
            ));
        }
        out
    }
}

/// Cores, CPU model, memory and kernel, as the system reports them.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({}), {:.0} GiB, Linux {}",
        model.unwrap_or_else(|| "unknown CPU".into()),
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// Replaces the text between the bench markers of `path` (appending a marked section if there is none).
pub(crate) fn write_between_markers(path: &Path, markdown: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{BEGIN}\n{markdown}{END}");
    let updated = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &text[..b], &text[e + END.len()..]),
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    std::fs::write(path, updated)?;
    Ok(())
}

/// Bytes as MiB with one decimal.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The `q` quantile (0 to 1) of some durations (sorts them).
pub(crate) fn percentile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[index]
}

/// Every file under `dir` of exactly `size` bytes (the stored blobs of one size).
pub(crate) fn files_under(dir: &Path, size: u64) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.len() == size {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&mut v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&mut v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
    }

    #[test]
    fn markers_are_replaced_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.md");
        std::fs::write(&path, "# Title\n\nhand-written\n").unwrap();
        write_between_markers(&path, "first\n").unwrap();
        write_between_markers(&path, "second\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Title\n\nhand-written\n"));
        assert!(text.contains("second\n") && !text.contains("first\n"));
        assert_eq!(text.matches(BEGIN).count(), 1);
    }
}
