-- stream: doors {"door":"string","person":"string"}
SELECT door, count(DISTINCT person) AS people, window_start() AS opened, window_end() AS closed
FROM doors
GROUP BY door, SESSIONWINDOW(mi, 60, 5)
