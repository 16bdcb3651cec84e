import mqtt from 'mqtt';

/**
 * The external broker for tests: EW_TEST_MQTT (default the CI Mosquitto at 127.0.0.1:1883).
 * `EW_TEST_MQTT=off` skips those tests with the reason printed; in CI the broker is required.
 */
export const MOSQUITTO_URL = process.env.EW_TEST_MQTT ?? 'mqtt://127.0.0.1:1883';

export async function mosquittoAvailable(): Promise<string | undefined> {
  if (MOSQUITTO_URL === 'off') return 'EW_TEST_MQTT=off: no external MQTT broker configured';
  try {
    const c = await mqtt.connectAsync(MOSQUITTO_URL, { reconnectPeriod: 0, connectTimeout: 3000 });
    await c.endAsync();
    return undefined;
  } catch (e) {
    if (process.env.CI) throw new Error(`the MQTT broker at ${MOSQUITTO_URL} is required in CI: ${(e as Error).message}`);
    return `MQTT broker at ${MOSQUITTO_URL} unreachable: ${(e as Error).message}`;
  }
}
