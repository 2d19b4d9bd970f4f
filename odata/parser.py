"""Parse OData query option text (`$filter`, `$orderby`, `$select`, `$search`, keys) into the AST.

A small tokenizer plus a precedence-climbing parser over the OData 4.01 ABNF. It checks syntax
and literal values only: it never looks at the model, never resolves names and never raises
anything but `QuerySyntaxError` (400) or `NotImplementedFeature` (501, valid OData we refuse).

Decisions, per the ABNF (RFC 7405: quoted strings are case-insensitive unless marked `%s`):
- operators, `not`, `true`/`false`, `asc`/`desc`, function names and the `binary`/`duration`
  prefixes are case-insensitive (`Name EQ 'x'` parses); `null`, `NaN`, `INF`, and the `$search`
  operators `AND`/`OR`/`NOT` are case-sensitive, exactly as the ABNF marks them with `%s`.
- precedence is URL Conventions 4.01 §5.1.1.15: `has`/`in` (primary) > `-`/`not` >
  `mul div divby mod` > `add sub` > `gt ge lt le` > `eq ne` > `and` > `or`; all left-associative.
- `$it`, `$root`, `$this`, `/$count`, `/$filter(...)`, annotations, enum and geo literals,
  JSON objects, key access and bound functions inside expressions raise NotImplementedFeature.
- Whitespace is lenient: any run of spaces/tabs between tokens, and leading/trailing blanks.
- Dates outside years 1-9999 are valid OData but not representable: NotImplementedFeature. A
  leap second in a date-time (`23:59:60Z`) rolls over to the next minute, as PostgreSQL does.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import difflib
import re
import struct
import typing
import uuid
from typing import NoReturn

from odata.ast import (
    Alias,
    BinaryOp,
    Call,
    Expr,
    In,
    KeyPredicate,
    LambdaExpr,
    ListExpr,
    Literal,
    OrderItem,
    PropertyPath,
    SearchBinary,
    SearchExpr,
    SearchNot,
    SearchTerm,
    SelectItem,
    TypeName,
    UnaryOp,
)
from odata.errors import NotImplementedFeature, QuerySyntaxError

__all__ = [
    "MAX_DEPTH",
    "parse_filter",
    "parse_key",
    "parse_literal",
    "parse_orderby",
    "parse_search",
    "parse_select",
]

# Nesting deeper than this (parentheses, `not`, `-`, calls, lists) is refused: no real client
# needs it, and it keeps Python's recursion limit far away whatever the caller's stack depth.
MAX_DEPTH = 100
# Numbers longer than this are refused before int()/Decimal() see them (int() refuses > 4300
# digits with ValueError; nothing meaningful is that long).
_MAX_NUMBER_CHARS = 100

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

# Binary operators and their precedence (higher binds tighter), URL Conventions §5.1.1.15.
_BINARY_PREC: dict[str, int] = {
    "or": 1,
    "and": 2,
    "eq": 3,
    "ne": 3,
    "gt": 4,
    "ge": 4,
    "lt": 4,
    "le": 4,
    "add": 5,
    "sub": 5,
    "mul": 6,
    "div": 6,
    "divby": 6,
    "mod": 6,
}
_KNOWN_OPERATORS = (*_BINARY_PREC, "has", "in")
# What people coming from SQL, SOQL or C type instead of the OData keyword.
_SYMBOL_HINTS = {
    "=": "eq",
    "==": "eq",
    "!=": "ne",
    "<>": "ne",
    ">": "gt",
    ">=": "ge",
    "<": "lt",
    "<=": "le",
    "&&": "and",
    "||": "or",
    "!": "not",
    "+": "add",
    "-": "sub",
    "*": "mul",
    "/": "div",
    "%": "mod",
    "like": "contains(Prop,'text') eq true",
    "equals": "eq",
    "is": "eq",
}

# --- tokenizer ------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t]+)
  | (?P<str>'(?:[^']|'')*')
  | (?P<dqstr>"(?:[^"\\]|\\.)*")
  | (?P<guid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![\w.-]))
  | (?P<date>-?\d{4,}-\d\d-\d\d(?:[Tt][\d:.]*(?:[Zz]|[+-][\d:]*)?)?)
  | (?P<time>\d\d:[\d:.]*)
  | (?P<num>\+?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:[LlDdFfMm](?![\w.]))?)
  | (?P<ident>[^\W\d]\w*(?:\.[^\W\d]\w*)*)
  | (?P<dollar>\$[^\W\d]\w*)
  | (?P<at>@[^\W\d]\w*(?:\.[^\W\d]\w*)*(?:\#[^\W\d]\w*)?)
  | (?P<sym>==|!=|<>|<=|>=|&&|\|\||[()\[\]{},/:=<>!&|*;+%.-])
  | (?P<bad>.)
    """,
    re.VERBOSE,
)


_WORD_RE = re.compile(r"\+?[\w.]+")


