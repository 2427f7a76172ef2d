//! Progress bars for long transfers, shown on a terminal only.

use std::io::IsTerminal;

use abi_stable::sabi_trait::TD_Opaque;
use credhost_plugin_api::{Progress, ProgressBox, Progress_TO};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

struct Bar(ProgressBar);

impl Progress for Bar {
    fn set_total(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// A progress bar on stderr when it is a terminal and `enabled`, else `None`.
/// Returns the bar (to finish it) and the object to hand to a plugin.
pub fn terminal_bar(label: &str, total: Option<u64>, enabled: bool) -> Option<(ProgressBar, ProgressBox)> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_owned());
    let object = Progress_TO::from_value(Bar(bar.clone()), TD_Opaque);
    Some((bar, object))
}
