-- stream: vibration {"machineId":"string","rms":"float","kurtosis":"float","peakHz":"float","ts":"timestamp"} ts
SELECT machineId, avg(rms) AS rms, max(kurtosis) AS kurtosis, percentile(rms, 0.95) AS p95
FROM vibration
GROUP BY machineId, TUMBLINGWINDOW(ss, 10)
HAVING max(kurtosis) > 6 OR p95 > 1.4
