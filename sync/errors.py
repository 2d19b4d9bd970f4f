"""Why a sync run stopped, as a small typed hierarchy with stable codes.

    SyncError                 a run failed; nothing was written to the target
    ├── LockHeld              another run of the job holds its advisory lock (exit code 3)
    ├── SourceError           the warehouse could not be read
    ├── TargetError           the target table or its mapping cannot take the rows
    ├── ValueDoesNotFit       a value is too long / out of range for its target column
    ├── TooManyDeletes        the mass-delete guard refused the run
    ├── TooManyChanges        the run would write more rows than its change budget
    ├── JobTimeout            the run outlasted the job's `timeout` and was stopped
    └── TransientError        a connection failed or dropped; worth retrying

Messages name the job and what to do; they never contain passwords or SQL.
"""

from __future__ import annotations


class SyncError(Exception):
    code = "sync_failed"
    exit_code = 1

    def __init__(self, job: str, message: str) -> None:
        super().__init__(f"job '{job}': {message}")
        self.job = job
        self.message = message


class LockHeld(SyncError):
    code = "lock_held"
    exit_code = 3


class SourceError(SyncError):
    code = "source_error"


class TargetError(SyncError):
    code = "target_error"


class ValueDoesNotFit(SyncError):
    code = "value_does_not_fit"


class TooManyDeletes(SyncError):
    code = "too_many_deletes"


class TooManyChanges(SyncError):
    """More inserts + updates + deletes than `max_changes`; `r2sf sync --force` goes ahead."""

    code = "too_many_changes"


class JobTimeout(SyncError):
    """The run was still going after the job's `timeout` seconds; it was rolled back."""

    code = "timeout"


class TransientError(SyncError):
    """The connection dropped or could not be opened; the scheduler retries these."""

    code = "transient"
