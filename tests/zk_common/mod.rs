//! What the tests on real ZooKeeper processes share (`zk_real`, `standin_real`): polling until
//! a condition holds, and an observation in a few lines for a failure message.

use std::future::Future;
use std::time::{Duration, Instant};

use quorate::zk::EnsembleObservation;

/// Each member as quorate describes it, then the leader and the notes.
pub fn summary(obs: &EnsembleObservation) -> String {
    let mut lines: Vec<String> = obs.members.keys().map(|id| obs.describe(*id)).collect();
    lines.push(format!("leader {:?}; notes {:?}", obs.leader, obs.notes));
    lines.join("\n")
}

/// Polls `check` until it returns `Ok`, or panics after `timeout` with the last `Err`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if started.elapsed() > timeout => {
                panic!("{what}: not after {timeout:?}; last:\n{last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
