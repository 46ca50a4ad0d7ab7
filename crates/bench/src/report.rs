//! The results: one [`Row`] per figure, printed as a table on the terminal and written as Markdown
//! between markers in `docs/benchmarks.md`, so hand-written analysis around them survives a rerun.
//! A full run and a `--quick` run each own their own block.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::machine::Machine;
use crate::stats::Summary;

/// How a figure's value reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Operations per second.
    PerSec,
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
    /// MiB per second.
    MibPerSec,
    /// KiB.
    Kib,
    /// A count of clients.
    Clients,
    /// A share, in percent.
    Percent,
}

impl Unit {
    fn value(self, v: f64) -> String {
        match self {
            Unit::PerSec | Unit::Clients => grouped(v.round() as u64),
            Unit::Percent => format!("{v:.0}"),
            Unit::Micros | Unit::Millis | Unit::Kib if v < 10.0 => format!("{v:.2}"),
            Unit::Micros | Unit::Millis | Unit::Kib if v < 100.0 => format!("{v:.1}"),
            Unit::Micros | Unit::Millis | Unit::Kib | Unit::MibPerSec => grouped(v.round() as u64),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Unit::PerSec => "/s",
            Unit::Micros => " µs",
            Unit::Millis => " ms",
            Unit::MibPerSec => " MiB/s",
            Unit::Kib => " KiB",
            Unit::Clients => "",
            Unit::Percent => " %",
        }
    }

    /// `v` with its unit.
    pub fn show(self, v: f64) -> String {
        format!("{}{}", self.value(v), self.suffix())
    }

    /// Median with the unit, then (min–max) of the runs.
    pub fn show_summary(self, s: &Summary) -> String {
        if s.runs == 1 || s.min == s.max {
            return format!("{} ({} run{})", self.show(s.median), s.runs, if s.runs == 1 { "" } else { "s" });
        }
        format!("{} ({}–{})", self.show(s.median), self.value(s.min), self.value(s.max))
    }
}

/// Digits in groups of three, separated by thin spaces.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

/// What a figure should reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Reported, no target.
    Report,
    /// Reported with its ratio to the baseline, no target.
    ReportRatio,
    /// The median must be at least this.
    AtLeast(f64),
    /// The median must be below this.
    Below(f64),
    /// The median must be at most this.
    AtMost(f64),
    /// The median divided by the baseline's must be at least this.
    RatioAtLeast(f64),
}

/// The baseline measured beside a figure.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// The figure has none.
    None,
    /// It could not be measured here; why.
    Unavailable(String),
    /// Measured in the same run.
    Measured(Summary),
}

/// One figure.
#[derive(Clone, Debug)]
pub struct Row {
    /// Short id, also the `--only` name of the group that measures it.
    pub group: &'static str,
    /// What is measured.
    pub figure: String,
    /// How it reads.
    pub unit: Unit,
    /// Our result, or why it failed.
    pub ours: Result<Summary, String>,
    /// The baseline.
    pub baseline: Baseline,
    /// What it should reach.
    pub target: Target,
}

impl Row {
    /// Our median over the baseline's.
    pub fn ratio(&self) -> Option<f64> {
        match (&self.ours, &self.baseline) {
            (Ok(ours), Baseline::Measured(base)) if base.median > 0.0 => Some(ours.median / base.median),
            _ => None,
        }
    }

    fn ours_text(&self) -> String {
        match &self.ours {
            Ok(s) => self.unit.show_summary(s),
            // A group that could not run here (no root for its lab) says so, not that it failed.
            Err(e) if e.starts_with("skipped") => e.clone(),
            Err(e) => format!("failed: {e}"),
        }
    }

    fn baseline_text(&self) -> String {
        match &self.baseline {
            Baseline::None => "—".into(),
            Baseline::Unavailable(why) => format!("baseline unavailable ({why})"),
            Baseline::Measured(s) => self.unit.show_summary(s),
        }
    }

    fn ratio_text(&self) -> String {
        self.ratio().map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into())
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::Report => "report".into(),
            Target::ReportRatio => "report ratio".into(),
            Target::AtLeast(t) => format!("≥ {}", self.unit.show(t)),
            Target::Below(t) => format!("< {}", self.unit.show(t)),
            Target::AtMost(t) => format!("≤ {}", self.unit.show(t)),
            Target::RatioAtLeast(r) => format!("≥ {r}× baseline"),
        }
    }

    /// "yes", "NO", "—" (no target) or "n/a" (baseline missing, or our measurement failed).
    pub fn verdict(&self) -> &'static str {
        let Ok(ours) = &self.ours else { return "n/a" };
        match self.target {
            Target::Report | Target::ReportRatio => "—",
            Target::AtLeast(t) => yes_no(ours.median >= t),
            Target::Below(t) => yes_no(ours.median < t),
            Target::AtMost(t) => yes_no(ours.median <= t),
            Target::RatioAtLeast(r) => match self.ratio() {
                Some(ratio) => yes_no(ratio >= r),
                None => "n/a",
            },
        }
    }
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

/// A group of figures measured together, with how they were measured.
pub struct Section {
    /// The `--only` name.
    pub group: &'static str,
    /// Its rows.
    pub rows: Vec<Row>,
    /// Method and parameters, one Markdown bullet each, including the exact baseline commands.
    pub details: Vec<String>,
}

