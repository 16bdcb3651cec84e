-- A meter above its peak-demand limit for a whole minute.
SELECT meterId, round(avg(kw), 1) AS kw, window_end() AS at
FROM power
GROUP BY meterId, TUMBLINGWINDOW(mi, 1)
HAVING avg(kw) > 150