class _Tok:
    __slots__ = ("end", "kind", "low", "pos", "text")

    def __init__(self, kind: str, text: str, pos: int, end: int) -> None:
        self.kind = kind
        self.text = text
        self.pos = pos
        self.end = end
        # Keywords are case-insensitive: compare identifiers by their lower-case form.
        self.low = text.lower() if kind == "ident" else ""

    def is_sym(self, text: str) -> bool:
        return self.kind == "sym" and self.text == text

    def is_word(self, lower: str) -> bool:
        return self.low == lower


_EOF_KIND = "eof"


def _describe(tok: _Tok) -> str:
    if tok.kind == _EOF_KIND:
        return "end of input"
    text = tok.text if len(tok.text) <= 30 else tok.text[:27] + "..."
    return repr(text)


def _tokenize(text: str, target: str) -> list[_Tok]:
    toks: list[_Tok] = []
    n = len(text)
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup or ""
        if kind == "ws":
            continue
        pos = m.start()
        if kind == "bad":
            ch = text[pos]
            if ch == "'":
                _fail(
                    target,
                    pos,
                    "string literal opened here is never closed (write '' for a quote inside it)",
                )
            if ch == '"':
                _fail(target, pos, "double-quoted string opened here is never closed")
            _fail(target, pos, f"unexpected character {ch!r}")
        end = m.end()
        if kind == "num" and end < n and (text[end].isalnum() or text[end] in "_."):
            word = _WORD_RE.match(text, pos)
            shown = word.group() if word else text[pos : end + 1]
            _fail(target, end, f"malformed number {shown[:30]!r}")
        toks.append(_Tok(kind, m.group(), pos, end))
    # Two end markers, so that looking one token ahead never runs off the list.
    eof = _Tok(_EOF_KIND, "", n, n)
    toks += (eof, eof)
    return toks


def _fail(target: str, pos: int, message: str) -> NoReturn:
    raise QuerySyntaxError(f"{target}: at position {pos}: {message}", target=target, position=pos)


def _unsupported(target: str, pos: int, message: str) -> NoReturn:
    raise NotImplementedFeature(f"{target}: at position {pos}: {message}", target=target)


# --- literal values ---------------------------------------------------------------------------

_DATE_RE = re.compile(r"(-?)(0\d{3}|[1-9]\d{3,})-(\d\d)-(\d\d)")
_DATETIME_RE = re.compile(
    r"(-?)(0\d{3}|[1-9]\d{3,})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,12}))?)?"
    r"(?:([Zz])|([+-])(\d\d):(\d\d))"
)
_TIME_RE = re.compile(r"(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,12}))?)?")
_DURATION_RE = re.compile(
    r"(-?)[Pp](?:(\d{1,9})[Dd])?(?:[Tt](?:(\d{1,9})[Hh])?(?:(\d{1,9})[Mm])?(?:(\d{1,9})(?:\.(\d{1,12}))?[Ss])?)?"
)
_BASE64URL_RE = re.compile(
    r"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]=?|[A-Za-z0-9_-][AQgw](?:==)?)?"
)


def _micros(fraction: str | None) -> int:
    # Extra digits beyond microseconds are truncated, never rounded into the next second.
    return int((fraction or "0")[:6].ljust(6, "0"))


def _date_parts(
    target: str, pos: int, text: str, sign: str, year_s: str, month: str, day: str
) -> dt.date:
    year = int(year_s)
    if sign or not 1 <= year <= 9999:
        _unsupported(target, pos, f"dates outside years 1-9999 are not supported: {text!r}")
    try:
        return dt.date(year, int(month), int(day))
    except ValueError as exc:
        _fail(target, pos, f"invalid date {text!r}: {exc}")


def _date_literal(target: str, tok: _Tok) -> Literal:
    text = tok.text
    m = _DATETIME_RE.fullmatch(text)
    if m is not None:
        return _datetime_literal(target, tok, m)
    m = _DATE_RE.fullmatch(text)
    if m is None:
        if "T" in text or "t" in text:
            _fail(
                target,
                tok.pos,
                f"invalid date-time {text!r}: expected YYYY-MM-DDThh:mm[:ss[.fff]] followed by "
                "'Z' or an offset like +01:00",
            )
        _fail(target, tok.pos, f"invalid date {text!r}: expected YYYY-MM-DD")
    return Literal(_date_parts(target, tok.pos, text, *m.groups()), "Edm.Date")


