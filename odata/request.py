"""Turn an HTTP request into a parsed OData request: resource path, query options, format.

Decodes the query string form-style (`+` is a space), accepts 4.01's optional `$` prefix and
case-insensitive option names, and parses every expression option into its AST. It knows
nothing of the model: names are checked later, by `odata.plan`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal as Lit
from typing import TypeVar
from urllib.parse import parse_qsl, unquote

from odata import ast
from odata.errors import (
    BadRequest,
    InvalidQueryOption,
    NotAcceptable,
    NotImplementedFeature,
    QuerySyntaxError,
    ResourceNotFound,
)
from odata.parser import (
    parse_filter,
    parse_key,
    parse_literal,
    parse_orderby,
    parse_search,
    parse_select,
)

T = TypeVar("T")

MAX_TOP = 2**31 - 1

# URL Conventions §5: system query options. `supported` ones are parsed; the rest are valid
# OData that this service refuses with 501.
SUPPORTED_OPTIONS = frozenset(
    {
        "filter",
        "select",
        "orderby",
        "top",
        "skip",
        "count",
        "search",
        "skiptoken",
        "format",
        "deltatoken",
    }
)
UNSUPPORTED_OPTIONS = frozenset(
    {
        "expand",
        "apply",
        "compute",
        "levels",
        "index",
        "schemaversion",
        "id",
        "inlinecount",
    }
)

ResourceKind = Lit["service", "metadata", "collection", "count", "entity", "property", "value"]
MetadataLevel = Lit["minimal", "none", "full"]

_KEYED_SEGMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\((.*)\)$", re.DOTALL)
_VERSION = re.compile(r"(\d{1,3})(?:\.(\d{1,3}))?")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Resource:
    kind: ResourceKind
    entity_set: str | None = None
    key: ast.KeyPredicate | None = None
    prop: str | None = None


@dataclass(frozen=True, slots=True)
class QueryOptions:
    filter: ast.Expr | None = None
    select: tuple[ast.SelectItem, ...] | None = None
    orderby: tuple[ast.OrderItem, ...] = ()
    top: int | None = None
    skip: int | None = None
    count: bool | None = None
    search: ast.SearchExpr | None = None
    skiptoken: str | None = None
    deltatoken: str | None = None  # a delta link's token (odata/changes.py)
    aliases: dict[str, ast.Literal] = field(default_factory=dict)
    # The options as the client wrote them, kept for nextLinks and the response context.
    raw: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Format:
    metadata: MetadataLevel = "minimal"
    ieee754: bool = False  # Int64 and Decimal as strings
    csdl_json: bool = False  # only for $metadata


@dataclass(frozen=True, slots=True)
class ODataRequest:
    resource: Resource
    options: QueryOptions
    format: Format


def parse_path(path: str) -> Resource:
    """`path` is the raw (still percent-encoded) path below the service root."""
    segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
    if not segments:
        return Resource("service")
    head = segments[0]
    if head == "$metadata" and len(segments) == 1:
        return Resource("metadata")
    if head.startswith("$"):
        if head in ("$batch", "$crossjoin", "$entity", "$all"):
            raise NotImplementedFeature(f"{head} is not supported by this service")
        raise ResourceNotFound(f"no resource named '{head}'")
    keyed = _KEYED_SEGMENT.match(head)
    key: ast.KeyPredicate | None = None
    if keyed:
        set_name = keyed.group(1)
        key = _parse_key(keyed.group(2))
    elif _IDENTIFIER.match(head):
        set_name = head
    else:
        raise ResourceNotFound(f"'{head}' is not an entity set name")
    rest = segments[1:]
    if key is None and rest:
        if rest[0] == "$count" and len(rest) == 1:
            return Resource("count", set_name)
        if not rest[0].startswith("$"):
            # Key-as-segment (OData 4.01 §4.3.6): /Set/1 means /Set(1).
            key = ast.KeyPredicate(((None, _segment_literal(rest[0])),))
            rest = rest[1:]
    if key is None:
        if rest:
            raise ResourceNotFound(f"'{'/'.join(rest)}' after '{set_name}' is not a valid path")
        return Resource("collection", set_name)
    if not rest:
        return Resource("entity", set_name, key)
    prop = rest[0]
    if not _IDENTIFIER.match(prop):
        raise ResourceNotFound(f"'{prop}' is not a property name")
    if len(rest) == 1:
        return Resource("property", set_name, key, prop)
    if len(rest) == 2 and rest[1] == "$value":
        return Resource("value", set_name, key, prop)
    raise ResourceNotFound(f"'{'/'.join(rest)}' is not a valid path below an entity")


def _parse_key(text: str) -> ast.KeyPredicate:
    try:
        return parse_key(text)
    except QuerySyntaxError as exc:
        raise QuerySyntaxError(f"invalid key predicate ({exc.message})", target="key") from None


def _segment_literal(text: str) -> ast.Literal:
    # In key-as-segment form a string key is written without quotes: /Sales/S-0001.
    try:
        literal = parse_literal(text)
    except (QuerySyntaxError, NotImplementedFeature):
        return ast.Literal(text, "Edm.String")
    return literal


def option_name(raw: str) -> str | None:
    """The canonical system option name for a query parameter, or None for a custom option."""
    lowered = raw.lower()
    if lowered.startswith("$"):
        return lowered[1:]
    if lowered in SUPPORTED_OPTIONS or lowered in UNSUPPORTED_OPTIONS:
        return lowered  # OData 4.01: the `$` prefix is optional
    return None


def parse_query(query_string: str) -> QueryOptions:
    try:
        pairs = parse_qsl(
            query_string,
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=1000,
        )
    except UnicodeDecodeError:
        raise BadRequest("the query string is not valid UTF-8 once percent-decoded") from None
    except ValueError:
        raise BadRequest("the query string has too many parameters (limit 1000)") from None
    raw: dict[str, str] = {}
    aliases: dict[str, ast.Literal] = {}
    for name, value in pairs:
        if name.startswith("@"):
            # Keyed without the `@`, the way the parser names an alias in an expression.
            aliases[name[1:]] = _alias_value(name, value)
            continue
        option = option_name(name)
        if option is None:
            continue  # custom query options are allowed and ignored (URL Conventions §5.2)
        if option in raw:
            raise InvalidQueryOption(f"${option} is given more than once", target=f"${option}")
        if option in UNSUPPORTED_OPTIONS:
            raise NotImplementedFeature(
                f"${option} is not supported by this service", target=f"${option}"
            )
        if option not in SUPPORTED_OPTIONS:
            raise InvalidQueryOption(
                f"unknown system query option '{name}'; supported: "
                + ", ".join(f"${o}" for o in sorted(SUPPORTED_OPTIONS)),
                target=name,
            )
        raw[option] = value
    return QueryOptions(
        filter=_expr(raw, "filter", parse_filter),
        select=_expr(raw, "select", parse_select),
        orderby=_expr(raw, "orderby", parse_orderby) or (),
        top=_integer(raw, "top"),
        skip=_integer(raw, "skip"),
        count=_boolean(raw, "count"),
        search=_expr(raw, "search", parse_search),
        skiptoken=raw.get("skiptoken") or None,
        deltatoken=raw.get("deltatoken") or None,
        aliases=aliases,
        raw=raw,
    )


def _alias_value(name: str, value: str) -> ast.Literal:
    try:
        return parse_literal(value)
    except QuerySyntaxError as exc:
        raise QuerySyntaxError(f"parameter alias {name}: {exc.message}", target=name) from None


def _expr(raw: dict[str, str], option: str, parse: Callable[[str], T]) -> T | None:
    text = raw.get(option)
    if text is None:
        return None
    if not text.strip():
        raise InvalidQueryOption(f"${option} is empty", target=f"${option}")
    try:
        return parse(text)
    except QuerySyntaxError as exc:
        message = exc.message if exc.message.startswith("$") else f"${option}: {exc.message}"
        raise QuerySyntaxError(message, target=f"${option}", position=exc.position) from None


def _integer(raw: dict[str, str], option: str) -> int | None:
    text = raw.get(option)
    if text is None:
        return None
    if not text.isdigit() or not text.isascii():
        raise InvalidQueryOption(
            f"${option} must be a non-negative integer, got '{text[:40]}'", target=f"${option}"
        )
    value = int(text)
    if value > MAX_TOP:
        raise InvalidQueryOption(f"${option} must be at most {MAX_TOP}", target=f"${option}")
    return value


def _boolean(raw: dict[str, str], option: str) -> bool | None:
    text = raw.get(option)
    if text is None:
        return None
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise InvalidQueryOption(
            f"${option} must be true or false, got '{text[:40]}'", target=f"${option}"
        )
    return lowered == "true"


def _media_params(media: str) -> tuple[str, dict[str, str]]:
    kind, *params = (p.strip() for p in media.split(";"))
    parsed: dict[str, str] = {}
    for p in params:
        k, _, v = p.partition("=")
        parsed[k.strip().lower()] = v.strip().strip('"').lower()
    return kind.lower(), parsed


def negotiate(
    resource: Resource,
    accept: str | None,
    format_option: str | None,
    max_version: tuple[int, int] = (4, 0),
) -> Format:
    """Pick the response format: `$format` wins over the Accept header. `max_version` is the
    client's OData-MaxVersion (see `check_max_version`)."""
    if format_option is not None:
        kind, params = _media_params(format_option)
        if kind in ("json", "application/json"):
            return _json_format(params, csdl=resource.kind == "metadata")
        if kind in ("xml", "application/xml") and resource.kind == "metadata":
            return Format()
        raise NotAcceptable(
            f"$format={format_option[:40]} is not available; use $format=json", target="$format"
        )
    ranges = [_media_params(m) for m in (accept or "").split(",") if m.strip()]
    if resource.kind == "metadata":
        return Format(csdl_json=_wants_csdl_json(ranges, max_version))
    kinds = {kind for kind, params in ranges if "q" not in params or _quality(params) > 0}
    textual = resource.kind in ("count", "value") and bool(kinds & {"text/plain", "text/*"})
    if ranges and not textual and not kinds & {"application/json", "application/*", "*/*"}:
        raise NotAcceptable(
            "this service answers data requests in JSON only: send Accept: application/json"
        )
    params = next((p for kind, p in ranges if kind == "application/json"), {})
    return _json_format(params, csdl=False)


