SELECT intersection, sum(vehicles) AS vehicles, round(avg(speed), 1) AS speed, round(max(occupancy), 3) AS occupancy
FROM traffic
GROUP BY intersection, TUMBLINGWINDOW(ss, 10)
