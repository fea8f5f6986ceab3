// SPDX-License-Identifier: MIT
//! The agent's persistent store: one SQLite database in the data directory.
//!
//! Power loss and `kill -9` at any point leave it consistent: every change is
//! one SQLite transaction, the journal is a write-ahead log synced on each
//! commit (`synchronous = FULL`). The schema version is SQLite's
//! `user_version`; [`MIGRATIONS`] brings an older database up to date, each
//! step in its own transaction.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};

use ferry_engine::counters::CounterSnapshot;
use ferry_engine::Options;
use ferry_model::api::{
    self as records, Execution, Location, LocationSpec, ResultDetail, ScheduleDetails, Task,
};

/// Schema steps; `MIGRATIONS[n]` takes version n to n + 1. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: locations, tasks, executions.
    "CREATE TABLE locations (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL REFERENCES locations(id),
        destination TEXT NOT NULL REFERENCES locations(id),
        options TEXT NOT NULL,
        schedule TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE executions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        options TEXT NOT NULL,
        queued_ms INTEGER NOT NULL,
        started_ms INTEGER,
        ended_ms INTEGER,
        result TEXT NOT NULL,
        counters TEXT NOT NULL,
        report TEXT
    );
    CREATE INDEX executions_by_task ON executions(task_id, seq);
    CREATE INDEX executions_by_status ON executions(status, seq);",
    // 2: names of locations declared in the configuration document.
    "CREATE TABLE provisioned_locations (
        name TEXT PRIMARY KEY,
        location_id TEXT NOT NULL UNIQUE REFERENCES locations(id)
    );",
    // 3: a schedule's state: ENABLED or DISABLED (by USER or SERVICE, and
    // why), since when (a rate counts from there).
    "ALTER TABLE tasks ADD COLUMN schedule_status TEXT NOT NULL DEFAULT 'ENABLED';
    ALTER TABLE tasks ADD COLUMN schedule_status_ms INTEGER;
    ALTER TABLE tasks ADD COLUMN schedule_disabled_by TEXT;
    ALTER TABLE tasks ADD COLUMN schedule_disabled_reason TEXT;",
    // 4: the estimate of the task's last plan, for its next execution.
    "ALTER TABLE tasks ADD COLUMN planned_ms INTEGER;",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the agent's database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the agent's database is at schema version {found}, newer than this agent knows ({known}): refusing to touch it")]
    TooNew { found: i64, known: i64 },
    #[error("migrating the agent's database to version {version}: {source}")]
    Migration {
        version: usize,
        source: rusqlite::Error,
    },
    #[error("the agent's database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a stored record does not parse: {0}")]
    Corrupt(#[from] serde_json::Error),
}

pub struct Store {
    db: Connection,
}