_XML_KINDS = ("application/xml", "text/xml", "application/*", "*/*")


def _quality(params: dict[str, str]) -> float:
    """A media range's `q`; 0 means "not acceptable" (RFC 9110 §12.4.2)."""
    try:
        return min(max(float(params.get("q", "1")), 0.0), 1.0)
    except ValueError:
        return 1.0


def _wants_csdl_json(
    ranges: list[tuple[str, dict[str, str]]], max_version: tuple[int, int]
) -> bool:
    """CSDL JSON only for a 4.01 client that prefers JSON to XML (XML when they tie).

    CSDL JSON is an OData 4.01 format: a 4.0 client (OData-MaxVersion 4.0, or none) gets CSDL
    XML whatever its Accept header says (spec §5); it can still ask with `$format=json`.
    """
    if max_version < (4, 1):
        return False
    quality: dict[str, float] = {}
    for kind, params in ranges:
        quality[kind] = max(quality.get(kind, 0.0), _quality(params))
    xml = max(quality.get(kind, 0.0) for kind in _XML_KINDS)
    return quality.get("application/json", 0.0) > xml


def _json_format(params: dict[str, str], *, csdl: bool) -> Format:
    metadata = params.get("odata.metadata", params.get("metadata", "minimal"))
    if metadata not in ("minimal", "none", "full"):
        raise NotAcceptable(f"odata.metadata={metadata} is not one of minimal, none, full")
    ieee = params.get("ieee754compatible", "false") == "true"
    return Format(metadata=metadata, ieee754=ieee, csdl_json=csdl)  # type: ignore[arg-type]


def check_max_version(header: str | None) -> tuple[int, int]:
    """The client's OData-MaxVersion as (major, minor); no header (or an empty one) is taken as
    4.0, the version Salesforce's OData 4.0 adapter speaks."""
    if header is None or not header.strip():
        return (4, 0)
    match = _VERSION.fullmatch(header.strip())
    if match is None:
        raise BadRequest(f"OData-MaxVersion '{header[:20]}' is not a version number such as 4.0")
    if int(match.group(1)) < 4:
        raise BadRequest(
            f"this is an OData 4.0 service; the request allows at most OData {header.strip()}: "
            "use the OData 4.0 or 4.01 adapter (OData-MaxVersion: 4.0)"
        )
    return (int(match.group(1)), int(match.group(2) or 0))
