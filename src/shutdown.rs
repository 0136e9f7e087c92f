//! Ordered shutdown: steps run one after the other, each bounded in time, and what happened
//! is reported (and logged), so that the order is visible and testable.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed(String),
    /// Abandoned after the step's time limit.
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub took: Duration,
    pub outcome: Outcome,
}

/// What a shutdown did, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub steps: Vec<Step>,
}

impl Report {
    /// The step names, in the order they ran.
    pub fn order(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.name).collect()
    }

    pub fn all_done(&self) -> bool {
        self.steps.iter().all(|s| s.outcome == Outcome::Done)
    }

    pub fn took(&self) -> Duration {
        self.steps.iter().map(|s| s.took).sum()
    }
}

/// Runs shutdown steps in order, each within `limit`.
#[derive(Debug)]
pub struct Sequence {
    limit: Duration,
    report: Report,
}

impl Sequence {
    pub fn new(limit: Duration) -> Sequence {
        Sequence {
            limit,
            report: Report::default(),
        }
    }

    /// Runs one step; its failure or timeout is reported, and the next steps still run.
    pub async fn step<F>(&mut self, name: &'static str, what: &str, step: F)
    where
        F: Future<Output = Result<(), String>>,
    {
        tracing::info!("shutting down: {what}");
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.limit, step).await {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(e)) => {
                tracing::error!(step = name, error = %e, "shutdown step failed");
                Outcome::Failed(e)
            }
            Err(_) => {
                tracing::error!(step = name, limit = ?self.limit, "shutdown step did not finish in time");
                Outcome::TimedOut
            }
        };
        self.report.steps.push(Step {
            name,
            took: started.elapsed(),
            outcome,
        });
    }

    pub fn finish(self) -> Report {
        tracing::info!(took = ?self.report.took(), "stopped");
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steps_run_in_order_and_a_slow_one_is_abandoned_at_its_limit() {
        let mut s = Sequence::new(Duration::from_secs(5));
        s.step("first", "first", async { Ok(()) }).await;
        s.step("slow", "slow", async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .await;
        s.step("failing", "failing", async { Err("no".into()) })
            .await;
        let report = s.finish();
        assert_eq!(report.order(), ["first", "slow", "failing"]);
        assert_eq!(report.steps[1].outcome, Outcome::TimedOut);
        assert_eq!(report.steps[1].took, Duration::from_secs(5));
        assert_eq!(report.steps[2].outcome, Outcome::Failed("no".into()));
        assert!(!report.all_done());
    }
}
