//! Output conventions shared by every command: lists print as a table
//! (`--output table`, the default), a table with every column
//! (`--output wide`) or JSON (`--output json`, also `--json`);
//! `--quiet` leaves only what scripts need (the names a list holds or a
//! command made) and no progress or confirmations.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;

static QUIET: AtomicBool = AtomicBool::new(false);

/// Set once from `--quiet`.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A confirmation line on stdout ("started box"), left out under `--quiet`.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::output::quiet() {
            println!($($arg)*);
        }
    };
}
pub(crate) use say;

/// A name a command made, printed even under `--quiet` (where it is the
/// only output), or else the full confirmation line.
pub fn made(name: &str, line: impl FnOnce() -> String) {
    if quiet() {
        println!("{name}");
    } else {
        println!("{}", line());
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// Aligned columns, every one there is.
    Wide,
    /// The API's JSON.
    Json,
}

/// `--output` and `--json` of a list or show command.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// How to print.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// The same as `--output json`.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

impl OutputArgs {
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.output
        }
    }
}

/// A column of a list; `wide` ones show only with `--output wide`.
pub struct Column {
    pub header: &'static str,
    pub wide: bool,
}

pub const fn col(header: &'static str) -> Column {
    Column {
        header,
        wide: false,
    }
}

pub const fn wide(header: &'static str) -> Column {
    Column { header, wide: true }
}

/// Prints a list as asked: `value` as JSON, or `rows` (one cell per
/// column, the first the name) as a table; the names alone under
/// `--quiet`.
pub fn list<T: Serialize>(
    args: &OutputArgs,
    value: &T,
    columns: &[Column],
    rows: &[Vec<String>],
) -> Result<()> {
    let format = args.format();
    if format == Format::Json {
        return json(value);
    }
    if quiet() {
        for row in rows {
            println!("{}", row.first().map(String::as_str).unwrap_or(""));
        }
        return Ok(());
    }
    print!("{}", render_list(format, columns, rows));
    Ok(())
}

fn render_list(format: Format, columns: &[Column], rows: &[Vec<String>]) -> String {
    let shown: Vec<usize> = (0..columns.len())
        .filter(|i| format == Format::Wide || !columns[*i].wide)
        .collect();
    let headers: Vec<&str> = shown.iter().map(|i| columns[*i].header).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            shown
                .iter()
                .map(|i| row.get(*i).cloned().unwrap_or_default())
                .collect()
        })
        .collect();
    render_table(&headers, &rows)
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(headers, rows));
}

pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub fn json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub use banger_proto::units::format_size as size;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let out = render_table(
            &["NAME", "IP"],
            &[vec!["web-long".into(), "1.2.3.4".into()]],
        );
        assert_eq!(out, "NAME      IP\nweb-long  1.2.3.4\n");
    }

    #[test]
    fn wide_columns_show_only_when_asked() {
        let columns = [col("NAME"), wide("ID"), col("IP")];
        let rows = [vec!["web".into(), "0123".into(), "1.2.3.4".into()]];
        assert_eq!(
            render_list(Format::Table, &columns, &rows),
            "NAME  IP\nweb   1.2.3.4\n"
        );
        assert_eq!(
            render_list(Format::Wide, &columns, &rows),
            "NAME  ID    IP\nweb   0123  1.2.3.4\n"
        );
    }
}
