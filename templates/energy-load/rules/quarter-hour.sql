-- Each meter's quarter hour, and the model's forecast for the next one.
SELECT meterId,
       round(avg(kw), 2) AS kw,
       round(avg(temperature), 1) AS temperature,
       window_end() AS at,
       round(infer('load-forecast',
                   sin(2 * pi() * (hour(window_end()) + minute(window_end()) / 60.0) / 24),
                   cos(2 * pi() * (hour(window_end()) + minute(window_end()) / 60.0) / 24),
                   avg(kw), avg(temperature)), 2) AS forecastKw
FROM power
GROUP BY meterId, TUMBLINGWINDOW(mi, 15)
