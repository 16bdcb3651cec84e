-- Congested: average speed under 15 km/h over the last minute, checked every 10 s.
SELECT intersection, round(avg(speed), 1) AS speed, sum(vehicles) AS vehicles, window_end() AS at
FROM traffic
GROUP BY intersection, HOPPINGWINDOW(ss, 60, 10)
HAVING avg(speed) < 15
