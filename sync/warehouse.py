"""How r2sf reaches the warehouse: `REDSHIFT_URL` query parameters and `[source]` keys, checked,
turned into `redshift_connector.connect()` arguments, and described without secrets.

One URL carries every option: `[source]` keys are merged into its query string (the URL's own
parameters win), so the extract process, `r2sf check` and the logs all read the same thing.
Secrets never travel in the query string: the password is in the URL's user part (redacted by
`redact_url`) and AWS keys come from the environment of the process that connects. This module
never connects anywhere.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

DEFAULT_PORT = 5439
CONNECT_TIMEOUT = 30  # seconds to open the connection (TCP, TLS, authentication)
# TCP keepalives on the warehouse socket: an idle or waiting connection whose peer vanished
# (a NAT or firewall dropping state, a cluster failing over) is found dead after about
# IDLE + INTERVAL * COUNT seconds instead of the kernel's two hours.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 15
KEEPALIVE_COUNT = 4
# A send the peer never acknowledges gives up after this long (TCP_USER_TIMEOUT), instead of
# the kernel's ~15 minutes of retransmissions.
TCP_USER_TIMEOUT_MS = 120_000

SSLMODES = ("disable", "require", "verify-ca", "verify-full")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Param:
    kind: str  # "bool", "int", "str", "list", "sslmode"
    help: str


# Every option r2sf accepts, as a REDSHIFT_URL query parameter or a [source] key. The names are
# redshift_connector's own (https://github.com/aws/amazon-redshift-python-driver, "Connection
# Parameters"), except `workgroup` (its serverless_work_group) and `connect_timeout`.
PARAMS: dict[str, Param] = {
    "sslmode": Param("sslmode", "disable, verify-ca (default) or verify-full"),
    "iam": Param("bool", "authenticate with IAM (GetClusterCredentials) instead of a password"),
    "cluster_identifier": Param("str", "the provisioned cluster's name, for IAM"),
    "db_user": Param("str", "the database user IAM credentials are issued for"),
    "db_groups": Param("list", "comma-separated database groups the IAM user joins"),
    "auto_create": Param("bool", "create db_user on first IAM login"),
    "region": Param("str", "the AWS region of the cluster or workgroup"),
    "profile": Param("str", "an AWS profile (~/.aws/config) holding the IAM credentials"),
    "workgroup": Param("str", "a Redshift Serverless workgroup"),
    "serverless_acct_id": Param("str", "the AWS account of a Serverless workgroup"),
    "connect_timeout": Param("int", "seconds to open the connection (default 30)"),
}

# AWS credentials the driver may take from the environment (never from a URL or a file of ours).
AWS_KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class OptionError(ValueError):
    """A bad option: `key` names it, the message says what is wrong, `fix` what to write."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem
        self.fix = fix


def is_redshift(url: str) -> bool:
    return url.split("://", 1)[0] == "redshift"


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _as_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def merge_options(url: str, options: Mapping[str, Any]) -> str:
    """`url` with `[source]` options added to its query string; the URL's own values win."""
    if not options:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in options.items():
        if value is not None and key not in query:
            query[key] = _as_text(key, value)
    return urlunsplit(parts._replace(query=urlencode(query, safe=",")))


