-- Structuring: one customer making four or more cash deposits of 9,000 to
-- 9,999 EUR (just below the 10,000 EUR reporting threshold) in one ISO
-- week (Monday to Sunday, UTC), counted over all three banks together.
-- Each bank alone may see only one to three of them.
--
-- The clean-room runner accepts a single SELECT without UNION. The FULL
-- JOINs on txn_id, which never match (every bank prefixes its own ids),
-- stack the three banks' rows: each joined row carries one bank's columns
-- and NULLs for the others, and coalesce() reads whichever is set.
-- amount may appear only inside count/sum (aggregate-only), so the 9,000 to
-- 9,999 band is a FILTER on the aggregates rather than a WHERE.
SELECT
  coalesce(b1.customer_ref, b2.customer_ref, b3.customer_ref) AS customer,
  strftime(date_trunc('week', CAST(coalesce(b1.ts, b2.ts, b3.ts) AS TIMESTAMP)), '%Y-%m-%d') AS week,
  count(*) FILTER (WHERE coalesce(b1.amount, b2.amount, b3.amount) BETWEEN 9000 AND 9999) AS deposits,
  concat_ws('+',
    CASE WHEN count(*) FILTER (WHERE b1.amount BETWEEN 9000 AND 9999) > 0 THEN 'bank1' END,
    CASE WHEN count(*) FILTER (WHERE b2.amount BETWEEN 9000 AND 9999) > 0 THEN 'bank2' END,
    CASE WHEN count(*) FILTER (WHERE b3.amount BETWEEN 9000 AND 9999) > 0 THEN 'bank3' END) AS banks,
  sum(coalesce(b1.amount, b2.amount, b3.amount)) FILTER (WHERE coalesce(b1.amount, b2.amount, b3.amount) BETWEEN 9000 AND 9999) AS total
FROM bank1 b1
FULL JOIN bank2 b2 ON b1.txn_id = b2.txn_id
FULL JOIN bank3 b3 ON b1.txn_id = b3.txn_id
WHERE coalesce(b1.kind, b2.kind, b3.kind) = 'cash_deposit'
GROUP BY 1, 2
HAVING count(*) FILTER (WHERE coalesce(b1.amount, b2.amount, b3.amount) BETWEEN 9000 AND 9999) >= 4
ORDER BY 1, 2
