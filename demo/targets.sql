-- The demo's target tables in schema public: what Salesforce Connect reads over OData.
--
-- Created up front (as an operator would) so that every string column has a length and every
-- number a precision: $metadata then declares MaxLength/Precision and Salesforce creates
-- Text(n)/Number(p,s) fields instead of its defaults. The sync jobs fill them.

CREATE TABLE IF NOT EXISTS public.category_c (
  catid     smallint    NOT NULL PRIMARY KEY,
  catgroup  varchar(10),
  catname   varchar(10),
  catdesc   varchar(50)
);

CREATE TABLE IF NOT EXISTS public.event_c (
  eventid    integer      NOT NULL PRIMARY KEY,
  eventname  varchar(200),
  catgroup   varchar(10),
  catname    varchar(10),
  venuename  varchar(100),
  venuecity  varchar(30),
  venuestate varchar(2),
  starttime  timestamp without time zone
);

CREATE TABLE IF NOT EXISTS public.sales_by_event_month (
  eventid    integer       NOT NULL,
  month      date          NOT NULL,
  sales      integer       NOT NULL,
  tickets    integer       NOT NULL,
  revenue    numeric(14,2) NOT NULL,
  commission numeric(14,2) NOT NULL,
  PRIMARY KEY (eventid, month)
);
