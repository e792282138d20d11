//! Where an operation's time goes: a histogram per (operation, stage).
//!
//! A service keeps one [`StageTimes`] and starts a [`StageClock`] when an operation begins
//! (a signing session at a node, a request's signing at the coordinator). Each
//! [`lap`](StageClock::lap) observes the time since the previous lap (or the start) under the
//! stage it names, so the stages of one operation add up to its duration:
//!
//! ```
//! use tessera_telemetry::StageTimes;
//!
//! let times = StageTimes::new();
//! let clock = times.clock("online_sign");
//! // ... check the request ...
//! clock.lap("policy");
//! // ... run the protocol ...
//! clock.lap("protocol");
//! let totals = times.totals();
//! assert_eq!(totals.len(), 2);
//! assert_eq!(totals[0].stage, "policy");
//! assert_eq!(totals[0].count, 1);
//! ```
//!
//! The histograms are exported with [`register`](StageTimes::register) (one metric, labels
//! `operation` and `stage`, buckets from 100 µs to about 3 s); [`totals`](StageTimes::totals)
//! gives each stage's count and total time directly (for `tessera bench`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type StageLabels = [(&'static str, &'static str); 2];

fn stage_histogram() -> Histogram {
    // 100 µs to about 3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Time spent in each stage of each operation. Clones share the same histograms.
#[derive(Clone, Debug)]
pub struct StageTimes {
    histograms: Family<StageLabels, Histogram, fn() -> Histogram>,
    /// Each (operation, stage)'s count and total, in the order first seen (the histograms'
    /// own sums cannot be read back).
    totals: Arc<Mutex<Vec<StageTotal>>>,
}

impl Default for StageTimes {
    fn default() -> Self {
        StageTimes {
            histograms: Family::new_with_constructor(stage_histogram),
            totals: Arc::default(),
        }
    }
}

/// One stage's count and total time so far.
#[derive(Clone, Debug, PartialEq)]
pub struct StageTotal {
    /// The operation (`online_sign`, `sign`, ...).
    pub operation: &'static str,
    /// The stage within it.
    pub stage: &'static str,
    /// How many times it was observed.
    pub count: u64,
    /// Its total time.
    pub seconds: f64,
}

impl StageTotal {
    /// What `after` observed beyond `before` (totals taken earlier, from the same clocks or
    /// added up the same way): counts and times subtracted, stages with nothing new left out.
    pub fn since(before: &[StageTotal], after: Vec<StageTotal>) -> Vec<StageTotal> {
        after
            .into_iter()
            .map(|now| {
                let earlier = before
                    .iter()
                    .find(|b| b.operation == now.operation && b.stage == now.stage);
                StageTotal {
                    count: now.count - earlier.map_or(0, |b| b.count),
                    seconds: now.seconds - earlier.map_or(0.0, |b| b.seconds),
                    ..now
                }
            })
            .filter(|t| t.count > 0)
            .collect()
    }

    /// The mean time of one observation, in milliseconds (0 if none).
    pub fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.seconds * 1e3 / self.count as f64
        }
    }
}

impl StageTimes {
    /// No observations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the histograms in `registry` as `name` (labels `operation`, `stage`).
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(name, help, self.histograms.clone());
    }

    /// The histograms alone as `name` in the text format, without the OpenMetrics `# EOF`
    /// (for a service that renders its other metrics itself).
    pub fn encode(&self, name: &str, help: &str) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        self.register(&mut registry, name, help);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text.trim_end_matches("# EOF\n").to_owned())
    }

    /// Starts timing one run of `operation` now.
    pub fn clock(&self, operation: &'static str) -> StageClock {
        self.clock_from(operation, Instant::now())
    }

    /// Starts timing one run of `operation` that began at `began` (when the operation is
    /// known only after its first step).
    pub fn clock_from(&self, operation: &'static str, began: Instant) -> StageClock {
        StageClock {
            times: self.clone(),
            operation,
            last: Mutex::new(began),
        }
    }

    /// Observes `elapsed` under (`operation`, `stage`).
    pub fn observe(&self, operation: &'static str, stage: &'static str, elapsed: Duration) {
        self.histograms
            .get_or_create(&[("operation", operation), ("stage", stage)])
            .observe(elapsed.as_secs_f64());
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        let index = match totals
            .iter()
            .position(|t| t.operation == operation && t.stage == stage)
        {
            Some(index) => index,
            None => {
                totals.push(StageTotal {
                    operation,
                    stage,
                    count: 0,
                    seconds: 0.0,
                });
                totals.len() - 1
            }
        };
        totals[index].count += 1;
        totals[index].seconds += elapsed.as_secs_f64();
    }

    /// Every stage observed so far, in the order each was first seen.
    pub fn totals(&self) -> Vec<StageTotal> {
        self.totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The stages observed since `before` was taken (counts and times subtracted).
    pub fn since(&self, before: &[StageTotal]) -> Vec<StageTotal> {
        StageTotal::since(before, self.totals())
    }
}

/// Times the stages of one run of an operation (see [`StageTimes::clock`]).
#[derive(Debug)]
pub struct StageClock {
    times: StageTimes,
    operation: &'static str,
    last: Mutex<Instant>,
}

impl StageClock {
    /// Observes the time since the previous lap (or the clock's start) as `stage`.
    pub fn lap(&self, stage: &'static str) {
        let now = Instant::now();
        let elapsed = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let elapsed = now.duration_since(*last);
            *last = now;
            elapsed
        };
        self.times.observe(self.operation, stage, elapsed);
    }

    /// The operation this clock times.
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_per_stage_and_render_as_histograms() {
        let times = StageTimes::new();
        for _ in 0..3 {
            let clock = times.clock("sign");
            std::thread::sleep(Duration::from_millis(2));
            clock.lap("policy");
            clock.lap("protocol");
        }
        let before = times.totals();
        let clock = times.clock("sign");
        std::thread::sleep(Duration::from_millis(1));
        clock.lap("policy");

        let totals = times.totals();
        let policy = &totals[0];
        assert_eq!(
            (policy.operation, policy.stage, policy.count),
            ("sign", "policy", 4)
        );
        assert!(policy.seconds >= 0.007, "{policy:?}");
        assert!(policy.mean_ms() >= 1.75, "{policy:?}");
        assert_eq!(totals[1].stage, "protocol");
        assert!(totals[1].mean_ms() < policy.mean_ms(), "{totals:?}");

        let since = times.since(&before);
        assert_eq!(since.len(), 1, "{since:?}");
        assert_eq!((since[0].stage, since[0].count), ("policy", 1));
        assert!(since[0].seconds >= 0.001 && since[0].seconds < policy.seconds);

        let text = times
            .encode("demo_stage_seconds", "Time per stage")
            .unwrap();
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE demo_stage_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("demo_stage_seconds_count{operation=\"sign\",stage=\"policy\"} 4"),
            "{text}"
        );
    }

    #[test]
    fn an_unused_clock_observes_nothing() {
        let times = StageTimes::new();
        let clock = times.clock("presign");
        assert_eq!(clock.operation(), "presign");
        assert!(times.totals().is_empty());
        assert!(times.since(&[]).is_empty());
    }
}
