-- stream: visits {"door":"string","person":"string","ts":"timestamp"} ts
SELECT door, count(*) AS n, n * 2 AS doubled, collect(person)[0] AS firstPerson
FROM visits
WHERE door LIKE "gate-%"
GROUP BY door, SESSIONWINDOW(mi, 30, 2)
HAVING n > 1
ORDER BY n DESC, door
