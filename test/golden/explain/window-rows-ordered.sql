-- stream: readings {"sensor":"string","temp":"float","ts":"timestamp"} ts
SELECT *, temp * 1.8 + 32 AS tempF, tempF > 100 AS hot
FROM readings
WHERE temp IS NOT NULL
GROUP BY TUMBLINGWINDOW(ss, 30)
ORDER BY temp DESC
LIMIT 5
