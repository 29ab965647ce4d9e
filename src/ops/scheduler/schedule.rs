//! The jobs' names and schedules (validated at start-up, see `config`).

use chrono::{DateTime, Utc};
use croner::{
    Cron,
    parser::{CronParser, Seconds},
};

/// A scheduled job, named in routes and settings in kebab case (`check-dlq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, utoipa::ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum JobName {
    DetectDrift,
    CheckAgentHealth,
    CheckDlq,
    CleanupExpiredJobs,
    ArchiveReconciliationEvents,
    CleanupResolvedDlq,
}

impl JobName {
    pub const ALL: [Self; 6] = [
        Self::DetectDrift,
        Self::CheckAgentHealth,
        Self::CheckDlq,
        Self::CleanupExpiredJobs,
        Self::ArchiveReconciliationEvents,
        Self::CleanupResolvedDlq,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DetectDrift => "detect-drift",
            Self::CheckAgentHealth => "check-agent-health",
            Self::CheckDlq => "check-dlq",
            Self::CleanupExpiredJobs => "cleanup-expired-jobs",
            Self::ArchiveReconciliationEvents => "archive-reconciliation-events",
            Self::CleanupResolvedDlq => "cleanup-resolved-dlq",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|job| job.as_str() == name)
    }

    /// The plan's schedules (seconds first, UTC).
    pub fn default_schedule(self) -> &'static str {
        match self {
            Self::DetectDrift => "0 0 * * * *",
            Self::CheckAgentHealth => "0 */5 * * * *",
            Self::CheckDlq => "0 */15 * * * *",
            Self::CleanupExpiredJobs => "0 0 2 * * *",
            Self::ArchiveReconciliationEvents => "0 0 3 * * SUN",
            Self::CleanupResolvedDlq => "0 0 4 * * SAT",
        }
    }

    /// `SCHEDULE_<NAME>`: upper-cased, `-` → `_`.
    pub fn env_var(self) -> String {
        format!(
            "SCHEDULE_{}",
            self.as_str().to_ascii_uppercase().replace('-', "_")
        )
    }
}

/// A validated cron schedule.
#[derive(Clone)]
pub struct Schedule {
    pattern: String,
    cron: Cron,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl Schedule {
    /// A `SCHEDULE_<NAME>` value: a 6-field cron expression (seconds first, UTC, day of month
    /// AND day of week as tokio-cron-scheduler reads them), or `off`.
    pub fn from_setting(value: &str) -> Result<Option<Self>, String> {
        let value = value.trim();
        if value.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let fields = value.split_whitespace().count();
        if fields != 6 {
            return Err(format!(
                "must be a cron expression of 6 fields, seconds first (e.g. \"0 0 * * * *\"), or off (got {value:?}, {fields} fields)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(value)
            .map_err(|e| format!("is not a valid cron expression ({e}): {value:?}"))?;
        let schedule = Self {
            pattern: value.to_owned(),
            cron,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!("never fires: {value:?}"));
        }
        Ok(Some(schedule))
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn next_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&at, false).ok()
    }

    /// The occurrence a run firing at `now` is for: the latest at or before `now`. Replicas
    /// firing a little apart agree on it, which is what makes the tick a key.
    pub(super) fn tick_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.cron
            .find_previous_occurrence(&now, true)
            .unwrap_or(now)
            .with_timezone(&Utc)
    }
}

/// A job with its schedule (`None`: off).
#[derive(Debug, Clone)]
pub struct JobSchedule {
    pub job: JobName,
    pub cron: Option<Schedule>,
}
