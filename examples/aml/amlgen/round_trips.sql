-- Round trips: money leaving a customer's account at one bank, passing
-- through an account at each of the other two banks, and coming back to an
-- account of the same customer at the first bank within 10 days, every hop
-- carrying at least 90% of the largest hop's amount. No bank sees the whole
-- cycle: the origin bank sees money go out and (other) money come in, each
-- pass-through bank sees one payment in and one out.
--
-- Each bank appears twice (p1/p2 for bank1, q1/q2 for bank2, r1/r2 for
-- bank3): its two records of a cycle are one incoming and one outgoing
-- transfer of one customer. payment_ref is the same on the sender's and the
-- receiver's record of an interbank payment, so p1-q2, q1-r2 and r1-p2 are
-- three payments, and the six records close a cycle in either direction
-- (bank1>bank2>bank3>bank1 when p1 is outgoing, bank1>bank3>bank2>bank1
-- when p1 is incoming). The origin is the bank whose outgoing record is
-- earlier than its incoming one; requiring exactly one origin means the
-- timestamps increase along the cycle from the origin.
--
-- amount may appear only inside count/sum (aggregate-only). Grouping by the
-- six txn_ids makes each group one cycle, so the amount test is a HAVING.
SELECT
  least(p1.ts, p2.ts, q1.ts, q2.ts, r1.ts, r2.ts) AS started,
  CASE
    WHEN (CASE WHEN p1.direction = 'out' THEN p1.ts < p2.ts ELSE p2.ts < p1.ts END) THEN 'bank1'
    WHEN (CASE WHEN q1.direction = 'out' THEN q1.ts < q2.ts ELSE q2.ts < q1.ts END) THEN 'bank2'
    ELSE 'bank3'
  END AS origin_bank,
  CASE
    WHEN (CASE WHEN p1.direction = 'out' THEN p1.ts < p2.ts ELSE p2.ts < p1.ts END) THEN p1.customer_ref
    WHEN (CASE WHEN q1.direction = 'out' THEN q1.ts < q2.ts ELSE q2.ts < q1.ts END) THEN q1.customer_ref
    ELSE r1.customer_ref
  END AS customer,
  CASE
    WHEN (CASE WHEN p1.direction = 'out' THEN p1.ts < p2.ts ELSE p2.ts < p1.ts END) THEN
      CASE WHEN p1.direction = 'out'
        THEN 'bank2:' || q1.customer_ref || '>bank3:' || r1.customer_ref
        ELSE 'bank3:' || r1.customer_ref || '>bank2:' || q1.customer_ref END
    WHEN (CASE WHEN q1.direction = 'out' THEN q1.ts < q2.ts ELSE q2.ts < q1.ts END) THEN
      CASE WHEN p1.direction = 'out'
        THEN 'bank3:' || r1.customer_ref || '>bank1:' || p1.customer_ref
        ELSE 'bank1:' || p1.customer_ref || '>bank3:' || r1.customer_ref END
    ELSE
      CASE WHEN p1.direction = 'out'
        THEN 'bank1:' || p1.customer_ref || '>bank2:' || q1.customer_ref
        ELSE 'bank2:' || q1.customer_ref || '>bank1:' || p1.customer_ref END
  END AS via,
  sum(CASE
    WHEN (CASE WHEN p1.direction = 'out' THEN p1.ts < p2.ts ELSE p2.ts < p1.ts END) THEN
      CASE WHEN p1.direction = 'out' THEN p1.amount ELSE p2.amount END
    WHEN (CASE WHEN q1.direction = 'out' THEN q1.ts < q2.ts ELSE q2.ts < q1.ts END) THEN
      CASE WHEN q1.direction = 'out' THEN q1.amount ELSE q2.amount END
    ELSE
      CASE WHEN r1.direction = 'out' THEN r1.amount ELSE r2.amount END
  END) AS sent,
  sum(CASE
    WHEN (CASE WHEN p1.direction = 'out' THEN p1.ts < p2.ts ELSE p2.ts < p1.ts END) THEN
      CASE WHEN p1.direction = 'in' THEN p1.amount ELSE p2.amount END
    WHEN (CASE WHEN q1.direction = 'out' THEN q1.ts < q2.ts ELSE q2.ts < q1.ts END) THEN
      CASE WHEN q1.direction = 'in' THEN q1.amount ELSE q2.amount END
    ELSE
      CASE WHEN r1.direction = 'in' THEN r1.amount ELSE r2.amount END
  END) AS returned
FROM bank1 p1
JOIN bank2 q2 ON p1.payment_ref = q2.payment_ref
JOIN bank2 q1 ON q1.customer_ref = q2.customer_ref
JOIN bank3 r2 ON q1.payment_ref = r2.payment_ref
JOIN bank3 r1 ON r1.customer_ref = r2.customer_ref
JOIN bank1 p2 ON p2.customer_ref = p1.customer_ref AND p2.payment_ref = r1.payment_ref
WHERE p1.direction <> p2.direction AND q1.direction <> q2.direction AND r1.direction <> r2.direction
  AND (CAST(CASE WHEN p1.direction = 'out' THEN p1.ts < p2.ts ELSE p2.ts < p1.ts END AS INTEGER)
     + CAST(CASE WHEN q1.direction = 'out' THEN q1.ts < q2.ts ELSE q2.ts < q1.ts END AS INTEGER)
     + CAST(CASE WHEN r1.direction = 'out' THEN r1.ts < r2.ts ELSE r2.ts < r1.ts END AS INTEGER)) = 1
  AND CAST(greatest(p1.ts, p2.ts, q1.ts, q2.ts, r1.ts, r2.ts) AS TIMESTAMP)
    - CAST(least(p1.ts, p2.ts, q1.ts, q2.ts, r1.ts, r2.ts) AS TIMESTAMP) <= INTERVAL 10 DAY
GROUP BY 1, 2, 3, 4, p1.txn_id, p2.txn_id, q1.txn_id, q2.txn_id, r1.txn_id, r2.txn_id
HAVING 10 * least(sum(p1.amount), sum(q1.amount), sum(r1.amount))
    >= 9 * greatest(sum(p1.amount), sum(q1.amount), sum(r1.amount))
ORDER BY 1, 3