def _datetime_literal(target: str, tok: _Tok, m: re.Match[str]) -> Literal:
    sign, year, month, day, hh, mm, ss, frac, zulu, tz_sign, tz_h, tz_m = m.groups()
    date = _date_parts(target, tok.pos, tok.text, sign, year, month, day)
    hour, minute, second = int(hh), int(mm), int(ss or 0)
    if hour > 23 or minute > 59 or second > 60:
        _fail(target, tok.pos, f"invalid time of day in {tok.text!r}: use 00:00:00 to 23:59:59")
    if zulu:
        tz = dt.UTC
    else:
        off_h, off_m = int(tz_h), int(tz_m)
        if off_h > 23 or off_m > 59:
            _fail(target, tok.pos, f"invalid time zone offset in {tok.text!r}")
        offset = dt.timedelta(hours=off_h, minutes=off_m)
        tz = dt.timezone(-offset if tz_sign == "-" else offset)
    leap = second == 60
    value = dt.datetime(
        date.year, date.month, date.day, hour, minute, 59 if leap else second, _micros(frac), tz
    )
    if leap:
        try:
            value = value.replace(microsecond=0) + dt.timedelta(seconds=1)
        except OverflowError:
            _unsupported(target, tok.pos, f"date-time out of range: {tok.text!r}")
    return Literal(value, "Edm.DateTimeOffset")


def _time_literal(target: str, tok: _Tok) -> Literal:
    m = _TIME_RE.fullmatch(tok.text)
    if m is None:
        _fail(target, tok.pos, f"invalid time of day {tok.text!r}: expected hh:mm[:ss[.fff]]")
    hh, mm, ss, frac = m.groups()
    hour, minute, second = int(hh), int(mm), int(ss or 0)
    if hour > 23 or minute > 59 or second > 60:
        _fail(target, tok.pos, f"invalid time of day {tok.text!r}: use 00:00:00 to 23:59:59")
    if second == 60:
        _unsupported(target, tok.pos, "leap seconds in a time of day are not supported")
    return Literal(dt.time(hour, minute, second, _micros(frac)), "Edm.TimeOfDay")


# OData 2.0 wrote a type suffix after numbers (`100000L`, `2.5D`, `1.5F`, `10.0M`) and some v4
# clients still do by default (the SAP Cloud SDK's serializers). The v4 ABNF has no suffixes,
# but no OASIS test case forbids them: they are read as the v4 literal of the type they name.
_NUMBER_SUFFIXES = {"l": "Edm.Int64", "d": "Edm.Double", "f": "Edm.Single", "m": "Edm.Decimal"}
_SINGLE = struct.Struct("<f")


def _number_literal(target: str, text: str, pos: int, negative: bool) -> Literal:
    if len(text) > _MAX_NUMBER_CHARS:
        _fail(target, pos, f"number literal longer than {_MAX_NUMBER_CHARS} characters")
    if negative:
        text = "-" + text
    suffix = text[-1].lower()
    if suffix in _NUMBER_SUFFIXES:
        return _suffixed_number(target, text[:-1], pos, _NUMBER_SUFFIXES[suffix], text[-1])
    if "e" in text or "E" in text:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            _fail(target, pos, f"number {text!r} is out of range for Edm.Double")
        return Literal(value, "Edm.Double")
    if "." in text:
        return Literal(decimal.Decimal(text), "Edm.Decimal")
    number = int(text)
    if _INT32[0] <= number <= _INT32[1]:
        return Literal(number, "Edm.Int32")
    if _INT64[0] <= number <= _INT64[1]:
        return Literal(number, "Edm.Int64")
    return Literal(decimal.Decimal(number), "Edm.Decimal")


def _suffixed_number(target: str, body: str, pos: int, edm: str, suffix: str) -> Literal:
    if edm == "Edm.Int64":
        if not body.lstrip("-").isdigit():
            _fail(
                target,
                pos,
                f"malformed number {body + suffix!r}: the {suffix} suffix (Edm.Int64) needs a "
                f"whole number; write {body} without it",
            )
        whole = int(body)
        if not _INT64[0] <= whole <= _INT64[1]:
            _fail(target, pos, f"number {body + suffix!r} is out of range for Edm.Int64")
        return Literal(whole, edm)
    if edm == "Edm.Decimal":
        number = decimal.Decimal(body)
        exponent = number.as_tuple().exponent
        if not number:
            return Literal(decimal.Decimal(0), edm)
        # PostgreSQL's numeric holds 131072 digits before the point and 16383 after it.
        if number.adjusted() >= 131072 or not isinstance(exponent, int) or exponent < -16383:
            _fail(target, pos, f"number {body + suffix!r} is out of range for Edm.Decimal")
        return Literal(number, edm)
    value = float(body)
    try:
        if edm == "Edm.Single":  # the nearest binary32 value, as the client's float was
            value = _SINGLE.unpack(_SINGLE.pack(value))[0]
    except OverflowError:
        value = float("inf")
    if value in (float("inf"), float("-inf")):
        _fail(target, pos, f"number {body + suffix!r} is out of range for {edm}")
    return Literal(value, edm)


def _string_value(tok: _Tok) -> str:
    return tok.text[1:-1].replace("''", "'")


