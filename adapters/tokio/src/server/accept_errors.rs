//! A listener whose `accept` fails (out of file descriptors, `EMFILE`, mostly): wait before the
//! next try, longer while it keeps failing, log the first failure of a burst and its end, and
//! count every one, instead of a warning every few milliseconds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The first wait after a failure; it doubles up to [`LONGEST`] while failures go on.
const FIRST: Duration = Duration::from_millis(10);
const LONGEST: Duration = Duration::from_secs(1);

/// One listener's accept failures: the burst going on, if one is.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    burst: Option<Burst>,
}

#[derive(Debug)]
struct Burst {
    started: Instant,
    failures: u64,
    wait: Duration,
}

impl AcceptErrors {
    /// `accept` failed with `error`: counts it in `counter`. Out of descriptors or memory, it
    /// logs the failure if it starts a burst and waits (longer each time in a row, or until
    /// `stop` changes) so that connections can end before the next try; a failure of one
    /// connection alone (it was reset before being taken, say) is only logged at debug.
    pub async fn failed(
        &mut self,
        what: &str,
        error: &std::io::Error,
        counter: &AtomicU64,
        stop: &mut watch::Receiver<bool>,
    ) {
        counter.fetch_add(1, Relaxed);
        if !out_of_resources(error) {
            log::debug!("{what} accept failed: {error}");
            return;
        }
        let burst = self.burst.get_or_insert_with(|| {
            log::warn!(
                "{what} accept failed: {error}; trying again after a pause, longer while it goes on (each \
                 failure counted, the end of the burst logged)"
            );
            Burst { started: Instant::now(), failures: 0, wait: FIRST }
        });
        burst.failures += 1;
        let wait = burst.wait;
        burst.wait = (burst.wait * 2).min(LONGEST);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }

    /// `accept` worked: ends a burst of failures, if one was going on, with a log line.
    pub fn succeeded(&mut self, what: &str) {
        if let Some(burst) = self.burst.take() {
            log::warn!(
                "{what} accepts again after {} failures in {:.1} s",
                burst.failures,
                burst.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Out of file descriptors (the process's or the system's) or of memory: what waiting mends.
fn out_of_resources(error: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM (Linux numbers; elsewhere the kind says out of memory).
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12)) || error.kind() == std::io::ErrorKind::OutOfMemory
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_waits_longer_each_time_and_counts_every_failure() {
        let (mut errors, counter) = (AcceptErrors::default(), AtomicU64::new(0));
        let (_stop_tx, mut stop) = watch::channel(false);
        let error = std::io::Error::from_raw_os_error(24); // EMFILE
        let started = Instant::now();
        for _ in 0..10 {
            errors.failed("test", &error, &counter, &mut stop).await;
        }
        // 10 + 20 + 40 + … ms, at most 1 s each: 10 tries take 10 ms × (2^7 − 1) + 3 × 1 s.
        assert_eq!(started.elapsed(), Duration::from_millis(1270 + 3000));
        assert_eq!(counter.load(Relaxed), 10);
        errors.succeeded("test");
        let again = Instant::now();
        errors.failed("test", &error, &counter, &mut stop).await;
        assert_eq!(again.elapsed(), FIRST, "a new burst starts from the first wait");
        // One connection's failure: counted, no pause.
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        let at = Instant::now();
        errors.failed("test", &reset, &counter, &mut stop).await;
        assert_eq!((at.elapsed(), counter.load(Relaxed)), (Duration::ZERO, 12));
    }
}
