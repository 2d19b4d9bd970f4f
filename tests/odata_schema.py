"""The test schema for OData tests: the shapes of the Salesforce Connect contract (spec §10).

Deterministic data with the awkward cases built in: NULLs in every nullable column, quotes,
LIKE wildcards and mixed case in strings, composite keys, a view, odd names and odd types.
"""

SETUP_SQL = r"""
create table category (
    "CategoryID" int primary key,
    "Name" varchar(40) not null,
    "Description" text
);
insert into category values
    (1, 'Beverages', 'Soft drinks, coffees, teas'),
    (2, 'Acme Tools', 'Made by ACME'),
    (3, 'acme parts', null),
    (4, 'O''Brien & Sons', 'Irish 100% wool'),
    (5, 'Test kitchen', 'test_case for wildcards'),
    (6, 'Accessories', 'Sales & Marketing goods'),
    (7, 'Sales Marketing', 'Phrase match'),
    (8, 'Zeta', 'Percent 50% off'),
    (9, 'Übergrößen', 'Unicode name');

create table sales (
    "SaleID" varchar(20) primary key,
    "Region" varchar(10),
    "IsPaid" boolean not null,
    "SaleDate" date,
    "ShippedAt" timestamptz,
    "Notes" text,
    "Amount" numeric(12,2),
    "Quantity" int not null,
    "CategoryID" int
);
insert into sales
select 'S-' || lpad(i::text, 4, '0'),
       (array['USA', 'CA', 'MX', null])[1 + i % 4],
       i % 3 = 0,
       case when i % 10 = 0 then null else date '2023-11-01' + (i * 3) end,
       case when i % 7 = 0 then null
            else timestamptz '2024-01-01 00:00:00+00' + (i * interval '17 hours 3 minutes') end,
       case when i % 5 = 0 then null when i % 5 = 1 then 'test note ' || i else 'Note ' || i end,
       case when i % 11 = 0 then null else (i * 12.5)::numeric(12,2) end,
       i % 9,
       1 + i % 9
from generate_series(1, 2600) as i;

create table sales_line (
    "OrderID" int,
    "LineNo" int,
    "Product" text not null,
    primary key ("OrderID", "LineNo")
);
insert into sales_line select 10240 + i / 3, i % 3 + 1, 'P' || i from generate_series(0, 59) i;

create type mood as enum ('sad', 'ok', 'happy');
create table typed (
    id bigint primary key,
    small smallint,
    big bigint,
    dec numeric(18,4),
    loose numeric,
    dbl double precision,
    real_ real,
    flag boolean,
    day date,
    ts timestamp,
    tstz timestamptz,
    tod time,
    guid uuid,
    bin bytea,
    doc jsonb,
    tags text[],
    span interval,
    cash money,
    feeling mood,
    fixed char(3)
);
insert into typed values
    (1, 7, 9007199254740993, 1234.5000, 3.14159, 1.5, 2.25, true, '2024-02-29',
     '2024-05-01 10:00:00', '2024-05-01 12:00:00+02', '13:20:00',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\xfbff00'::bytea, '{"a": 1}', '{x,y}', '1 day',
     12.5, 'happy', 'ab'),
    (2, null, null, null, null, 'NaN', 'Infinity', null, null, null, null, null, null, null, null,
     null, null, null, null, null),
    (3, -1, -5, -0.0100, 10, '-Infinity', 0, false, '1999-12-31', '2000-01-01 00:00:00.123456',
     '2000-01-01 00:00:00.5+00', '00:00:01', null, '', null, '{}', null, 0, 'sad', null);

create view region_totals as
    select coalesce("Region", '(none)') as id, sum("Amount") as total, count(*) as sales
    from sales group by 1;
create view paid_sales as select "SaleID", "Amount" from sales where "IsPaid";
create table no_key (a int, b text);
create table numbers_only (id int primary key, n int);
insert into numbers_only values (1, 10), (2, 20);
create table "Order Details" ("Line ID" int primary key, "Unit Price" numeric(8,2), catid__c int);
insert into "Order Details" values (1, 9.99, 3);
"""

TOML = """
[odata]
path = "/odata/v4"
page_size = 1000
expose = ["public.*"]

[[odata.sets]]
table = "public.category"
name = "Category"

[[odata.sets]]
table = "public.sales"
name = "Sales"

[[odata.sets]]
table = "public.sales_line"
name = "SalesLine"

[[odata.sets]]
table = "public.paid_sales"
name = "PaidSales"
key = ["SaleID"]
"""
