"""Warehouse-to-Postgres sync: copy query results into target tables, writing only real changes.

Code map, in the order a run flows through it:

    config    [[sync.jobs]] / [source] from r2sf.toml, validated into `Job` objects
    warehouse REDSHIFT_URL parameters and [source] keys -> redshift_connector.connect() arguments
    source    extract as COPY bytes: COPY text (postgresql://), or the redshift child (redshift://)
    redshift  the extract process: DECLARE/FETCH FORWARD with redshift_connector, rows to COPY CSV
    load      first load: COPY straight into an empty target; otherwise COPY into a temp staging
              table, check values, count changes in one join, write only what changed
    state     schema r2sf: migrations, sync_runs, watermarks, per-job advisory locks
    engine    `run_job()`: one run end to end, in one transaction, returning a `RunResult`
    schedule  the clock process (cron, catch-up, no overlap, retries with backoff, clean SIGTERM)
    alerts    the failure / recovery webhook
    discover  information_schema to ready-to-edit [[sync.jobs]] TOML
    progress  a progress bar on a terminal, key=value log lines otherwise
    errors    the failure hierarchy (and exit codes); commands: the CLI sub-commands
"""
