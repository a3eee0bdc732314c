//! Progress of long runs: a bar on a terminal (indicatif), plain lines otherwise (a log or a
//! CI job gets one line per tenth of the work instead of control codes).

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) enum Progress {
    Bar(ProgressBar),
    Lines {
        what: String,
        last_tenth: Mutex<u64>,
    },
}

impl Progress {
    pub(crate) fn new(what: &str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(what.to_owned());
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                what: what.to_owned(),
                last_tenth: Mutex::new(0),
            }
        }
    }

    pub(crate) fn set(&self, done: u64, total: u64) {
        match self {
            Progress::Bar(bar) => {
                bar.set_length(total);
                bar.set_position(done);
            }
            Progress::Lines { what, last_tenth } => {
                let tenth = (done * 10).checked_div(total).unwrap_or(0);
                let mut last = last_tenth.lock().unwrap_or_else(|e| e.into_inner());
                if tenth > *last {
                    *last = tenth;
                    eprintln!("{what}: {done}/{total} files");
                }
            }
        }
    }

    /// Like [`Progress::set`], with a note (bytes so far, say) after the counts.
    pub(crate) fn set_noting(&self, done: u64, total: u64, note: &str) {
        match self {
            Progress::Bar(bar) => {
                bar.set_message(note.to_owned());
                self.set(done, total);
            }
            Progress::Lines { what, last_tenth } => {
                let tenth = (done * 10).checked_div(total).unwrap_or(0);
                let mut last = last_tenth.lock().unwrap_or_else(|e| e.into_inner());
                if tenth > *last {
                    *last = tenth;
                    eprintln!("{what}: {done}/{total} files, {note}");
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