/// Prints every row as an aligned table.
pub fn print_table(sections: &[Section]) {
    let header = ["figure", "whatsap2p median (min–max)", "baseline", "ratio", "target", "met"];
    let rows: Vec<[String; 6]> = sections
        .iter()
        .flat_map(|s| &s.rows)
        .map(|r| {
            [
                r.figure.clone(),
                r.ours_text(),
                r.baseline_text(),
                r.ratio_text(),
                r.target_text(),
                r.verdict().to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            let pad = w - cell.chars().count();
            let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
        }
        println!("{}", out.trim_end());
    };
    line(&header.map(String::from));
    line(&widths.map(|w| "-".repeat(w)));
    for r in &rows {
        line(r);
    }
}

/// Everything the Markdown block needs besides the sections.
pub struct RunInfo<'a> {
    /// `--quick` or full.
    pub quick: bool,
    /// When it ran.
    pub date: String,
    /// Where it ran.
    pub machine: &'a Machine,
    /// The command line that produced it.
    pub command: String,
    /// How long the whole run took, in seconds.
    pub elapsed_secs: f64,
}

fn markers(quick: bool) -> (&'static str, &'static str) {
    if quick {
        ("<!-- whatsap2p-bench:quick:begin -->", "<!-- whatsap2p-bench:quick:end -->")
    } else {
        ("<!-- whatsap2p-bench:full:begin -->", "<!-- whatsap2p-bench:full:end -->")
    }
}

/// The generated Markdown block for one run (markers included).
pub fn markdown(info: &RunInfo<'_>, sections: &[Section]) -> String {
    let (begin, end) = markers(info.quick);
    let m = info.machine;
    let mut out = String::new();
    let _ = writeln!(out, "{begin}");
    let _ = writeln!(
        out,
        "_Generated by `{}` on {} in {:.0} s. Do not edit between these markers: the next run replaces it._\n",
        info.command, info.date, info.elapsed_secs
    );
    let _ = writeln!(
        out,
        "Machine: {} logical CPUs ({}), {:.1} GiB memory, Linux {}, descriptor limit {}. Load average (1 min) at \
         start: {}, at end: {} (the machine is shared with other work).\n",
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        m.kernel,
        m.nofile,
        m.load,
        crate::machine::load_average()
    );
    let _ = writeln!(
        out,
        "| figure | whatsap2p: median (min–max) | baseline, same run: median (min–max) | ratio | target | met | rerun this row |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let quick = if info.quick { "--quick " } else { "" };
    for r in sections.iter().flat_map(|s| &s.rows) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | `cargo run --release --bin whatsap2p-bench -- {quick}--only {}` |",
            r.figure,
            r.ours_text(),
            r.baseline_text(),
            r.ratio_text(),
            r.target_text(),
            r.verdict(),
            r.group
        );
    }
    let _ = writeln!(
        out,
        "\nRatio = whatsap2p ÷ baseline (for latencies, above 1 means slower than the baseline).\n"
    );
    for s in sections {
        if s.details.is_empty() {
            continue;
        }
        let _ = writeln!(out, "`--only {}`:\n", s.group);
        for d in &s.details {
            let _ = writeln!(out, "- {d}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "{end}");
    out
}

/// Replaces this run's block in `path`, keeping everything else; creates the file from `template`
/// (which must contain both blocks' markers) when it does not exist.
pub fn write_block(path: &Path, block: &str, quick: bool, template: &str) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => template.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (begin, end) = markers(quick);
    let updated = match (current.find(begin), current.find(end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{}{}", &current[..b], block.trim_end(), &current[e + end.len()..])
        }
        _ => format!("{}\n\n{}\n", current.trim_end(), block.trim_end()),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ours: f64, base: Option<f64>, target: Target) -> Row {
        let s = |v| Summary { median: v, min: v, max: v, runs: 3 };
        Row {
            group: "g",
            figure: "f".into(),
            unit: Unit::PerSec,
            ours: Ok(s(ours)),
            baseline: base.map(|b| Baseline::Measured(s(b))).unwrap_or(Baseline::None),
            target,
        }
    }

    #[test]
    fn given_targets_then_verdicts_follow_the_median() {
        assert_eq!(row(10.0, Some(5.0), Target::RatioAtLeast(1.0)).verdict(), "yes");
        assert_eq!(row(4.0, Some(5.0), Target::RatioAtLeast(1.0)).verdict(), "NO");
        assert_eq!(row(4.0, None, Target::RatioAtLeast(1.0)).verdict(), "n/a");
        assert_eq!(row(4.0, None, Target::Below(5.0)).verdict(), "yes");
        assert_eq!(row(5.0, None, Target::Below(5.0)).verdict(), "NO");
        assert_eq!(row(5.0, None, Target::Report).verdict(), "—");
    }

    #[test]
    fn given_large_numbers_then_digits_are_grouped() {
        assert_eq!(grouped(1_234_567), "1\u{202f}234\u{202f}567");
        assert_eq!(grouped(999), "999");
    }

    #[test]
    fn given_existing_doc_then_only_this_runs_block_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.md");
        let (qb, qe) = markers(true);
        let (fb, fe) = markers(false);
        std::fs::write(&path, format!("intro\n{fb}\nold full\n{fe}\nmiddle\n{qb}\nold quick\n{qe}\nend\n"))
            .expect("write");
        write_block(&path, &format!("{qb}\nnew quick\n{qe}\n"), true, "").expect("block");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("old full") && text.contains("new quick") && !text.contains("old quick"));
        assert!(text.starts_with("intro") && text.ends_with("end\n"));
    }
}