def _typed_literal(target: str, prefix: _Tok, body: _Tok) -> Literal:
    kind = prefix.text.lower()
    value = _string_value(body)
    if kind == "binary":
        if _BASE64URL_RE.fullmatch(value) is None:
            _fail(
                target,
                body.pos,
                "invalid binary literal: expected base64url text (A-Z a-z 0-9 - _)",
            )
        padded = value.rstrip("=")
        padded += "=" * (-len(padded) % 4)
        try:
            data = base64.b64decode(padded, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            _fail(target, body.pos, "invalid binary literal: not valid base64url")
        return Literal(data, "Edm.Binary")
    if kind == "duration":
        return _duration_literal(target, body.pos, value)
    if kind in ("geography", "geometry"):
        _unsupported(target, prefix.pos, f"{kind} literals are not supported")
    if "." in prefix.text:
        _unsupported(
            target, prefix.pos, f"enumeration literals ({prefix.text}'...') are not supported"
        )
    hint = ""
    if kind in ("datetime", "datetimeoffset", "date", "time", "guid"):
        hint = " (OData v4 writes dates, times and guids unquoted, e.g. 2024-01-31T00:00:00Z)"
    _fail(target, prefix.pos, f"unknown literal prefix {prefix.text!r}{hint}")


def _duration_literal(target: str, pos: int, value: str) -> Literal:
    m = _DURATION_RE.fullmatch(value)
    if m is None or value.rstrip("Tt").lower().endswith("p") or value[-1:] in "Tt":
        _fail(
            target,
            pos,
            f"invalid duration {value!r}: expected e.g. P1DT2H30M or PT0.5S (no years or months)",
        )
    sign, days, hours, minutes, seconds, frac = m.groups()
    try:
        delta = dt.timedelta(
            days=int(days or 0),
            hours=int(hours or 0),
            minutes=int(minutes or 0),
            seconds=int(seconds or 0),
            microseconds=_micros(frac),
        )
    except OverflowError:
        _fail(target, pos, f"duration {value!r} is out of range")
    return Literal(-delta if sign else delta, "Edm.Duration")


# --- expression parser ------------------------------------------------------------------------


class _Parser:
    __slots__ = ("depth", "i", "target", "toks")

    def __init__(self, text: str, target: str) -> None:
        self.target = target
        self.toks = _tokenize(text, target)
        self.i = 0
        self.depth = 0

    # token helpers

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[self.i + ahead]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != _EOF_KIND:
            self.i += 1
        return tok

    def fail(self, pos: int, message: str) -> NoReturn:
        _fail(self.target, pos, message)

    def unsupported(self, pos: int, message: str) -> NoReturn:
        _unsupported(self.target, pos, message)

    def expect_sym(self, sym: str, context: str) -> _Tok:
        tok = self.peek()
        if not tok.is_sym(sym):
            self.fail(tok.pos, f"expected {sym!r} {context}, found {_describe(tok)}")
        return self.next()

    def close_paren(self, opener: _Tok) -> None:
        tok = self.peek()
        if not tok.is_sym(")"):
            self.fail(
                tok.pos,
                f"expected ')' to close '(' opened at position {opener.pos}, "
                f"found {_describe(tok)}",
            )
        self.next()

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(pos, f"expression nested deeper than {MAX_DEPTH} levels")

    def at_end(self) -> None:
        tok = self.peek()
        if tok.kind == _EOF_KIND:
            return
        if tok.is_sym(")"):
            self.fail(tok.pos, "unexpected ')' with no '(' to close")
        self.bad_operator(tok)

    def bad_operator(self, tok: _Tok) -> NoReturn:
        word = tok.text.lower()
        if tok.kind in ("ident", "sym") and word not in _KNOWN_OPERATORS:
            guess = _SYMBOL_HINTS.get(word)
            if guess is None and tok.kind == "ident":
                close = difflib.get_close_matches(word, _KNOWN_OPERATORS, n=1, cutoff=0.6)
                guess = close[0] if close else None
            if guess is not None or tok.kind == "ident":
                hint = f" (did you mean '{guess}'?)" if guess else ""
                raise QuerySyntaxError(
                    f"{self.target}: unknown operator {tok.text!r} at position {tok.pos}{hint}",
                    target=self.target,
                    position=tok.pos,
                )
        self.fail(tok.pos, f"unexpected {_describe(tok)}: expected an operator or the end")

    # grammar

    def expr(self, min_prec: int = 1) -> Expr:
        left = self.unary()
        while True:
            op = self.toks[self.i].low
            prec = _BINARY_PREC.get(op)
            if prec is None or prec < min_prec:
                return left
            self.next()
            right = self.expr(prec + 1)
            left = BinaryOp(op, left, right)

    def unary(self) -> Expr:
        tok = self.toks[self.i]
        if tok.is_sym("-"):
            self.next()
            nxt = self.peek()
            if nxt.pos == tok.end and nxt.kind == "num" and not nxt.text.startswith("+"):
                self.next()
                return self.postfix(_number_literal(self.target, nxt.text, nxt.pos, True))
            if nxt.pos == tok.end and nxt.kind == "ident" and nxt.text == "INF":
                self.next()
                return self.postfix(Literal(float("-inf"), "Edm.Double"))
            self.enter(tok.pos)
            operand = self.unary()
            self.depth -= 1
            return UnaryOp("neg", operand)
        if tok.is_word("not") and self.starts_operand(self.peek(1)):
            self.next()
            self.enter(tok.pos)
            operand = self.unary()
            self.depth -= 1
            return UnaryOp("not", operand)
        return self.postfix(self.primary())

    def starts_operand(self, tok: _Tok) -> bool:
        if tok.kind == _EOF_KIND:
            return False
        if tok.kind == "ident":
            return tok.low not in _BINARY_PREC
        return not (tok.kind == "sym" and tok.text in ("),]}"))

    def postfix(self, left: Expr) -> Expr:
        # `has` and `in` are primary-level operators in OData 4.01.
        while True:
            tok = self.toks[self.i]
            if tok.low == "has":
                self.next()
                left = BinaryOp("has", left, self.primary())
            elif tok.low == "in":
                self.next()
                left = self.in_list(left)
            else:
                return left

    def in_list(self, left: Expr) -> Expr:
        tok = self.peek()
        if tok.is_sym("["):
            array = self.primary()
            assert isinstance(array, ListExpr)
            return In(left, array.items)
        if not tok.is_sym("("):
            return In(left, (self.primary(),))
        opener = self.next()
        self.enter(opener.pos)
        items: list[Expr] = []
        if not self.peek().is_sym(")"):
            items.append(self.expr())
            while self.peek().is_sym(","):
                comma = self.next()
                if not isinstance(items[0], Literal):
                    self.fail(comma.pos, "a list after 'in' may only contain literals")
                item_tok = self.peek()
                item = self.expr()
                if not isinstance(item, Literal):
                    self.fail(item_tok.pos, "a list after 'in' may only contain literals")
                items.append(item)
        self.close_paren(opener)
        self.depth -= 1
        return In(left, tuple(items))

    def primary(self) -> Expr:
        tok = self.next()
        kind = tok.kind
        if kind == "str":
            return Literal(_string_value(tok), "Edm.String")
        if kind == "num":
            return _number_literal(self.target, tok.text.lstrip("+"), tok.pos, False)
        if kind == "ident":
            return self.identifier(tok)
        if kind == "date":
            return _date_literal(self.target, tok)
        if kind == "time":
            return _time_literal(self.target, tok)
        if kind == "guid":
            return Literal(uuid.UUID(tok.text), "Edm.Guid")
        if tok.is_sym("("):
            self.enter(tok.pos)
            inner = self.expr()
            self.close_paren(tok)
            self.depth -= 1
            return inner
        if tok.is_sym("["):
            return self.array(tok)
        if tok.is_sym("{"):
            self.unsupported(tok.pos, "JSON object literals are not supported")
        if kind == "dollar":
            self.dollar(tok)
        if kind == "at":
            return self.alias(tok)
        if kind == "dqstr":
            self.fail(tok.pos, "strings are written in single quotes: 'text'")
        if kind == _EOF_KIND:
            self.fail(tok.pos, "expression expected, found end of input")
        self.fail(tok.pos, f"expression expected, found {_describe(tok)}")

    def dollar(self, tok: _Tok) -> NoReturn:
        if tok.text in ("$it", "$root", "$this"):
            self.unsupported(tok.pos, f"{tok.text} is not supported")
        self.fail(tok.pos, f"unexpected {tok.text!r}")

    def alias(self, tok: _Tok) -> Expr:
        if "." in tok.text or self.peek().is_sym("/"):
            self.unsupported(tok.pos, "annotations in expressions are not supported")
        return Alias(tok.text[1:])

    def array(self, opener: _Tok) -> ListExpr:
        self.enter(opener.pos)
        items: list[Expr] = []
        if not self.peek().is_sym("]"):
            while True:
                tok = self.peek()
                if tok.kind == "dqstr":
                    self.next()
                    items.append(Literal(_json_string(self.target, tok), "Edm.String"))
                else:
                    items.append(self.expr())
                if not self.peek().is_sym(","):
                    break
                self.next()
        tok = self.peek()
        if not tok.is_sym("]"):
            self.fail(
                tok.pos,
                f"expected ']' to close '[' opened at position {opener.pos}, "
                f"found {_describe(tok)}",
            )
        self.next()
        self.depth -= 1
        return ListExpr(tuple(items))

    def identifier(self, tok: _Tok) -> Expr:
        text = tok.text
        nxt = self.peek()
        if nxt.kind == "str" and nxt.pos == tok.end:
            self.next()
            return _typed_literal(self.target, tok, nxt)
        lower = tok.low
        if lower in ("true", "false"):
            return Literal(lower == "true", "Edm.Boolean")
        if text == "null":
            return Literal(None, "null")
        if text in ("INF", "NaN"):
            return Literal(float("inf") if text == "INF" else float("nan"), "Edm.Double")
        if nxt.is_sym("("):
            if lower in ("any", "all"):
                self.fail(
                    nxt.pos,
                    f"{lower}() needs a collection path before it, "
                    f"e.g. Orders/{lower}(o:o/Amount gt 0)",
                )
            call = self.call(tok)
            if self.peek().is_sym("/"):
                self.unsupported(self.peek().pos, "paths after a function call are not supported")
            return call
        return self.path(tok, argument=False)

    def call(self, name: _Tok) -> Call:
        opener = self.next()
        self.enter(opener.pos)
        args: list[Expr] = []
        if not self.peek().is_sym(")"):
            if self.peek().kind == "ident" and self.peek(1).is_sym("="):
                self.unsupported(name.pos, "functions with named parameters are not supported")
            while True:
                args.append(self.argument())
                if not self.peek().is_sym(","):
                    break
                self.next()
        self.close_paren(opener)
        self.depth -= 1
        return Call(name.text.lower(), tuple(args))

    def argument(self) -> Expr:
        tok = self.peek()
        # A bare qualified name as an argument is a type (`cast(X, Edm.String)`, `isof(Model.T)`).
        if tok.kind == "ident" and "." in tok.text:
            nxt = self.peek(1)
            if not (
                nxt.is_sym("(") or nxt.is_sym("/") or (nxt.kind == "str" and nxt.pos == tok.end)
            ):
                self.next()
                return TypeName(tok.text)
        return self.expr()

    def path(self, first: _Tok, *, argument: bool) -> Expr:
        segments = [first.text]
        while self.peek().is_sym("/"):
            slash = self.next()
            seg = self.next()
            if seg.kind == "ident":
                if self.peek().is_sym("("):
                    if seg.text.lower() in ("any", "all"):
                        return self.lambda_expr(PropertyPath(tuple(segments)), seg)
                    self.unsupported(seg.pos, "functions bound to a path are not supported")
                segments.append(seg.text)
            elif seg.kind == "dollar" and seg.text in (
                "$count",
                "$filter",
                "$it",
                "$root",
                "$this",
            ):
                self.unsupported(seg.pos, f"{seg.text} inside an expression is not supported")
            elif seg.kind == "at":
                self.unsupported(seg.pos, "annotations in expressions are not supported")
            else:
                self.fail(
                    seg.pos,
                    f"expected a property name after '/' at position {slash.pos}, "
                    f"found {_describe(seg)}",
                )
        if self.peek().is_sym("("):
            self.unsupported(self.peek().pos, "key access inside an expression is not supported")
        if len(segments) == 1 and "." in first.text and not argument:
            self.fail(first.end, f"qualified name {first.text!r} must be followed by '(' or '/'")
        return PropertyPath(tuple(segments))

    def lambda_expr(self, path: PropertyPath, op_tok: _Tok) -> LambdaExpr:
        op: typing.Literal["any", "all"] = "any" if op_tok.text.lower() == "any" else "all"
        opener = self.next()
        self.enter(opener.pos)
        if self.peek().is_sym(")"):
            if op == "all":
                self.fail(self.peek().pos, "all() needs a lambda, e.g. all(x:x/Amount gt 0)")
            self.next()
            self.depth -= 1
            return LambdaExpr(path, op, None, None)
        var = self.next()
        if var.kind != "ident" or "." in var.text:
            self.fail(var.pos, f"expected a lambda variable name, found {_describe(var)}")
        self.expect_sym(":", f"after lambda variable {var.text!r}")
        predicate = self.expr()
        self.close_paren(opener)
        self.depth -= 1
        return LambdaExpr(path, op, var.text, predicate)


_JSON_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_JSON_ESCAPE_RE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|(.))", re.DOTALL)


