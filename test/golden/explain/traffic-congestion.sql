-- stream: traffic {"intersection":"string","vehicles":"int","speed":"float","ts":"timestamp"} ts
SELECT intersection, count(*) AS vehicles, avg(speed) AS speed
FROM traffic
WHERE speed >= 0
GROUP BY intersection, HOPPINGWINDOW(ss, 60, 10)
HAVING avg(speed) < 15
