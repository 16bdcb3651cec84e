-- Each machine's vibration and temperature, every 30 s.
SELECT machineId,
       round(avg(rms), 4) AS rms,
       round(percentile(rms, 0.95), 4) AS rmsP95,
       round(avg(temperature), 1) AS temperature
FROM vibration
GROUP BY machineId, TUMBLINGWINDOW(ss, 30)
