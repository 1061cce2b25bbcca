//! The `memory` backend: the log in a vector; nothing survives the process.

use std::sync::{Arc, Mutex};

use super::{Applier, Change, LogEntry, Position};

pub struct MemoryLog {
    // A std Mutex: held only for pushes and copies, never across an await. Appends apply
    // while holding it so positions reach the applier in order.
    entries: Mutex<(Position, Vec<LogEntry>)>,
    applier: Arc<Applier>,
}

impl MemoryLog {
    pub fn new(applier: Arc<Applier>) -> Self {
        Self {
            entries: Mutex::new((0, Vec::new())),
            applier,
        }
    }

    pub fn append(&self, change: Change) -> Position {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (last, entries) = &mut *guard;
        *last += 1;
        // Only a subject's latest claims matter (see the embedded store).
        if let Some(subject) = change.subject() {
            entries.retain(|entry| entry.change.subject() != Some(subject));
        }
        let entry = LogEntry {
            position: *last,
            change,
        };
        entries.push(entry.clone());
        self.applier.apply(entry);
        *last
    }

    /// The last position handed out.
    pub fn last_position(&self) -> Position {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    pub fn read_after(&self, after: Position, limit: usize) -> Vec<LogEntry> {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entries = &guard.1;
        let start = entries.partition_point(|entry| entry.position <= after);
        entries[start..].iter().take(limit).cloned().collect()
    }

    pub fn compact(&self, now: i64) -> usize {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let before = guard.1.len();
        guard.1.retain(|entry| entry.change.forget_after() > now);
        before - guard.1.len()
    }
}
