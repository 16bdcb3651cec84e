-- stream: kpi
SELECT cellId, latencyMs, CASE WHEN prbUtil > 0.8 THEN 'hot' ELSE 'ok' END AS load
FROM kpi
WHERE latencyMs BETWEEN 20 AND 1000 AND cellId LIKE 'cell-3%'