def check_options(url: str) -> None:
    """Raise `OptionError` for an unknown parameter or a value of the wrong kind.

    A postgresql:// source's parameters are libpq's, checked by asyncpg when it connects.
    """
    if not is_redshift(url):
        return
    for key, value in _query(url).items():
        param = PARAMS.get(key)
        if param is None:
            guess = difflib.get_close_matches(key, list(PARAMS), n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else "known: " + ", ".join(PARAMS)
            raise OptionError(key, "unknown option", f"remove it or rename it ({hint})")
        _parse(key, param, value)
    opts = _query(url)
    if _parse("iam", PARAMS["iam"], opts.get("iam", "false")) and not (
        opts.get("cluster_identifier") or opts.get("workgroup") or _is_serverless_host(url)
    ):
        raise OptionError(
            "iam",
            "IAM authentication needs the cluster or the Serverless workgroup",
            "add cluster_identifier=NAME (provisioned) or workgroup=NAME (Serverless)",
        )


def _parse(key: str, param: Param, value: str) -> Any:
    if param.kind == "bool":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise OptionError(key, f"'{value}' is not true or false", f"write {key}=true or false")
    if param.kind == "int":
        if not value.isdigit() or int(value) < 1:
            raise OptionError(key, f"'{value}' is not a number of seconds", f"e.g. {key}=30")
        return int(value)
    if param.kind == "list":
        return [v.strip() for v in value.split(",") if v.strip()]
    if param.kind == "sslmode":
        if value not in SSLMODES:
            raise OptionError(key, f"'{value}' is not an sslmode", "use " + ", ".join(SSLMODES))
        return value
    if not value:
        raise OptionError(key, "is empty", f"give {key} a value or remove it")
    return value


def _is_serverless_host(url: str) -> bool:
    return (urlsplit(url).hostname or "").endswith(".redshift-serverless.amazonaws.com")


def _options(url: str) -> dict[str, Any]:
    return {k: _parse(k, PARAMS[k], v) for k, v in _query(url).items() if k in PARAMS}


def connect_args(url: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`redshift_connector.connect()` keyword arguments for a redshift:// URL.

    SSL is on with certificate verification unless `sslmode=disable` (the driver has no
    unverified mode, so `require` verifies the CA too). Timeouts and keepalives are always set.
    """
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    opts = _options(url)
    args: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or DEFAULT_PORT,
        "database": unquote(parts.path.lstrip("/")) or "dev",
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "application_name": "r2sf sync",
        "timeout": opts.get("connect_timeout", CONNECT_TIMEOUT),
        "tcp_keepalive": True,
        "tcp_keepalive_idle": KEEPALIVE_IDLE,
        "tcp_keepalive_interval": KEEPALIVE_INTERVAL,
        "tcp_keepalive_count": KEEPALIVE_COUNT,
    }
    sslmode = opts.get("sslmode", "verify-ca")
    if sslmode == "disable":
        args["ssl"] = False
    else:
        args["ssl"] = True
        args["sslmode"] = "verify-full" if sslmode == "verify-full" else "verify-ca"
    serverless = "workgroup" in opts or _is_serverless_host(url)
    if serverless:
        args["is_serverless"] = True
        if "workgroup" in opts:
            args["serverless_work_group"] = opts["workgroup"]
        if "serverless_acct_id" in opts:
            args["serverless_acct_id"] = opts["serverless_acct_id"]
    if opts.get("iam"):
        args["iam"] = True
        args.pop("password")
        if not args["user"]:
            args.pop("user")
        for key in ("cluster_identifier", "db_user", "db_groups", "auto_create", "region"):
            if key in opts:
                args[key] = opts[key]
        if "profile" in opts:
            args["profile"] = opts["profile"]
        elif env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
            args["access_key_id"] = env["AWS_ACCESS_KEY_ID"]
            args["secret_access_key"] = env["AWS_SECRET_ACCESS_KEY"]
            if env.get("AWS_SESSION_TOKEN"):
                args["session_token"] = env["AWS_SESSION_TOKEN"]
    elif "region" in opts:
        args["region"] = opts["region"]
    return args


def describe(url: str, environ: Mapping[str, str] | None = None) -> str:
    """How the warehouse is reached, in words, without any secret: for `r2sf check` and logs."""
    if not is_redshift(url):
        return "PostgreSQL protocol (asyncpg)"
    env = os.environ if environ is None else environ
    args = connect_args(url, env)
    parts = []
    if args.get("iam"):
        who = f"db_user {args['db_user']}" if "db_user" in args else "the IAM identity's user"
        where = (
            f"Serverless workgroup {args['serverless_work_group']}"
            if "serverless_work_group" in args
            else f"cluster {args.get('cluster_identifier', '(from the host name)')}"
        )
        cred = (
            f"profile {args['profile']}"
            if "profile" in args
            else f"keys from AWS_ACCESS_KEY_ID ({_mask(args['access_key_id'])})"
            if "access_key_id" in args
            else "the default AWS credential chain"
        )
        text = f"IAM as {who} on {where} via {cred}"
        if args.get("db_groups"):
            text += f", groups {','.join(args['db_groups'])}"
        if args.get("region"):
            text += f", region {args['region']}"
        parts.append(text)
    else:
        kind = "Serverless " if args.get("is_serverless") else ""
        parts.append(f"{kind}password authentication as {args.get('user') or '(no user)'}")
    parts.append(f"sslmode {args['sslmode']}" if args["ssl"] else "SSL off")
    parts.append(f"connect timeout {args['timeout']} s")
    return "; ".join(parts)


def _mask(secret: str) -> str:
    return secret[:4] + "…" + secret[-2:] if len(secret) > 8 else "…"
