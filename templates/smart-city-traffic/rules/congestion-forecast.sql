-- The probability that the next minute is congested, from this minute's figures.
SELECT intersection, sum(vehicles) AS vehicles, round(avg(speed), 1) AS speed,
       infer('congestion', sum(vehicles), avg(speed), max(occupancy)) AS nextMinuteRisk
FROM traffic
GROUP BY intersection, TUMBLINGWINDOW(mi, 1)
