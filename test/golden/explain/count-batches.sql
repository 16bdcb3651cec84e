-- stream: meter {"meterId":"string","kwh":"float"}
SELECT meterId, sum(kwh) AS kwh, collect(kwh) AS readings FROM meter GROUP BY meterId, COUNTWINDOW(96, 4)