/// Current schema version.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut db = Connection::open(path).map_err(open_err)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        db.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let version: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(open_err)?;
        if version > schema_version() {
            return Err(StoreError::TooNew {
                found: version,
                known: schema_version(),
            });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let migrate = |db: &mut Connection| -> rusqlite::Result<()> {
                let tx = db.transaction()?;
                tx.execute_batch(step)?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
                tx.commit()
            };
            migrate(&mut db).map_err(|source| StoreError::Migration {
                version: i + 1,
                source,
            })?;
        }
        Ok(Store { db })
    }

    // ---- locations

    pub fn insert_location(&self, spec: &LocationSpec) -> Result<Location, StoreError> {
        let id = records::new_id("loc");
        let now = records::now_ms();
        self.db.execute(
            "INSERT INTO locations (id, spec, created_ms) VALUES (?1, ?2, ?3)",
            params![id, serde_json::to_string(spec)?, now],
        )?;
        Ok(location(id, spec.clone(), now))
    }

    pub fn location(&self, id: &str) -> Result<Option<Location>, StoreError> {
        self.db
            .query_row(
                "SELECT id, spec, created_ms FROM locations WHERE id = ?1",
                [id],
                location_row,
            )
            .optional()?
            .transpose()
    }

    pub fn locations(&self) -> Result<Vec<Location>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT id, spec, created_ms FROM locations ORDER BY created_ms, id")?;
        let rows = stmt.query_map([], location_row)?;
        rows.map(|r| r?).collect()
    }

    /// Tasks that use a location, by name.
    pub fn tasks_using(&self, location_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.db.prepare(
            "SELECT name FROM tasks WHERE source = ?1 OR destination = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([location_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_location(&mut self, id: &str) -> Result<bool, StoreError> {
        let tx = self.db.transaction()?;
        tx.execute(
            "DELETE FROM provisioned_locations WHERE location_id = ?1",
            [id],
        )?;
        let deleted = tx.execute("DELETE FROM locations WHERE id = ?1", [id])? > 0;
        tx.commit()?;
        Ok(deleted)
    }

    pub fn update_location(&self, id: &str, spec: &LocationSpec) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE locations SET spec = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(spec)?],
        )?;
        Ok(())
    }

    /// The location declared under `name` in the configuration document.
    pub fn provisioned_location(&self, name: &str) -> Result<Option<Location>, StoreError> {
        self.db
            .query_row(
                "SELECT l.id, l.spec, l.created_ms FROM provisioned_locations p
                 JOIN locations l ON l.id = p.location_id WHERE p.name = ?1",
                [name],
                location_row,
            )
            .optional()?
            .transpose()
    }

    pub fn name_location(&self, name: &str, id: &str) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR REPLACE INTO provisioned_locations (name, location_id) VALUES (?1, ?2)",
            params![name, id],
        )?;
        Ok(())
    }

    // ---- tasks

    pub fn insert_task(&self, task: &Task) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT INTO tasks (id, name, source, destination, options, schedule, created_ms, schedule_status_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                task.task_id,
                task.name,
                task.source_location_id,
                task.destination_location_id,
                serde_json::to_string(&task.options)?,
                task.schedule,
                records::now_ms(),
            ],
        )?;
        Ok(())
    }

    pub fn update_task(
        &self,
        id: &str,
        name: &str,
        options: &Options,
        schedule: Option<&str>,
    ) -> Result<(), StoreError> {
        // A schedule changed is enabled, from now; one kept keeps its state
        // (the right-hand sides see the row as it was).
        self.db.execute(
            "UPDATE tasks SET name = ?2, options = ?3, schedule = ?4,
                schedule_status = CASE WHEN schedule IS ?4 THEN schedule_status ELSE 'ENABLED' END,
                schedule_status_ms = CASE WHEN schedule IS ?4 THEN schedule_status_ms ELSE ?5 END,
                schedule_disabled_by = CASE WHEN schedule IS ?4 THEN schedule_disabled_by END,
                schedule_disabled_reason = CASE WHEN schedule IS ?4 THEN schedule_disabled_reason END
             WHERE id = ?1",
            params![
                id,
                name,
                serde_json::to_string(options)?,
                schedule,
                records::now_ms()
            ],
        )?;
        Ok(())
    }

    /// Enables a task's schedule, or disables it `by` USER or SERVICE with
    /// `reason`; from now.
    pub fn set_schedule_status(
        &self,
        id: &str,
        disabled: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let (status, by, reason) = match disabled {
            Some((by, reason)) => (records::DISABLED, Some(by), Some(reason)),
            None => (records::ENABLED, None, None),
        };
        self.db.execute(
            "UPDATE tasks SET schedule_status = ?2, schedule_status_ms = ?3,
                schedule_disabled_by = ?4, schedule_disabled_reason = ?5 WHERE id = ?1",
            params![id, status, records::now_ms(), by, reason],
        )?;
        Ok(())
    }

    pub fn set_task_locations(
        &self,
        id: &str,
        source: &str,
        destination: &str,
    ) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE tasks SET source = ?2, destination = ?3 WHERE id = ?1",
            params![id, source, destination],
        )?;
        Ok(())
    }

    pub fn task(&self, id: &str) -> Result<Option<Task>, StoreError> {
        let task = self
            .db
            .query_row(&task_query("WHERE t.id = ?1"), [id], task_row)
            .optional()?;
        task.transpose()
    }

    /// A task with its source and destination; `None` when any is gone.
    pub fn task_with_locations(
        &self,
        id: &str,
    ) -> Result<Option<(Task, Location, Location)>, StoreError> {
        let Some(task) = self.task(id)? else {
            return Ok(None);
        };
        let source = self.location(&task.source_location_id)?;
        let destination = self.location(&task.destination_location_id)?;
        Ok(source.zip(destination).map(|(s, d)| (task, s, d)))
    }

    pub fn task_by_name(&self, name: &str) -> Result<Option<Task>, StoreError> {
        let task = self
            .db
            .query_row(&task_query("WHERE t.name = ?1"), [name], task_row)
            .optional()?;
        task.transpose()
    }

    pub fn tasks(&self) -> Result<Vec<Task>, StoreError> {
        let mut stmt = self
            .db
            .prepare(&task_query("ORDER BY t.created_ms, t.id"))?;
        let rows = stmt.query_map([], task_row)?;
        rows.map(|r| r?).collect()
    }

    /// Deletes the task and its history; returns the report files to remove.
    pub fn delete_task(&mut self, id: &str) -> Result<Vec<String>, StoreError> {
        let tx = self.db.transaction()?;
        let reports = {
            let mut stmt = tx.prepare(
                "SELECT report FROM executions WHERE task_id = ?1 AND report IS NOT NULL",
            )?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect::<Result<Vec<String>, _>>()?
        };
        tx.execute("DELETE FROM executions WHERE task_id = ?1", [id])?;
        tx.execute("DELETE FROM tasks WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(reports)
    }

    // ---- executions

    pub fn insert_execution(&self, task_id: &str, options: &Options) -> Result<String, StoreError> {
        let id = records::new_id("exec");
        self.db.execute(
            "INSERT INTO executions (id, task_id, status, options, queued_ms, result, counters)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                task_id,
                records::QUEUED,
                serde_json::to_string(options)?,
                records::now_ms(),
                serde_json::to_string(&pending_result())?,
                serde_json::to_string(&CounterSnapshot::default())?,
            ],
        )?;
        Ok(id)
    }

    pub fn execution(&self, id: &str) -> Result<Option<Execution>, StoreError> {
        self.db
            .query_row(
                &format!("{EXECUTION_COLUMNS} WHERE id = ?1"),
                [id],
                execution_row,
            )
            .optional()?
            .transpose()
    }

    /// Newest first; of one task if given.
    pub fn executions(&self, task_id: Option<&str>) -> Result<Vec<Execution>, StoreError> {
        let mut stmt = self.db.prepare(&format!(
            "{EXECUTION_COLUMNS} WHERE ?1 IS NULL OR task_id = ?1 ORDER BY seq DESC"
        ))?;
        let rows = stmt.query_map([task_id], execution_row)?;
        rows.map(|r| r?).collect()
    }

    /// The oldest queued execution: the next to run.
    pub fn next_queued(&self) -> Result<Option<Execution>, StoreError> {
        self.db
            .query_row(
                &format!("{EXECUTION_COLUMNS} WHERE status = ?1 ORDER BY seq LIMIT 1"),
                [records::QUEUED],
                execution_row,
            )
            .optional()?
            .transpose()
    }

    /// Executions of a task that are queued or running.
    /// The task's last `n` ended executions, newest first.
    pub fn last_ended_executions(
        &self,
        task_id: &str,
        n: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        let mut stmt = self.db.prepare(&format!(
            "{EXECUTION_COLUMNS} WHERE task_id = ?1 AND status IN ('SUCCESS', 'ERROR') ORDER BY seq DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![task_id, n as i64], execution_row)?;
        rows.map(|r| r?).collect()
    }

    /// Queued or running executions, oldest first; of one task if given.
    pub fn active_executions(&self, task_id: Option<&str>) -> Result<Vec<Execution>, StoreError> {
        let mut stmt = self.db.prepare(&format!(
            "{EXECUTION_COLUMNS} WHERE (?1 IS NULL OR task_id = ?1) AND status NOT IN ('SUCCESS', 'ERROR') ORDER BY seq"
        ))?;
        let rows = stmt.query_map([task_id], execution_row)?;
        rows.map(|r| r?).collect()
    }

    /// The options of an execution that has not ended.
    pub fn set_options(&self, id: &str, options: &Options) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE executions SET options = ?2 WHERE id = ?1 AND status NOT IN ('SUCCESS', 'ERROR')",
            params![id, serde_json::to_string(options)?],
        )?;
        Ok(())
    }

    pub fn set_status(&self, id: &str, status: &str) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE executions SET status = ?2 WHERE id = ?1 AND status NOT IN ('SUCCESS', 'ERROR')",
            params![id, status],
        )?;
        Ok(())
    }

    /// Keeps a plan's estimate for the task's next execution.
    pub fn set_planned(&self, task_id: &str, ms: u64) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE tasks SET planned_ms = ?2 WHERE id = ?1",
            params![task_id, ms as i64],
        )?;
        Ok(())
    }

    /// The estimate kept for the task's next execution, taken (once).
    pub fn take_planned(&self, task_id: &str) -> Result<Option<u64>, StoreError> {
        let ms: Option<i64> = self
            .db
            .query_row(
                "SELECT planned_ms FROM tasks WHERE id = ?1",
                [task_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        self.db.execute(
            "UPDATE tasks SET planned_ms = NULL WHERE id = ?1",
            [task_id],
        )?;
        Ok(ms.map(|m| m.max(0) as u64))
    }

    pub fn mark_started(&self, id: &str) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE executions SET status = ?2, started_ms = ?3 WHERE id = ?1",
            params![id, records::LAUNCHING, records::now_ms()],
        )?;
        Ok(())
    }

    pub fn save_progress(
        &self,
        id: &str,
        result: &ResultDetail,
        counters: &CounterSnapshot,
    ) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE executions SET result = ?2, counters = ?3 WHERE id = ?1",
            params![
                id,
                serde_json::to_string(result)?,
                serde_json::to_string(counters)?
            ],
        )?;
        Ok(())
    }

    /// The end of an execution, in one transaction.
    pub fn finish(
        &self,
        id: &str,
        status: &str,
        result: &ResultDetail,
        counters: &CounterSnapshot,
        report: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db.execute(
            "UPDATE executions SET status = ?2, result = ?3, counters = ?4, report = ?5,
                 ended_ms = ?6, started_ms = COALESCE(started_ms, ?6)
             WHERE id = ?1",
            params![
                id,
                status,
                serde_json::to_string(result)?,
                serde_json::to_string(counters)?,
                report,
                records::now_ms()
            ],
        )?;
        Ok(())
    }

    /// After a crash or kill: executions that were running end as ERROR,
    /// but those `carry_on` keeps (an agent runs them for the hub: they go
    /// on there, and the hub takes them up again). The ended ones' ids and
    /// the kept executions.
    pub fn mark_interrupted(
        &self,
        carry_on: impl Fn(&Execution) -> bool,
    ) -> Result<(Vec<String>, Vec<Execution>), StoreError> {
        let (kept, running): (Vec<Execution>, Vec<Execution>) = {
            let mut stmt = self.db.prepare(&format!(
                "{EXECUTION_COLUMNS} WHERE status NOT IN ('QUEUED', 'SUCCESS', 'ERROR')"
            ))?;
            let rows = stmt.query_map([], execution_row)?;
            rows.collect::<Result<Result<Vec<_>, _>, _>>()??
        }
        .into_iter()
        .partition(|e| carry_on(e));
        for exec in &running {
            let mut result = exec.result.clone();
            result.error_code = Some("Interrupted".into());
            result.error_detail = Some(format!(
                "the agent stopped while the execution was {}; start the task again to complete the sync",
                exec.status
            ));
            for status in [
                &mut result.prepare_status,
                &mut result.transfer_status,
                &mut result.verify_status,
            ] {
                if status == "PENDING" {
                    *status = records::ERROR.into();
                }
            }
            self.finish(
                &exec.task_execution_id,
                records::ERROR,
                &result,
                &exec.counters,
                None,
            )?;
        }
        let ended = running.into_iter().map(|e| e.task_execution_id).collect();
        Ok((ended, kept))
    }

    /// Removes executions that ended before `cutoff_ms`; returns their report files.
    pub fn expire(&mut self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        let tx = self.db.transaction()?;
        let reports = {
            let mut stmt = tx.prepare(
                "SELECT report FROM executions WHERE ended_ms < ?1 AND report IS NOT NULL",
            )?;
            let rows = stmt.query_map([cutoff_ms], |r| r.get(0))?;
            rows.collect::<Result<Vec<String>, _>>()?
        };
        tx.execute("DELETE FROM executions WHERE ended_ms < ?1", [cutoff_ms])?;
        tx.commit()?;
        Ok(reports)
    }

    pub fn report_path(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .query_row("SELECT report FROM executions WHERE id = ?1", [id], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten())
    }
}

