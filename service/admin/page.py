"""The one page design of the status page and the console: header, navigation, styles.

Pages are plain server-rendered HTML (no front-end build step); the only script copies the
service URL. Every value goes through `e()`; nothing here reads data or settings.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime

NAV = (("status", "/", "Status"), ("jobs", "/admin/jobs", "Jobs"),
       ("sets", "/admin/sets", "Sets"), ("history", "/admin/history", "History"))  # fmt: skip

CSS = """
:root{--fg:#1b1f24;--muted:#5b6472;--line:#d6dbe3;--bg:#f6f8fa;--accent:#1d5fd1;--ok:#176f2c;
--bad:#b42318;--warn:#8a5a00}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:var(--fg)}
header{background:#10243e;color:#fff;padding:12px 20px;display:flex;flex-wrap:wrap;gap:8px 20px;
align-items:center}
header .brand{font-weight:700;font-size:17px;margin-right:8px}
header .url{display:flex;gap:6px;align-items:center;flex:1 1 320px;min-width:0}
header code{background:#1f3a5f;padding:3px 8px;border-radius:4px;overflow-wrap:anywhere;color:#fff}
header button{font:inherit;font-size:13px;padding:3px 10px;border-radius:4px;border:1px solid #8fb0e0;
background:#254a7c;color:#fff;cursor:pointer}
nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:4px;margin:0;padding:0}
nav a{color:#dfe9f7;text-decoration:none;padding:6px 12px;border-radius:4px;display:block}
nav a[aria-current=page]{background:#fff;color:#10243e;font-weight:600}
nav a:focus-visible,a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,
textarea:focus-visible,summary:focus-visible{outline:3px solid #f0a500;outline-offset:2px}
main{padding:16px 20px 40px;max-width:1240px}
h1{font-size:22px;margin:8px 0 12px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:16px 0 6px}
.table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:4px 0 12px}td,th{padding:6px 12px 6px 0;text-align:left;vertical-align:top;
border-bottom:1px solid #eef0f3}th{border-bottom:1px solid var(--line);font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:var(--muted)}.ok{color:var(--ok)}.failed,.error{color:var(--bad)}.warn{color:var(--warn)}
.job{margin:0 0 22px}
pre{background:#fff4f2;border:1px solid #f3c5bd;padding:10px;white-space:pre-wrap;max-width:980px;overflow-x:auto}
pre.diff{background:var(--bg);border-color:var(--line)}
.notice{padding:10px 14px;border-radius:6px;margin:10px 0;border:1px solid var(--line);background:var(--bg)}
.notice.error{border-color:#f3c5bd;background:#fff4f2}.notice.ok{border-color:#b7e1c1;background:#f1fbf3}
form.card,fieldset{border:1px solid var(--line);border-radius:6px;padding:12px 16px;margin:12px 0}
fieldset{min-width:0}legend{font-weight:600;padding:0 4px}
.field{display:flex;flex-direction:column;gap:3px;margin:0 0 12px;max-width:640px}
.field label{font-weight:600}.field .hint{color:var(--muted);font-size:13px}
input[type=text],input[type=number],select,textarea{font:inherit;padding:6px 8px;border:1px solid #9aa4b2;
border-radius:4px;width:100%;max-width:640px}
textarea{min-height:90px;font-family:ui-monospace,Menlo,Consolas,monospace}
[aria-invalid=true]{border-color:var(--bad);box-shadow:0 0 0 1px var(--bad)}
.check{display:flex;gap:8px;align-items:center;margin:0 0 10px}
.buttons{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}
.buttons button,.buttons a.button,button.small{font:inherit;padding:7px 14px;border-radius:5px;border:1px solid var(--accent);
background:#fff;color:var(--accent);cursor:pointer;text-decoration:none}
.buttons button.primary{background:var(--accent);color:#fff}
button.small{padding:3px 10px;font-size:13px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:0 24px}
svg{max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#444c58}
@media (max-width:640px){main{padding:12px}header{padding:10px 12px}td,th{padding:5px 8px 5px 0}}
"""

_COPY = (
    "<script>document.addEventListener('click',function(ev){var b=ev.target.closest('[data-copy]');"
    "if(!b)return;navigator.clipboard&&navigator.clipboard.writeText(b.dataset.copy).then(function()"
    "{b.textContent='Copied';setTimeout(function(){b.textContent='Copy'},1500)})})</script>"
)


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def when(t: datetime | None, *, seconds: bool = True, none: str = "—") -> str:
    """A moment as admins read it everywhere in r2sf: UTC, to the second (or minute)."""
    if t is None:
        return none
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def page(title: str, active: str, service_url: str, body: Iterable[str], *,
         refresh: int | None = None) -> str:  # fmt: skip
    """A whole HTML page: header with the service URL and a copy button, navigation, `body`."""
    links = "".join(
        f'<li><a href="{href}"{" aria-current=page" if key == active else ""}>{label}</a></li>'
        for key, href, label in NAV
    )
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return "\n".join(
        [
            "<!doctype html><html lang=en><head><meta charset=utf-8>",
            "<meta name=viewport content='width=device-width,initial-scale=1'>",
            f"{meta}<title>{e(title)} · r2sf</title><style>{CSS}</style></head><body>",
            '<header><span class="brand">r2sf</span>',
            f'<span class="url"><span class="muted" style="color:#b9c7da">Service URL</span>'
            f" <code id=service-url>{e(service_url)}</code>"
            f'<button type=button data-copy="{e(service_url)}" aria-label="Copy the service URL">'
            "Copy</button></span>",
            f'<nav aria-label="Main"><ul>{links}</ul></nav></header>',
            f"<main><h1>{e(title)}</h1>",
            *body,
            f"</main>{_COPY}</body></html>",
        ]
    )


def field(name: str, label: str, value: object = "", *, hint: str = "", kind: str = "text",
          invalid: bool = False, attrs: str = "") -> str:  # fmt: skip
    """A labelled input (its hint tied to it with aria-describedby)."""
    fid = "f-" + name.replace(".", "-")
    described = f' aria-describedby="{fid}-hint"' if hint else ""
    bad = ' aria-invalid="true"' if invalid else ""
    if kind == "textarea":
        control = (
            f'<textarea id="{fid}" name="{e(name)}"{described}{bad}{attrs}>{e(value)}</textarea>'
        )
    else:
        control = (
            f'<input type="{kind}" id="{fid}" name="{e(name)}" value="{e(value)}"'
            f"{described}{bad}{attrs}>"
        )
    note = f'<span class="hint" id="{fid}-hint">{e(hint)}</span>' if hint else ""
    return f'<div class="field"><label for="{fid}">{e(label)}</label>{control}{note}</div>'


def select(name: str, label: str, options: Iterable[tuple[str, str]], chosen: str, *,
           hint: str = "", invalid: bool = False) -> str:  # fmt: skip
    fid = "f-" + name.replace(".", "-")
    opts = "".join(
        f'<option value="{e(v)}"{" selected" if v == chosen else ""}>{e(t)}</option>'
        for v, t in options
    )
    described = f' aria-describedby="{fid}-hint"' if hint else ""
    bad = ' aria-invalid="true"' if invalid else ""
    note = f'<span class="hint" id="{fid}-hint">{e(hint)}</span>' if hint else ""
    return (
        f'<div class="field"><label for="{fid}">{e(label)}</label>'
        f'<select id="{fid}" name="{e(name)}"{described}{bad}>{opts}</select>{note}</div>'
    )


def checkbox(name: str, label: str, checked: bool, *, value: str = "1") -> str:
    fid = "f-" + name.replace(".", "-")
    on = " checked" if checked else ""
    return (
        f'<div class="check"><input type="checkbox" id="{fid}" name="{e(name)}"'
        f' value="{e(value)}"{on}><label for="{fid}">{e(label)}</label></div>'
    )


def table(head: Iterable[str], rows: Iterable[Iterable[str]], caption: str = "") -> str:
    """A table; cells are HTML already escaped by the caller."""
    cap = f"<caption class=muted style='text-align:left'>{e(caption)}</caption>" if caption else ""
    ths = "".join(f"<th scope=col>{h}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="table-wrap"><table>{cap}<tr>{ths}</tr>{trs}</table></div>'
