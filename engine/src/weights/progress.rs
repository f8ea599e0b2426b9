//! A progress bar for weight loading. It stays hidden for the first second
//! (small models load silently) and when stderr is not a terminal (logs and
//! CI stay clean). `tick` once per tensor; it is `Sync`, so a parallel loader
//! can share it.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const SHOW_AFTER: Duration = Duration::from_secs(1);

pub struct LoadProgress {
    bar: ProgressBar,
    start: Instant,
    tty: bool,
    shown: AtomicBool,
}

impl LoadProgress {
    /// A bar for `total` tensors.
    pub fn new(total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template(
            "loading weights [{bar:30}] {pos}/{len} tensors ({elapsed}) {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        LoadProgress {
            bar,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            shown: AtomicBool::new(false),
        }
    }

    /// One more tensor loaded.
    pub fn tick(&self, tensor: &str) {
        self.bar.inc(1);
        if self.tty
            && self.start.elapsed() >= SHOW_AFTER
            && !self.shown.swap(true, Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        if self.shown.load(Ordering::Relaxed) {
            self.bar.set_message(tensor.to_string());
        }
    }

    /// Tensors ticked so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Removes the bar from the terminal (also done on drop).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for LoadProgress {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ticks_from_many_threads() {
        let p = LoadProgress::new(64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..16).for_each(|_| p.tick("t")));
            }
        });
        assert_eq!(p.position(), 64);
        p.finish();
    }
}