pub fn pending_result() -> ResultDetail {
    ResultDetail {
        prepare_status: "PENDING".into(),
        transfer_status: "PENDING".into(),
        verify_status: "PENDING".into(),
        ..Default::default()
    }
}

fn location(id: String, spec: LocationSpec, created_ms: i64) -> Location {
    Location {
        location_id: id,
        location_uri: spec.uri(),
        spec,
        creation_time: records::rfc3339(created_ms),
    }
}

fn location_row(r: &Row) -> rusqlite::Result<Result<Location, StoreError>> {
    let id: String = r.get(0)?;
    let spec: String = r.get(1)?;
    let created: i64 = r.get(2)?;
    Ok(serde_json::from_str(&spec)
        .map(|spec| location(id, spec, created))
        .map_err(StoreError::from))
}

/// Tasks with their status, derived from their executions.
fn task_query(tail: &str) -> String {
    format!(
        "SELECT t.id, t.name, t.source, t.destination, t.options, t.schedule, t.created_ms,
            (SELECT e.status || ' ' || e.id FROM executions e
              WHERE e.task_id = t.id AND e.status NOT IN ('SUCCESS', 'ERROR')
              ORDER BY (e.status = 'QUEUED'), e.seq LIMIT 1),
            t.schedule_status, t.schedule_status_ms, t.schedule_disabled_by, t.schedule_disabled_reason
         FROM tasks t {tail}"
    )
}

