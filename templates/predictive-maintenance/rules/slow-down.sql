-- The PLC variant's closed loop: when the autoencoder's anomaly score stays above 0.8 for a
-- whole 10 s window (its minimum is above), lower the spindle setpoint by 100 rpm. The write is
-- guarded by spec.policy.writes (600..1500 rpm, at most 6 a minute) and audited on the site.
SELECT round(avg(setpoint)) AS setpoint,
       round(avg(speed)) AS speed,
       round(avg(rms), 4) AS rms,
       round(min(infer('vib-ae', rms, kurtosis, peakHz)), 3) AS score
FROM machine
GROUP BY TUMBLINGWINDOW(ss, 10)
HAVING score > 0.8
