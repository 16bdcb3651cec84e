-- A machine whose vibration the autoencoder finds unusual in a 10 s window.
SELECT machineId,
       round(avg(rms), 4) AS rms,
       round(max(kurtosis), 3) AS kurtosis,
       round(max(infer('vib-ae', rms, kurtosis, peakHz)), 3) AS score
FROM vibration
GROUP BY machineId, TUMBLINGWINDOW(ss, 10)
HAVING score > 0.8
