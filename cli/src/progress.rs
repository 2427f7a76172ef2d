//! Progress bars for long transfers, shown on a terminal only.

use std::{io::IsTerminal, sync::Arc};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on standard error.
pub struct Bar(ProgressBar);

impl credhost::Progress for Bar {
    fn set_total(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Bar {
    /// A bar labelled `label` when standard error is a terminal and `enabled`.
    pub fn on_terminal(label: &str, total: Option<u64>, enabled: bool) -> Option<Arc<Bar>> {
        if !enabled || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_owned());
        Some(Arc::new(Bar(bar)))
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