fn task_row(r: &Row) -> rusqlite::Result<Result<Task, StoreError>> {
    let options: String = r.get(4)?;
    let active: Option<String> = r.get(7)?;
    let (status, current) = match active.as_deref().and_then(|a| a.split_once(' ')) {
        Some((records::QUEUED, id)) => ("QUEUED", Some(id.to_string())),
        Some((_, id)) => ("RUNNING", Some(id.to_string())),
        None => ("AVAILABLE", None),
    };
    let options = match serde_json::from_str(&options) {
        Ok(o) => o,
        Err(e) => return Ok(Err(e.into())),
    };
    let schedule: Option<String> = r.get(5)?;
    let created: i64 = r.get(6)?;
    let schedule_details = match schedule {
        Some(_) => Some(ScheduleDetails {
            status: r.get(8)?,
            status_update_time: records::rfc3339(r.get::<_, Option<i64>>(9)?.unwrap_or(created)),
            disabled_by: r.get(10)?,
            disabled_reason: r.get(11)?,
        }),
        None => None,
    };
    Ok(Ok(Task {
        task_id: r.get(0)?,
        name: r.get(1)?,
        source_location_id: r.get(2)?,
        destination_location_id: r.get(3)?,
        options,
        schedule,
        schedule_details,
        status: status.into(),
        current_task_execution_id: current,
        creation_time: records::rfc3339(created),
    }))
}

