-- A machine whose vibration the autoencoder finds unusual in a 10 s window, explained to the operator by the site's Qwen.
SELECT machineId,
       round(avg(rms), 4) AS rms,
       round(max(kurtosis), 3) AS kurtosis,
       round(max(infer('vib-ae', rms, kurtosis, peakHz)), 3) AS score,
       -- Two sentences from the window's figures, as JSON (the console and the MES read its fields);
       -- llm() over a window runs only for the windows that pass HAVING. max_tokens covers the
       -- schema's longest answer (240 characters of explanation, the longest action, the JSON around
       -- them; a token is at least one character), so the JSON always closes: a cut answer would be
       -- an error and the window's alert dropped.
       llm('operator-assistant',
           concat('Machine ', machineId, ': vibration rms ', round(avg(rms), 2), ' mm/s, kurtosis ', round(max(kurtosis), 2),
                  ', peak ', round(avg(peakHz), 1), ' Hz, temperature ', round(max(temperature), 1),
                  ' C, anomaly score ', round(max(infer('vib-ae', rms, kurtosis, peakHz)), 2),
                  ' over the last 10 s. In two sentences, tell the operator what this likely means and what to do.'),
           '{"max_tokens": 320, "json_schema": {"type": "object", "properties": {"explanation": {"type": "string", "maxLength": 240}, "action": {"enum": ["inspect", "schedule-maintenance", "stop-machine", "monitor"]}}, "required": ["explanation", "action"]}}') AS assistant
FROM vibration
GROUP BY machineId, TUMBLINGWINDOW(ss, 10)
HAVING score > 0.8
