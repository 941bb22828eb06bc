-- Vigil post-close database reconcile: the runbook's "no duplicate client_order_id" and
-- "no orphan OCO siblings" checks, plus a summary. Plain SQL that runs unchanged on
-- PostgreSQL and SQLite:
--
--   psql "postgresql://user@host/db" -f tools/reconcile_db.sql
--       (a libpq URL: drop the "+psycopg" driver part of a SQLAlchemy DATABASE_URL)
--   sqlite3 -header -column data/vigil.db < tools/reconcile_db.sql
--
-- Sections 1 to 3 return no rows when the database is clean. `python -m tools.reconcile`
-- runs the same checks on any DATABASE_URL and exits 1 when something is found.
--
-- Terminal order statuses: FILLED, CANCELLED, REJECTED (everything else is still working).
-- Inactive bracket statuses: CLOSED, CANCELLED.

-- 1. Duplicate client_order_id (always empty while the unique constraint stands).
SELECT 'DUPLICATE_CLIENT_ORDER_ID' AS finding,
       client_order_id,
       COUNT(*) AS copies
FROM orders
GROUP BY client_order_id
HAVING COUNT(*) > 1
ORDER BY client_order_id;

-- 2. Orphan OCO siblings: a working STOP or TARGET whose bracket is closed or cancelled, or
--    whose position is closed or has an open quantity of 0.
SELECT 'ORPHAN_SIBLING' AS finding,
       o.client_order_id,
       o.plan_client_id,
       o.leg,
       o.status,
       CASE
           WHEN b.status IN ('CLOSED', 'CANCELLED') THEN 'BRACKET_CLOSED'
           ELSE 'POSITION_CLOSED'
       END AS reason,
       b.status AS bracket_status,
       p.status AS position_status,
       p.quantity AS position_quantity
FROM orders o
LEFT JOIN brackets b ON b.plan_client_id = o.plan_client_id
LEFT JOIN positions p ON p.position_id = o.plan_client_id
WHERE o.leg IN ('STOP', 'TARGET')
  AND o.status NOT IN ('FILLED', 'CANCELLED', 'REJECTED')
  AND (
        b.status IN ('CLOSED', 'CANCELLED')
        OR (p.position_id IS NOT NULL AND (p.status = 'CLOSED' OR p.quantity = 0))
  )
ORDER BY o.client_order_id;

-- 3. Working siblings without a position: a working STOP or TARGET with no position row for
--    its plan (and a bracket that is not closed, else it is already listed in section 2).
SELECT 'ORPHAN_SIBLING' AS finding,
       o.client_order_id,
       o.plan_client_id,
       o.leg,
       o.status,
       'NO_POSITION' AS reason,
       b.status AS bracket_status
FROM orders o
LEFT JOIN brackets b ON b.plan_client_id = o.plan_client_id
LEFT JOIN positions p ON p.position_id = o.plan_client_id
WHERE o.leg IN ('STOP', 'TARGET')
  AND o.status NOT IN ('FILLED', 'CANCELLED', 'REJECTED')
  AND p.position_id IS NULL
  AND (b.status IS NULL OR b.status NOT IN ('CLOSED', 'CANCELLED'))
ORDER BY o.client_order_id;

-- 4. Summary.
SELECT 'ORDERS_BY_STATUS' AS summary, status, COUNT(*) AS orders
FROM orders
GROUP BY status
ORDER BY status;

SELECT 'TOTALS' AS summary,
       (SELECT COUNT(*) FROM orders) AS orders,
       (SELECT COUNT(*) FROM orders
         WHERE status NOT IN ('FILLED', 'CANCELLED', 'REJECTED')) AS working_orders,
       (SELECT COUNT(*) FROM positions WHERE status = 'OPEN') AS open_positions,
       (SELECT COUNT(*) FROM brackets
         WHERE status NOT IN ('CLOSED', 'CANCELLED')) AS active_brackets,
       (SELECT COUNT(*) FROM fills) AS fills;