def _json_string(target: str, tok: _Tok) -> str:
    def unescape(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return chr(int(m.group(1), 16))
        ch = m.group(2)
        if ch not in _JSON_ESCAPES:
            _fail(target, tok.pos + m.start(), f"invalid escape '\\{ch}' in a JSON string")
        return _JSON_ESCAPES[ch]

    return _JSON_ESCAPE_RE.sub(unescape, tok.text[1:-1])


def _parse_text(text: str, target: str) -> _Parser:
    if not text.strip(" \t"):
        _fail(target, 0, "expression expected, found nothing")
    return _Parser(text, target)


# --- public API ------------------------------------------------------------------------------


def parse_filter(text: str) -> Expr:
    """Parse a `$filter` value (already form-decoded) into an expression tree."""
    parser = _parse_text(text, "$filter")
    expr = parser.expr()
    parser.at_end()
    return expr


def parse_orderby(text: str) -> tuple[OrderItem, ...]:
    """Parse `$orderby`: comma-separated expressions, each optionally followed by asc/desc."""
    parser = _parse_text(text, "$orderby")
    items: list[OrderItem] = []
    while True:
        expr = parser.expr()
        descending = False
        tok = parser.peek()
        if tok.is_word("asc") or tok.is_word("desc"):
            descending = tok.text.lower() == "desc"
            parser.next()
        items.append(OrderItem(expr, descending))
        tok = parser.peek()
        if tok.is_sym(","):
            parser.next()
            continue
        if tok.kind == _EOF_KIND:
            return tuple(items)
        if tok.kind == "ident" and tok.text.lower() not in _KNOWN_OPERATORS:
            parser.fail(tok.pos, f"expected ',', 'asc' or 'desc', found {_describe(tok)}")
        parser.at_end()


_SELECT_SEGMENT_RE = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")


def parse_select(text: str) -> tuple[SelectItem, ...]:
    """Parse `$select`: `*` or comma-separated property paths `A`, `A/B`."""
    target = "$select"
    if not text.strip(" \t"):
        _fail(target, 0, "at least one property expected")
    items: list[SelectItem] = []
    pos = 0
    for raw in text.split(","):
        item = raw.strip(" \t")
        start = pos + (len(raw) - len(raw.lstrip(" \t")))
        pos += len(raw) + 1
        if not item:
            _fail(target, start, "empty item in $select")
        if item == "*":
            items.append(SelectItem(("*",)))
            continue
        if "(" in item:
            _unsupported(
                target,
                start + item.index("("),
                "options or signatures inside $select are not supported",
            )
        segments: list[str] = []
        seg_pos = start
        for seg in item.split("/"):
            if seg.startswith("@"):
                _unsupported(target, seg_pos, "selecting annotations is not supported")
            if seg.endswith(".*") and _SELECT_SEGMENT_RE.fullmatch(seg[:-2]):
                _unsupported(target, seg_pos, "selecting operations by namespace is not supported")
            if _SELECT_SEGMENT_RE.fullmatch(seg) is None:
                bad = seg_pos + next(
                    (i for i, c in enumerate(seg) if not (c.isalnum() or c in "_.")), 0
                )
                _fail(target, bad, f"invalid property name {seg!r} in $select")
            segments.append(seg)
            seg_pos += len(seg) + 1
        items.append(SelectItem(tuple(segments)))
    return tuple(items)


# `$search` (URL Conventions 4.01 §5.1.7, ABNF `searchExpr`). `AND`, `OR` and `NOT` are
# operators only where they can be: the prose says AND/OR *separate* two expressions and NOT
# *prefaces* one (oasis-tcs/odata-specs#690, and the OASIS test cases `$search=OR`,
# `NOT NOT`, `AND OR NOT`). So:
# - `AND`/`OR` are operators only between an operand and something that can start one (a word,
#   a phrase, `(`); anywhere else (alone, at the start, after an operator, before `)` or the
#   end) they are search words: `$search=OR` finds Oregon, `a OR` is `a` AND the word `OR`.
# - `NOT` is an operator only where an operand is expected and something that can start one
#   follows; `NOT` alone, at the end or before `)` is a word.
# - Where two readings remain, the leftmost keyword is the operator (`a AND OR b` searches for
#   `a`, `OR` and `b`; `NOT OR b` for rows without `OR` that have `b`). Quoted phrases (`"OR"`) and lower-case `and`/`or`/`not` are always words.
# A word is any run of characters other than blanks, parentheses and `"` (the ABNF also
# excludes a literal `;`, which only matters for nested `$expand(...)` options: by the time the
# query string is decoded here, `a%3Bb` and `a;b` are the same text).
_SEARCH_TOKEN_RE = re.compile(
    r'(?P<ws>[ \t]+)|(?P<sym>[()])|(?P<phrase>"[^"]*")|(?P<word>[^\s()"]+)'
)
# ABNF `searchExpr-incomplete`: the whole value as an OData string literal, for type-ahead.
_SEARCH_QUOTED_RE = re.compile(r"'((?:[^']|'')*)'")


def parse_search(text: str) -> SearchExpr:
    """Parse `$search`: words, "phrases", NOT > AND (also implicit) > OR, parentheses."""
    quoted = _SEARCH_QUOTED_RE.fullmatch(text.strip(" \t"))
    if quoted is None:
        return _SearchParser(text).parse()
    # A complete expression inside the quotes means what it says; what an incomplete one
    # (`'"blu'`) should match, URL Conventions does not define (oasis-tcs/odata-specs#531).
    inner = quoted.group(1).replace("''", "'")
    try:
        return _SearchParser(inner).parse()
    except QuerySyntaxError:
        raise NotImplementedFeature(
            "$search: incomplete search expressions in single quotes are not supported; "
            'send complete words or "phrases"',
            target="$search",
        ) from None


class _SearchParser:
    __slots__ = ("depth", "i", "toks")
    target = "$search"

    def __init__(self, text: str) -> None:
        if not text.strip(" \t"):
            _fail(self.target, 0, "search expression expected, found nothing")
        toks: list[_Tok] = []
        pos = 0
        while pos < len(text):
            m = _SEARCH_TOKEN_RE.match(text, pos)
            if m is None:
                ch = text[pos]
                if ch == '"':
                    _fail(self.target, pos, "phrase opened here is never closed")
                _fail(self.target, pos, f"unexpected character {ch!r}")
            kind = m.lastgroup or ""
            if kind == "phrase":
                end = m.end()
                if end - pos == 2:
                    _fail(self.target, pos, "empty phrase")
                if end < len(text) and text[end] not in " \t()":
                    _fail(self.target, end, "a phrase must be followed by a space, ')' or the end")
            if kind != "ws":
                toks.append(_Tok(kind, m.group(), pos, m.end()))
            pos = m.end()
        # Two end markers, so that looking one token ahead never runs off the list.
        eof = _Tok(_EOF_KIND, "", len(text), len(text))
        self.toks = [*toks, eof, eof]
        self.i = 0
        self.depth = 0

    def parse(self) -> SearchExpr:
        expr = self.or_expr()
        tok = self.peek()
        if tok.kind != _EOF_KIND:
            _fail(self.target, tok.pos, f"unexpected {_describe(tok)}")
        return expr

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def starts_operand(self, tok: _Tok) -> bool:
        return tok.kind in ("word", "phrase") or tok.text == "("

    def operator(self, op: str) -> bool:
        """Whether the next token is the keyword `op` used as an operator (see above)."""
        tok = self.peek()
        return tok.kind == "word" and tok.text == op and self.starts_operand(self.peek(1))

    def or_expr(self) -> SearchExpr:
        left = self.and_expr()
        while self.operator("OR"):
            self.i += 1
            left = SearchBinary("or", left, self.and_expr())
        return left

    def and_expr(self) -> SearchExpr:
        left = self.not_expr()
        while True:
            if self.operator("AND"):
                self.i += 1
            elif self.operator("OR") or not self.starts_operand(self.peek()):
                return left
            # Otherwise two operands side by side: an implicit AND.
            left = SearchBinary("and", left, self.not_expr())

    def not_expr(self) -> SearchExpr:
        tok = self.peek()
        if self.operator("NOT"):
            self.i += 1
            self.enter(tok.pos)
            operand = self.not_expr()
            self.depth -= 1
            return SearchNot(operand)
        return self.term()

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            _fail(self.target, pos, f"search expression nested deeper than {MAX_DEPTH} levels")

    def term(self) -> SearchExpr:
        tok = self.peek()
        if tok.kind == _EOF_KIND:
            _fail(self.target, tok.pos, "search term expected, found end of input")
        self.i += 1
        if tok.kind == "phrase":
            return SearchTerm(tok.text[1:-1], phrase=True)
        if tok.kind == "word":  # `AND`/`OR`/`NOT` included: here they are words
            return SearchTerm(tok.text)
        if tok.text == "(":
            self.enter(tok.pos)
            inner = self.or_expr()
            close = self.peek()
            if close.text != ")":
                _fail(
                    self.target,
                    close.pos,
                    f"expected ')' to close '(' opened at position {tok.pos}, "
                    f"found {_describe(close)}",
                )
            self.i += 1
            self.depth -= 1
            return inner
        _fail(self.target, tok.pos, f"search term expected, found {_describe(tok)}")


def _literal_at(parser: _Parser) -> Literal:
    tok = parser.peek()
    if tok.kind in ("str", "num", "date", "time", "guid", "ident") or tok.is_sym("-"):
        start = parser.i
        value = parser.unary()
        if isinstance(value, Literal):
            return value
        parser.i = start
    parser.fail(tok.pos, f"literal value expected, found {_describe(tok)}")


def parse_literal(text: str) -> Literal:
    """Parse a lone primitive literal (a key-as-segment value, a parameter alias value)."""
    return _single_literal(_parse_text(text, "literal"))


def parse_key(text: str) -> KeyPredicate:
    """Parse the text inside `Set(...)`: one literal, or comma-separated `name=literal` pairs."""
    parser = _parse_text(text, "key")
    first = parser.peek()
    if not (first.kind == "ident" and parser.peek(1).is_sym("=")):
        return KeyPredicate(((None, _single_literal(parser)),))
    values: list[tuple[str | None, Literal]] = []
    seen: set[str] = set()
    while True:
        name = parser.next()
        if name.kind != "ident" or "." in name.text:
            parser.fail(name.pos, f"key property name expected, found {_describe(name)}")
        if name.text in seen:
            parser.fail(name.pos, f"key property {name.text!r} given twice")
        seen.add(name.text)
        parser.expect_sym("=", f"after key property {name.text!r}")
        values.append((name.text, _literal_at(parser)))
        tok = parser.next()
        if tok.kind == _EOF_KIND:
            return KeyPredicate(tuple(values))
        if not tok.is_sym(","):
            parser.fail(tok.pos, f"expected ',' or the end of the key, found {_describe(tok)}")


def _single_literal(parser: _Parser) -> Literal:
    literal = _literal_at(parser)
    tok = parser.peek()
    if tok.kind != _EOF_KIND:
        parser.fail(tok.pos, f"unexpected {_describe(tok)} after the value")
    return literal
