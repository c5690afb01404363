//! Measuring (median of runs with min and max) and printing the table and its JSON twin.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// One measured figure: the runs' values, in the figure's unit.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub values: Vec<f64>,
}

impl Figure {
    pub(crate) fn median(&self) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    pub(crate) fn min(&self) -> f64 {
        self.values.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub(crate) fn max(&self) -> f64 {
        self.values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Runs `body` once to warm up, then `runs` times, collecting what each run returns.
pub(crate) fn measure(runs: usize, mut body: impl FnMut() -> f64) -> Figure {
    body();
    Figure {
        values: (0..runs).map(|_| body()).collect(),
    }
}

/// Times `body`, returning seconds.
pub(crate) fn seconds(body: impl FnOnce()) -> f64 {
    let start = Instant::now();
    body();
    start.elapsed().as_secs_f64()
}

/// A table: rows of (workload, unit, cells by column).
pub(crate) struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<(String, String, Vec<Option<Figure>>)>,
}

fn format_value(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

impl Table {
    pub(crate) fn print(&self) {
        println!("\n## {}\n", self.title);
        let mut header = String::from("| workload | unit |");
        for column in &self.columns {
            let _ = write!(header, " {column} |");
        }
        println!("{header}");
        println!("|{}", "---|".repeat(self.columns.len() + 2));
        for (name, unit, cells) in &self.rows {
            let mut line = format!("| {name} | {unit} |");
            for cell in cells {
                match cell {
                    Some(figure) if figure.values.len() > 1 => {
                        let _ = write!(
                            line,
                            " {} [{}–{}] |",
                            format_value(figure.median()),
                            format_value(figure.min()),
                            format_value(figure.max())
                        );
                    }
                    Some(figure) => {
                        let _ = write!(line, " {} |", format_value(figure.median()));
                    }
                    None => line.push_str(" – |"),
                }
            }
            println!("{line}");
        }
    }

    pub(crate) fn to_json(&self) -> String {
        let mut out = format!(
            "{{\"title\":{:?},\"columns\":{:?},\"rows\":[",
            self.title, self.columns
        );
        for (index, (name, unit, cells)) in self.rows.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"workload\":{name:?},\"unit\":{unit:?},\"cells\":[");
            for (cell_index, cell) in cells.iter().enumerate() {
                if cell_index > 0 {
                    out.push(',');
                }
                match cell {
                    Some(figure) => {
                        let _ = write!(
                            out,
                            "{{\"median\":{},\"min\":{},\"max\":{},\"runs\":{}}}",
                            figure.median(),
                            figure.min(),
                            figure.max(),
                            figure.values.len()
                        );
                    }
                    None => out.push_str("null"),
                }
            }
            out.push_str("]}");
        }
        out.push_str("]}");
        out
    }
}

/// Writes the tables as JSON to `target/bench/<name>.json`.
pub(crate) fn write_json(name: &str, tables: &[&Table]) -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&dir)?;
    let body: Vec<String> = tables.iter().map(|table| table.to_json()).collect();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, format!("[{}]\n", body.join(",")))?;
    println!("\n(written to {})", path.display());
    Ok(())
}
