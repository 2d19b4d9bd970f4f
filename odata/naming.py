"""Salesforce-safe OData names for PostgreSQL identifiers (spec §5).

`safe_name` turns one identifier into a name Salesforce Connect accepts; `assign_names` maps a
group of identifiers (the sets of a model, or the properties of one type) to names that are
unique case-insensitively. Pure functions of their input: no catalogue access, no state, and the
result never depends on the order the identifiers were listed in.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence

MAX_LENGTH = 40  # spec §5: longer names are truncated or rejected by Salesforce
PREFIX = "X"  # put before a name that would start with a digit or an underscore
HASH_LENGTH = 6  # hex digits of the stable hash that replaces the tail of a long name

_SAFE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NOT_ALNUM_RUN = re.compile(r"[^A-Za-z0-9]+")  # underscores included: `__` collapses too

# Latin letters that NFKD does not decompose into ASCII; transliterated so that `Straße`
# reads `Strasse` in Salesforce rather than `Stra_e`.
_LATIN_EXTRA = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "Th",
        "\u0131": "i",  # dotless i
    }
)


def is_safe(name: str) -> bool:
    """True when `name` already satisfies every Salesforce naming rule of spec §5."""
    return (
        len(name) <= MAX_LENGTH
        and _SAFE.fullmatch(name) is not None
        and "__" not in name
        and not name.endswith("_")
    )


def _digest(raw: str) -> str:
    # surrogatepass: a str from anywhere (tests generate lone surrogates) still hashes.
    return hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_LENGTH]


def _fit(base: str, suffix: str) -> str:
    """`base` cut so that `base + suffix` fits MAX_LENGTH, with no `_` left at the cut."""
    return base[: MAX_LENGTH - len(suffix)].rstrip("_") + suffix


def safe_name(raw: str) -> str:
    """The Salesforce-safe form of one PostgreSQL identifier; a safe name is returned unchanged.

    Accented Latin letters lose their accents (NFKD), every other run of characters outside
    `[A-Za-z0-9]` becomes one `_` (so `catid__c` gives `catid_c`), a name starting with a digit
    or `_` gets the prefix `X` (`2024 sales` gives `X2024_sales`, `_hc_err` gives `X_hc_err`),
    and trailing `_` are dropped. A result longer than 40 characters keeps its first 33 and
    ends in `_` plus 6 hex digits of a SHA-1 of the raw name, so distinct long names sharing a
    prefix stay distinct. A name with nothing left (`日本`, `""`) becomes `X_` plus that hash.
    """
    if is_safe(raw):
        return raw
    decomposed = unicodedata.normalize("NFKD", raw.translate(_LATIN_EXTRA))
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    name = _NOT_ALNUM_RUN.sub("_", ascii_only).rstrip("_")
    if not name.strip("_"):
        return f"{PREFIX}_{_digest(raw)}"
    if not name[0].isalpha():
        name = PREFIX + name
    if len(name) > MAX_LENGTH:
        name = _fit(name, f"_{_digest(raw)}")
    return name


def assign_names(raws: Sequence[str], *, reserved: Iterable[str] = ()) -> dict[str, str]:
    """Map each identifier of one group to a safe name, unique case-insensitively.

    Names are claimed in a fixed order, whatever the order of `raws`: identifiers that are
    already safe first (so they keep their name unless they clash with `reserved` or, ignoring
    case, with another safe name that sorts before them), then the others, each group sorted by
    code point. An identifier whose safe name is taken gets `_2`, `_3`, ... (the name cut so
    that it still fits 40 characters), after every identifier has had a chance at its own name.
    """
    taken = {r.casefold() for r in reserved}
    unique = sorted(set(raws), key=lambda raw: (not is_safe(raw), raw))
    wanted = {raw: safe_name(raw) for raw in unique}
    assigned: dict[str, str] = {}
    clashing: list[str] = []
    for raw in unique:
        if wanted[raw].casefold() in taken:
            clashing.append(raw)
        else:
            assigned[raw] = wanted[raw]
            taken.add(wanted[raw].casefold())
    for raw in clashing:
        n = 2
        while (candidate := _fit(wanted[raw], f"_{n}")).casefold() in taken:
            n += 1
        assigned[raw] = candidate
        taken.add(candidate.casefold())
    return {raw: assigned[raw] for raw in raws}
