"""The vocabulary of parsed OData expressions: `$filter`, `$orderby`, `$select`, `$search`, keys.

Plain frozen dataclasses produced by `odata.request` and consumed by `odata.plan`. They carry
names exactly as the client wrote them; nothing here knows the model or SQL.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from dataclasses import dataclass
from typing import Literal as Lit
from typing import TypeAlias

# The Edm type a literal was written as (OData ABNF `primitiveLiteral`); None for `null`.
LiteralValue: TypeAlias = (
    bool
    | int
    | decimal.Decimal
    | float
    | str
    | bytes
    | dt.date
    | dt.datetime
    | dt.time
    | dt.timedelta
    | uuid.UUID
    | None
)


@dataclass(frozen=True, slots=True)
class Literal:
    """A primitive literal. `edm_type` is e.g. "Edm.Int32", "Edm.String", or "null".

    Integer literals get the smallest of Edm.Byte/SByte/Int16/Int32/Int64 that holds them (the
    parser may simply pick Int32 or Int64); decimals without an exponent are Edm.Decimal, with an
    exponent Edm.Double; `INF`, `-INF`, `NaN` are Edm.Double floats. An OData 2.0 type suffix
    names the type: `100L` Edm.Int64, `2.5D` Edm.Double, `1.5F` Edm.Single (a float holding the
    nearest binary32 value), `10.0M` Edm.Decimal.
    """

    value: LiteralValue
    edm_type: str


@dataclass(frozen=True, slots=True)
class PropertyPath:
    """A (possibly multi-segment) member path such as `Name` or `Address/City`."""

    segments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Alias:
    """A parameter alias `@p` (its value comes from the query string)."""

    name: str


@dataclass(frozen=True, slots=True)
class TypeName:
    """A qualified type name used as a function argument, e.g. `Edm.String` in `cast`/`isof`."""

    name: str


@dataclass(frozen=True, slots=True)
class BinaryOp:
    """`op` is one of: eq ne gt ge lt le has and or add sub mul div divby mod."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class UnaryOp:
    """`op` is `not` or `neg` (arithmetic negation, `-x`)."""

    op: Lit["not", "neg"]
    operand: Expr


@dataclass(frozen=True, slots=True)
class In:
    """`left in (a, b, c)` (OData 4.01)."""

    left: Expr
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """A canonical function call, name lower-cased as written: `contains(Name,'x')`."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class LambdaExpr:
    """`path/any(v: pred)` or `path/all(v: pred)`; parsed so it can be refused with 501."""

    path: PropertyPath
    op: Lit["any", "all"]
    variable: str | None
    predicate: Expr | None


@dataclass(frozen=True, slots=True)
class ListExpr:
    """A bracketed collection literal `[1,2]` or `(1,2)` outside `in`; parsed, then refused."""

    items: tuple[Expr, ...]


Expr: TypeAlias = (
    Literal
    | PropertyPath
    | Alias
    | TypeName
    | BinaryOp
    | UnaryOp
    | In
    | Call
    | LambdaExpr
    | ListExpr
)


@dataclass(frozen=True, slots=True)
class OrderItem:
    expr: Expr
    descending: bool = False


@dataclass(frozen=True, slots=True)
class SelectItem:
    """One `$select` item: a property path, or `*` (segments == ("*",))."""

    segments: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchTerm:
    """A word or a "quoted phrase" from `$search`."""

    text: str
    phrase: bool = False


@dataclass(frozen=True, slots=True)
class SearchNot:
    operand: SearchExpr


@dataclass(frozen=True, slots=True)
class SearchBinary:
    """`op` is `and` (also implicit, between adjacent terms) or `or`."""

    op: Lit["and", "or"]
    left: SearchExpr
    right: SearchExpr


SearchExpr: TypeAlias = SearchTerm | SearchNot | SearchBinary


@dataclass(frozen=True, slots=True)
class KeyPredicate:
    """`(1)`, `('a')`, `(k1=1,k2='x')` or a key-as-segment value. `name` is None for a bare value."""

    values: tuple[tuple[str | None, Literal], ...]
