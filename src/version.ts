/** The version every part reports (agent status, cloud /healthz); kept in step with package.json. */
export const VERSION = '0.1.0';