const EXECUTION_COLUMNS: &str = "SELECT id, task_id, status, options, queued_ms, started_ms, ended_ms, result, counters, report FROM executions";

fn execution_row(r: &Row) -> rusqlite::Result<Result<Execution, StoreError>> {
    let parse = || -> Result<(Options, ResultDetail, CounterSnapshot), serde_json::Error> {
        Ok((
            serde_json::from_str(&r.get::<_, String>(3).unwrap_or_default())?,
            serde_json::from_str(&r.get::<_, String>(7).unwrap_or_default())?,
            serde_json::from_str(&r.get::<_, String>(8).unwrap_or_default())?,
        ))
    };
    let (options, result, counters) = match parse() {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.into())),
    };
    Ok(Ok(Execution {
        task_execution_id: r.get(0)?,
        task_id: r.get(1)?,
        status: r.get(2)?,
        options,
        queue_time: records::rfc3339(r.get(4)?),
        start_time: r.get::<_, Option<i64>>(5)?.map(records::rfc3339),
        end_time: r.get::<_, Option<i64>>(6)?.map(records::rfc3339),
        result,
        counters,
        report_available: r.get::<_, Option<String>>(9)?.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_fresh_database_and_reopens_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let store = Store::open(&path).unwrap();
        let loc = store.insert_location(&LocationSpec::local("/tmp")).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.locations().unwrap(), vec![loc]);
        let version: i64 = store
            .db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema_version());
    }

    #[test]
    fn a_version_1_database_is_migrated_with_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let db = Connection::open(&path).unwrap();
        db.execute_batch(MIGRATIONS[0]).unwrap();
        db.pragma_update(None, "user_version", 1).unwrap();
        db.execute(
            "INSERT INTO locations (id, spec, created_ms) VALUES ('loc-1', '{\"Type\":\"LOCAL\",\"Path\":\"/x\"}', 0)",
            [],
        )
        .unwrap();
        drop(db);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.locations().unwrap().len(), 1);
        store.name_location("x", "loc-1").unwrap();
        assert_eq!(
            store
                .provisioned_location("x")
                .unwrap()
                .unwrap()
                .location_id,
            "loc-1"
        );
    }

    #[test]
    fn refuses_a_database_from_a_newer_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        drop(Store::open(&path).unwrap());
        let db = Connection::open(&path).unwrap();
        db.pragma_update(None, "user_version", schema_version() + 1)
            .unwrap();
        drop(db);
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
    }

    #[test]
    fn running_executions_become_interrupted_and_queued_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("agent.db")).unwrap();
        let a = store.insert_location(&LocationSpec::local("/a")).unwrap();
        let b = store.insert_location(&LocationSpec::local("/b")).unwrap();
        let task = Task {
            task_id: records::new_id("task"),
            name: "t".into(),
            source_location_id: a.location_id,
            destination_location_id: b.location_id,
            options: Options::new(),
            schedule: None,
            schedule_details: None,
            status: String::new(),
            current_task_execution_id: None,
            creation_time: String::new(),
        };
        store.insert_task(&task).unwrap();
        let running = store
            .insert_execution(&task.task_id, &task.options)
            .unwrap();
        let queued = store
            .insert_execution(&task.task_id, &task.options)
            .unwrap();
        store.mark_started(&running).unwrap();
        store.set_status(&running, "TRANSFERRING").unwrap();
        assert_eq!(
            store.task(&task.task_id).unwrap().unwrap().status,
            "RUNNING"
        );

        let (ended, kept) = store.mark_interrupted(|_| false).unwrap();
        assert_eq!(ended, vec![running.clone()]);
        assert!(kept.is_empty());
        let e = store.execution(&running).unwrap().unwrap();
        assert_eq!(e.status, "ERROR");
        assert_eq!(e.result.error_code.as_deref(), Some("Interrupted"));
        assert_eq!(store.execution(&queued).unwrap().unwrap().status, "QUEUED");
        assert_eq!(
            store.next_queued().unwrap().unwrap().task_execution_id,
            queued
        );
        assert_eq!(store.task(&task.task_id).unwrap().unwrap().status, "QUEUED");
    }
}
