"""A small EDM model built by hand, for tests of the plan and SQL stages that need no catalogue
and no HTTP: `Sales` (a table with an Int32 key, a NOT NULL and a nullable string, a decimal and
a computed column) and `SalesView` (a view, read-only)."""

from __future__ import annotations

from urllib.parse import quote

from odata.model import EntitySet, EntityType, Model, Property
from odata.plan import QueryPlan, Settings, plan
from odata.request import Format, ODataRequest, parse_path, parse_query

ID = Property("Id", "id", "Edm.Int32", nullable=False, db_type="int4")
REGION = Property("Region", "region", "Edm.String", nullable=False, max_length=10,
                  db_type="varchar")  # fmt: skip
NOTE = Property("Note", "note", "Edm.String", db_type="text")
AMOUNT = Property("Amount", "amount", "Edm.Decimal", precision=10, scale=2, db_type="numeric")
ODD = Property("Odd", 'we"ird', "Edm.String", db_type="text")  # a column name that needs quoting
STAMP = Property("Stamp", "stamp", "Edm.DateTimeOffset", db_type="timestamptz",
                 generation="computed")  # fmt: skip
SALES_TYPE = EntityType("Sales", (ID, REGION, NOTE, AMOUNT, ODD, STAMP), ("Id",))
SALES = EntitySet("Sales", "public", "sales", SALES_TYPE)
VIEW = EntitySet("SalesView", "public", "sales_view", SALES_TYPE, is_view=True, writable=False)
MODEL = Model("NS", "Container", (SALES, VIEW))

# The table the model describes, for the tests that run the SQL.
TABLE_SQL = """
create table sales (id int4 primary key, region varchar(10) not null, note text,
                    amount numeric(10, 2), "we""ird" text, stamp timestamptz default now());
create view sales_view as select * from sales;
"""


def plan_of(path: str, filter_: str | None = None, **options: str) -> QueryPlan:
    """The plan of `GET /<path>?$filter=...&$<option>=...`, as the service would make it."""
    pairs = ([("$filter", filter_)] if filter_ is not None else []) + [
        (f"${k}", v) for k, v in options.items()
    ]
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs)
    request = ODataRequest(parse_path(path), parse_query(query), Format())
    return plan(request, MODEL, Settings())
