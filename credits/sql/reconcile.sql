-- Everything that must agree, per account (one, or every account of the
-- workspace), in one snapshot: the journal's sums, the stored figures, the
-- lots, the holds and their earmarks, the per-lot trace, the refunds.
SELECT a.account_id, a.balance, a.held, a.debt, a.scheduled, a.entry_seq,
       j.n, coalesce(j.max_seq, 0), j.amount, j.held, j.debt,
       coalesce(last.balance_after, 0), coalesce(last.held_after, 0), coalesce(last.debt_after, 0),
       g.remaining, g.held, g.pending, g.bad_flow, g.bad_held,
       h.held, h.bad_earmarks,
       t.bad_traces, t.over_refunded
  FROM {credit_accounts} a
 CROSS JOIN LATERAL (
       SELECT count(*) AS n, max(e.entry_seq) AS max_seq, coalesce(sum(e.amount), 0)::bigint AS amount,
              coalesce(sum(e.held_delta), 0)::bigint AS held, coalesce(sum(e.debt_delta), 0)::bigint AS debt
         FROM {credit_entries} e WHERE e.account_id = a.account_id
       ) j
  LEFT JOIN LATERAL (
       SELECT e.balance_after, e.held_after, e.debt_after
         FROM {credit_entries} e WHERE e.account_id = a.account_id
        ORDER BY e.entry_seq DESC LIMIT 1
       ) last ON true
 CROSS JOIN LATERAL (
       SELECT coalesce(sum(g.remaining) FILTER (WHERE g.journaled), 0)::bigint AS remaining,
              coalesce(sum(g.held), 0)::bigint AS held,
              coalesce(sum(g.amount) FILTER (WHERE NOT g.journaled AND g.voided_at IS NULL), 0)::bigint AS pending,
              -- A lot's remaining credits are what its entries say: its
              -- grant entry (less the debt it paid), its expiries and
              -- voids, less what spends and captures took, plus what
              -- refunds gave back. A lot not yet journaled is untouched.
              count(*) FILTER (WHERE CASE WHEN g.journaled THEN g.remaining <>
                     coalesce((SELECT sum(CASE WHEN e.kind = 'grant' THEN e.amount + e.debt_delta ELSE e.amount END)
                                 FROM {credit_entries} e WHERE e.grant_id = g.grant_id), 0)
                   + coalesce((SELECT sum(CASE WHEN e.kind = 'refund' THEN l.amount ELSE -l.amount END)
                                 FROM {credit_entry_lots} l JOIN {credit_entries} e ON e.entry_id = l.entry_id
                                WHERE l.grant_id = g.grant_id), 0)
                   ELSE g.remaining <> g.amount END) AS bad_flow,
              -- A lot's held credits are its active holds' earmarks.
              count(*) FILTER (WHERE g.held <> coalesce((SELECT sum(hl.amount) FROM {credit_hold_lots} hl
                                                           JOIN {credit_holds} h ON h.hold_id = hl.hold_id
                                                          WHERE hl.grant_id = g.grant_id AND h.state = 'active'), 0)) AS bad_held
         FROM {credit_grants} g WHERE g.account_id = a.account_id
       ) g
 CROSS JOIN LATERAL (
       SELECT coalesce(sum(h.amount) FILTER (WHERE h.state = 'active'), 0)::bigint AS held,
              count(*) FILTER (WHERE h.amount <> coalesce((SELECT sum(hl.amount) FROM {credit_hold_lots} hl
                                                            WHERE hl.hold_id = h.hold_id), 0)) AS bad_earmarks
         FROM {credit_holds} h WHERE h.account_id = a.account_id
       ) h
 CROSS JOIN LATERAL (
       -- A spend's or capture's trace is what it took from lots (the rest
       -- was debt); a refund's is what it gave back to lots (the rest paid
       -- debt); and no spend or capture is refunded beyond what it took.
       SELECT count(*) FILTER (WHERE coalesce((SELECT sum(l.amount) FROM {credit_entry_lots} l WHERE l.entry_id = e.entry_id), 0)
                                     <> CASE WHEN e.kind = 'refund' THEN e.amount + e.debt_delta ELSE -e.amount - e.debt_delta END) AS bad_traces,
              count(*) FILTER (WHERE e.kind IN ('spend', 'capture') AND -e.amount <
                                     coalesce((SELECT sum(r.amount) FROM {credit_entries} r WHERE r.refunded_entry_id = e.entry_id), 0)) AS over_refunded
         FROM {credit_entries} e
        WHERE e.account_id = a.account_id AND e.kind IN ('spend', 'capture', 'refund')
       ) t
 WHERE (@account::uuid IS NULL OR a.account_id = @account::uuid)
 ORDER BY a.account_id
