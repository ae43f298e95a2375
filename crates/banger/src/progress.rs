//! Live progress of long operations on stderr: a spinner with the stage,
//! its elapsed time and byte counts on a terminal; one plain line per
//! stage otherwise; nothing with `--json` (stdout then carries only the
//! result).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use banger_proto::progress::ProgressEvent;
use banger_proto::units::format_size;
use indicatif::{ProgressBar, ProgressStyle};

pub enum Progress {
    Tty {
        bar: ProgressBar,
        stage: Option<(String, Instant)>,
    },
    Plain {
        stage: Option<(String, Instant)>,
    },
    Quiet,
}

impl Progress {
    /// Picks the display for this stderr; `quiet` for `--json`.
    pub fn new(quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            Progress::Tty { bar, stage: None }
        } else {
            Progress::Plain { stage: None }
        }
    }

    pub fn event(&mut self, event: &ProgressEvent) {
        match (self, event) {
            (Progress::Quiet, _) => {}
            (Progress::Tty { bar, stage }, ProgressEvent::Stage { stage: name, .. }) => {
                if let Some((done, started)) = stage.take() {
                    bar.println(format!("  {done:<16} {}", seconds(started.elapsed())));
                }
                *stage = Some((name.clone(), Instant::now()));
                bar.set_prefix(name.clone());
                bar.set_message("");
                bar.reset_elapsed();
            }
            (Progress::Tty { bar, .. }, ProgressEvent::Bytes { done, total }) => {
                bar.set_message(bytes(*done, *total));
            }
            (Progress::Tty { bar, .. }, ProgressEvent::Note { line }) => {
                let short: String = line.chars().take(70).collect();
                bar.set_message(short);
            }
            (Progress::Plain { stage }, ProgressEvent::Stage { stage: name, .. }) => {
                if let Some((done, started)) = stage.take() {
                    eprintln!("  {done:<16} {}", seconds(started.elapsed()));
                }
                *stage = Some((name.clone(), Instant::now()));
            }
            (Progress::Plain { .. }, _) => {}
            (Progress::Tty { .. }, _) => {}
        }
    }

    /// Ends the display, printing the last stage and the total.
    pub fn finish(self, total_ms: u64) {
        match self {
            Progress::Quiet => {}
            Progress::Tty { bar, stage } => {
                if let Some((done, started)) = stage {
                    bar.println(format!("  {done:<16} {}", seconds(started.elapsed())));
                }
                bar.finish_and_clear();
                eprintln!(
                    "  {:<16} {}",
                    "total",
                    seconds(Duration::from_millis(total_ms))
                );
            }
            Progress::Plain { stage } => {
                if let Some((done, started)) = stage {
                    eprintln!("  {done:<16} {}", seconds(started.elapsed()));
                }
                eprintln!(
                    "  {:<16} {}",
                    "total",
                    seconds(Duration::from_millis(total_ms))
                );
            }
        }
    }

    /// Clears a spinner before an error is printed.
    pub fn abandon(self) {
        if let Progress::Tty { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn bytes(done: u64, total: Option<u64>) -> String {
    match total {
        Some(total) if total > 0 => format!(
            "{} / {} ({}%)",
            format_size(done),
            format_size(total),
            done * 100 / total
        ),
        _ => format_size(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(512 << 20, Some(1 << 30)), "512M / 1G (50%)");
        assert_eq!(bytes(3 << 20, None), "3M");
        assert_eq!(seconds(Duration::from_millis(1240)), "1.2s");
    }
}
