"""Every error sync/ raises on purpose, as one small typed tree with stable codes.

    Error                       the root: a stable `code` and a process exit code
    ├── ConfigError             r2sf.toml or the environment is wrong (exit code 2); names the
    │                           key and the fix (raised by sync/settings.py and sync/config.py)
    ├── ExtractError            internal: the extract process's error, which the engine turns
    │                           into a SourceError or a TransientError; never shown as such
    └── SyncError               a run failed; nothing was written to the target
        ├── LockHeld            another run of the job holds its advisory lock (exit code 3)
        ├── SourceError         the warehouse could not be read
        ├── TargetError         the target table or its mapping cannot take the rows
        ├── ValueDoesNotFit     a value is too long / out of range for its target column
        ├── TooManyDeletes      the mass-delete guard refused the run
        ├── TooManyChanges      the run would write more rows than its change budget
        ├── JobTimeout          the run outlasted the job's `timeout` and was stopped
        └── TransientError      a connection failed or dropped, or the database cancelled
                                the run to break a deadlock; worth retrying

Codes are CamelCase like odata/errors.py's; docs/errors.md lists them all with what to do.
Messages name the job and what to do; they never contain passwords or SQL.
"""

from __future__ import annotations


class Error(Exception):
    code: str  # each class below has its own; the root is never raised
    exit_code = 1


class ConfigError(Error):
    """A configuration problem, phrased as `where: what. Fix: how`."""

    code = "ConfigError"
    exit_code = 2

    def __init__(self, where: str, problem: str, fix: str) -> None:
        super().__init__(f"{where}: {problem}. Fix: {fix}")
        self.where = where
        self.problem = problem
        self.fix = fix


class ExtractError(Error):
    """An error the source driver raised (in the extract process), by its type name."""

    code = "ExtractError"

    def __init__(self, type_name: str, message: str, transient: bool) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.transient = transient


class SyncError(Error):
    code = "SyncFailed"
    exit_code = 1

    def __init__(self, job: str, message: str) -> None:
        super().__init__(f"job '{job}': {message}")
        self.job = job
        self.message = message


class LockHeld(SyncError):
    code = "LockHeld"
    exit_code = 3


class SourceError(SyncError):
    code = "SourceError"


class TargetError(SyncError):
    code = "TargetError"


class ValueDoesNotFit(SyncError):
    code = "ValueDoesNotFit"


class TooManyDeletes(SyncError):
    code = "TooManyDeletes"


class TooManyChanges(SyncError):
    """More inserts + updates + deletes than `max_changes`; `r2sf sync --force` goes ahead."""

    code = "TooManyChanges"


class JobTimeout(SyncError):
    """The run was still going after the job's `timeout` seconds; it was rolled back."""

    code = "JobTimeout"


class TransientError(SyncError):
    """The connection dropped or could not be opened, or the target cancelled the run to break
    a deadlock or a serialization conflict; the scheduler retries these."""

    code = "TransientError"
