//! What a process knows about itself: readiness is the list of reasons it cannot vouch for
//! its work yet (caches not synced, programs not proven to run, ...); health is whether
//! every long-running task it started is still running.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::sync::watch;

pub struct Status {
    /// Why it is not ready, by source (`self-test`, `caches`, `sockets`, ...).
    not_ready: Mutex<BTreeMap<&'static str, String>>,
    /// Long-running tasks that ended while the process was not shutting down.
    ended: watch::Sender<Vec<&'static str>>,
    shutting_down: AtomicBool,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            not_ready: Mutex::default(),
            ended: watch::channel(Vec::new()).0,
            shutting_down: Default::default(),
        }
    }
}

impl Status {
    /// Not ready for `source` from the start, quietly: starting is not news worth a warning.
    pub fn starting(source: &'static str, reason: String) -> Self {
        let status = Self::default();
        status
            .not_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source, reason);
        status
    }

    /// Sets (`Some`) or clears (`None`) one reason for not being ready.
    pub fn not_ready(&self, source: &'static str, reason: Option<String>) {
        let mut map = self.not_ready.lock().unwrap_or_else(|p| p.into_inner());
        match reason {
            Some(r) => {
                if map.get(source) != Some(&r) {
                    tracing::warn!(source, reason = %r, "not ready");
                }
                map.insert(source, r);
            }
            None => {
                if map.remove(source).is_some() {
                    tracing::info!(source, "ready again");
                }
            }
        }
    }

    /// `Ok` when ready, else every reason.
    pub fn ready(&self) -> Result<(), String> {
        let map = self.not_ready.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return Ok(());
        }
        Err(map
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// A guard a long-running task holds: when it is dropped (the task returned, failed or
    /// panicked) outside shutdown, health fails and [`Status::task_ended`] wakes.
    pub fn task(self: &Arc<Self>, name: &'static str) -> TaskGuard {
        TaskGuard {
            status: self.clone(),
            name,
        }
    }

    /// From now on, tasks ending is expected.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// `Ok` while every task runs, else which ended.
    pub fn alive(&self) -> Result<(), String> {
        let ended = self.ended.borrow();
        if ended.is_empty() {
            Ok(())
        } else {
            Err(format!("task ended: {}", ended.join(", ")))
        }
    }

    /// Resolves with a task's name once one ends unexpectedly.
    pub async fn task_ended(&self) -> &'static str {
        let mut rx = self.ended.subscribe();
        loop {
            if let Some(name) = rx.borrow_and_update().first() {
                return name;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// See [`Status::task`].
pub struct TaskGuard {
    status: Arc<Status>,
    name: &'static str,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if !self.status.shutting_down.load(Ordering::Acquire) {
            tracing::error!(task = self.name, "a long-running task ended unexpectedly");
            self.status.ended.send_modify(|v| v.push(self.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_listed_by_source_and_cleared_one_by_one() {
        let status = Status::default();
        assert_eq!(status.ready(), Ok(()));
        status.not_ready("self-test", Some("no canary event".into()));
        status.not_ready("caches", Some("pods not synced".into()));
        assert_eq!(
            status.ready(),
            Err("caches: pods not synced; self-test: no canary event".into())
        );
        status.not_ready("caches", None);
        status.not_ready("self-test", None);
        assert_eq!(status.ready(), Ok(()));

        let starting = Status::starting("operator", "starting".into());
        assert_eq!(starting.ready(), Err("operator: starting".into()));
        starting.not_ready("operator", None);
        assert_eq!(starting.ready(), Ok(()));
    }

    #[tokio::test]
    async fn a_task_ending_wakes_task_ended_unless_shutting_down() {
        let status = Arc::new(Status::default());
        let guard = status.task("reader");
        let waiter = {
            let status = status.clone();
            tokio::spawn(async move { status.task_ended().await })
        };
        drop(guard);
        assert_eq!(waiter.await.unwrap(), "reader");
        assert_eq!(status.alive(), Err("task ended: reader".into()));

        let quiet = Arc::new(Status::default());
        let guard = quiet.task("sink");
        quiet.shutting_down();
        drop(guard);
        assert_eq!(quiet.alive(), Ok(()));
    }
}
