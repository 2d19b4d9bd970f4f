"""The requests Salesforce Connect's OData 4.0 adapter sends, as the benchmarks replay them.

One place for the URL encoding (what Salesforce escapes and what it leaves as is) and for the
query shapes of its list views, searches and detail pages, so every benchmark measures the same
requests (docs: ../shared/spec/salesforce-connect.md). It builds text only; it sends nothing.
"""

from __future__ import annotations

from urllib.parse import quote

# What Salesforce leaves unescaped in a query option's value: `$`, commas, parentheses, `=`,
# `:`, `/` and `*`. Quotes become %27 and spaces `+`.
_SAFE = "$(),=:/*"

Params = tuple[tuple[str, str], ...]


def encode_query(params: Params | list[tuple[str, str]], space: str = "+") -> str:
    """`name=value&...` encoded like Salesforce Connect; `space` is how a space is sent
    (Salesforce sends `+`; a server that rejects `+`, such as CAP, gets %20)."""
    pairs = []
    for name, value in params:
        encoded = quote(value, safe=_SAFE)
        if space != "%20":
            encoded = encoded.replace("%20", space)
        pairs.append(f"{name}={encoded}")
    return "&".join(pairs)


def url(resource: str, params: Params | list[tuple[str, str]] = (), space: str = "+") -> str:
    """`resource?query`, relative to the service root."""
    return resource + ("?" + encode_query(params, space) if params else "")


def list_view(select: str, *, filter_: str | None = None, orderby: str | None = None,
              top: int = 26, count: bool = True) -> Params:  # fmt: skip
    """A list view page: the fields shown, an optional filter and sort, `$count`, 25 rows + 1
    (Salesforce asks one more than it shows to know whether there is a next page)."""
    out: list[tuple[str, str]] = [("$select", select)]
    if filter_:
        out.append(("$filter", filter_))
    if orderby:
        out.append(("$orderby", orderby))
    if count:
        out.append(("$count", "true"))
    out.append(("$top", str(top)))
    return tuple(out)


def search(term: str, columns: tuple[str, ...]) -> str:
    """The `$filter` of a Salesforce search (SOSL) over text columns."""
    return " or ".join(f"contains({c},'{term}') eq true" for c in columns)
