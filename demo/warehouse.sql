-- The demo warehouse: TICKIT-like tables (Amazon Redshift's sample database) in schema
-- `warehouse`, standing in for the Redshift cluster r2sf reads from.
--
-- Deterministic: every pseudo-random value is hashtext() of a fixed string and the row's id (as
-- in ../shared/peers/tickit.sql), so the same --rows gives the same data on every run.
-- The number of sales rows is read from the setting r2sf.demo_rows, which `r2sf demo` sets with
-- a bound parameter before running this script.

DROP SCHEMA IF EXISTS warehouse CASCADE;
CREATE SCHEMA warehouse;

CREATE TABLE warehouse.category (
  catid     smallint    NOT NULL PRIMARY KEY,
  catgroup  varchar(10),
  catname   varchar(10),
  catdesc   varchar(50)
);

INSERT INTO warehouse.category (catid, catgroup, catname, catdesc) VALUES
  (1,  'Sports',   'MLB',       'Major League Baseball'),
  (2,  'Sports',   'NHL',       'National Hockey League'),
  (3,  'Sports',   'NFL',       'National Football League'),
  (4,  'Sports',   'NBA',       'National Basketball Association'),
  (5,  'Sports',   'MLS',       'Major League Soccer'),
  (6,  'Shows',    'Musicals',  'Musical theatre'),
  (7,  'Shows',    'Plays',     'All non-musical theatre'),
  (8,  'Shows',    'Opera',     'All opera and light opera'),
  (9,  'Concerts', 'Pop',       'All rock and pop music concerts'),
  (10, 'Concerts', 'Jazz',      'All jazz singers and bands'),
  (11, 'Concerts', 'Classical', 'All symphony, concerto, and choir concerts');

CREATE TABLE warehouse.venue (
  venueid    smallint     NOT NULL PRIMARY KEY,
  venuename  varchar(100),
  venuecity  varchar(30),
  venuestate char(2),
  venueseats integer
);

INSERT INTO warehouse.venue
SELECT v.venueid,
       c.city || ' ' || (ARRAY['Arena', 'Stadium', 'Theatre', 'Hall', 'Center', 'Field',
                               'Garden', 'Amphitheatre', 'Opera House', 'Ballpark'])
                        [1 + abs(hashtext('vk:' || v.venueid)::bigint) % 10],
       c.city,
       c.state,
       1000 * (1 + abs(hashtext('vs:' || v.venueid)::bigint) % 70)
FROM generate_series(1, 202) AS v(venueid)
CROSS JOIN LATERAL (
  SELECT (ARRAY['New York', 'Los Angeles', 'Chicago', 'Houston', 'Phoenix', 'Philadelphia',
                'San Antonio', 'San Diego', 'Dallas', 'San Jose', 'Austin', 'Denver',
                'Boston', 'Seattle', 'Nashville', 'Portland', 'Atlanta', 'Miami',
                'Minneapolis', 'Cleveland'])[1 + v.venueid % 20] AS city,
         (ARRAY['NY', 'CA', 'IL', 'TX', 'AZ', 'PA', 'TX', 'CA', 'TX', 'CA', 'TX', 'CO',
                'MA', 'WA', 'TN', 'OR', 'GA', 'FL', 'MN', 'OH'])[1 + v.venueid % 20] AS state
) c;

CREATE TABLE warehouse.event (
  eventid   integer      NOT NULL PRIMARY KEY,
  venueid   smallint     NOT NULL REFERENCES warehouse.venue,
  catid     smallint     NOT NULL REFERENCES warehouse.category,
  eventname varchar(200),
  starttime timestamp without time zone
);

INSERT INTO warehouse.event
SELECT e.eventid,
       1 + abs(hashtext('ev:' || e.eventid)::bigint) % 202,
       c.catid,
       (ARRAY['Grand', 'Summer', 'Winter', 'Midnight', 'Golden', 'Silver', 'Electric',
              'Royal', 'Little', 'Last'])[1 + abs(hashtext('ea:' || e.eventid)::bigint) % 10]
         || ' '
         || (ARRAY['Nights', 'Showcase', 'Classic', 'Festival', 'Revue', 'Tour', 'Cup',
                   'Serenade', 'Derby', 'Gala'])[1 + abs(hashtext('en:' || e.eventid)::bigint) % 10]
         || ' (' || cat.catname || ')',
       timestamp '2008-01-01 19:00:00'
         + make_interval(days => (abs(hashtext('ed:' || e.eventid)::bigint) % 365)::int)
FROM generate_series(1, 8798) AS e(eventid)
CROSS JOIN LATERAL (SELECT (1 + abs(hashtext('ec:' || e.eventid)::bigint) % 11)::smallint AS catid) c
JOIN warehouse.category cat ON cat.catid = c.catid;

-- A sale happens up to 90 days before its event, at a pseudo-random second of that day.
CREATE TABLE warehouse.sales (
  salesid     integer      NOT NULL PRIMARY KEY,
  eventid     integer      NOT NULL,
  buyerid     integer      NOT NULL,
  qtysold     smallint     NOT NULL,
  pricepaid   numeric(8,2),
  commission  numeric(8,2),
  saletime    timestamp without time zone
);

INSERT INTO warehouse.sales
SELECT s.salesid,
       ev.eventid,
       1 + abs(hashtext('b:' || s.salesid)::bigint) % 49990,
       q.qty,
       (q.qty * p.price)::numeric(8,2),
       round(q.qty * p.price * 0.15, 2)::numeric(8,2),
       date_trunc('day', ev.starttime)
         - make_interval(days => (abs(hashtext('d:' || s.salesid)::bigint) % 90)::int)
         + make_interval(secs => abs(hashtext('t:' || s.salesid)::bigint) % 86400)
FROM generate_series(1, current_setting('r2sf.demo_rows')::int) AS s(salesid)
CROSS JOIN LATERAL (SELECT 1 + abs(hashtext('q:' || s.salesid)::bigint) % 8 AS qty) q
CROSS JOIN LATERAL (SELECT 20 + abs(hashtext('p:' || s.salesid)::bigint) % 481 AS price) p
JOIN warehouse.event ev ON ev.eventid = 1 + abs(hashtext('e:' || s.salesid)::bigint) % 8798;

CREATE INDEX sales_eventid_idx ON warehouse.sales (eventid);

-- What `r2sf demo` checks to decide whether the data can be reused.
CREATE TABLE warehouse.demo_info (rows integer NOT NULL, version integer NOT NULL);
INSERT INTO warehouse.demo_info VALUES (current_setting('r2sf.demo_rows')::int,
                                        current_setting('r2sf.demo_version')::int);

ANALYZE warehouse.category;
ANALYZE warehouse.venue;
ANALYZE warehouse.event;
ANALYZE warehouse.sales;
