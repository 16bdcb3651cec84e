/**
 * Every error Edgeweave reports to a user carries a stable `code` from this table.
 * The HTTP status, the CLI's exit code and the one-line meaning live here, in one place;
 * `docs/errors.md` documents each code and its exit code, and a test fails when the two disagree.
 * `exit` is the CLI's exit status when a command fails with the code (default 1, "unexpected"):
 * 2 bad input (flags, config, a file the user wrote), 3 refused (token, credentials), 4 the
 * cloud could not be reached.
 */
export const ERROR_CODES = {
  // Request shape
  VALIDATION_FAILED: { status: 400, exit: 2, meaning: 'The request body, query or path did not match the schema.' },
  INVALID_JSON: { status: 400, meaning: 'The request body is not valid JSON.' },
  INVALID_MANIFEST: { status: 400, exit: 2, meaning: 'The app manifest does not match the edgeweave/v1 App schema.' },
  INVALID_SELECTOR: { status: 400, exit: 2, meaning: 'A label selector is empty or has a malformed key or value.' },
  PAYLOAD_TOO_LARGE: { status: 413, meaning: 'The request body is larger than the server accepts.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, meaning: 'The request body has a content type the endpoint does not accept.' },
  MALFORMED_REQUEST: {
    status: 400,
    meaning: 'The HTTP request itself could not be read: a bad %-escape in the URL, a malformed header or request line.',
  },
  URI_TOO_LONG: { status: 414, meaning: 'The URL, or one of its path parameters, is longer than the server accepts.' },
  HEADERS_TOO_LARGE: { status: 431, meaning: 'The request headers are larger than the server accepts.' },
  REQUEST_TIMEOUT: { status: 408, meaning: "The request (its headers or its body) did not arrive within the server's time limit." },
  RANGE_NOT_SATISFIABLE: {
    status: 416,
    meaning: 'A `Range` header asks for bytes the artifact does not have, or is malformed (start after end).',
  },
  RATE_LIMITED: {
    status: 429,
    meaning:
      'Too many requests from this API key or address (the API, or routed inference); the `Retry-After` header says when to try again.',
  },
  // Authentication and authorisation
  UNAUTHENTICATED: { status: 401, exit: 3, meaning: 'No credentials, or credentials that are not recognised.' },
  TOKEN_INVALID: { status: 401, exit: 3, meaning: 'The join token is unknown.' },
  TOKEN_USED: { status: 401, exit: 3, meaning: 'The join token was already used to enroll a site.' },
  TOKEN_EXPIRED: { status: 401, exit: 3, meaning: 'The join token is past its expiry time.' },
  SITE_REVOKED: { status: 403, exit: 3, meaning: 'The site was revoked; its credentials no longer work.' },
  // Resources
  NOT_FOUND: { status: 404, meaning: 'No such route.' },
  SITE_NOT_FOUND: { status: 404, meaning: 'No site with that id in this tenant.' },
  APP_NOT_FOUND: { status: 404, meaning: 'No app with that name (and version) in this tenant.' },
  DEPLOYMENT_NOT_FOUND: { status: 404, meaning: 'No deployment with that id in this tenant.' },
  KEY_NOT_FOUND: { status: 404, meaning: 'No live API key with that id in this tenant.' },
  TOKEN_NOT_FOUND: { status: 404, meaning: 'No join token with that id in this tenant.' },
  DEVICE_NOT_FOUND: { status: 404, meaning: 'No device with that id is registered on the site.' },
  DEVICE_EXISTS: { status: 409, meaning: 'A device with that id is already registered on the site.' },
  ROLLOUT_STATE: {
    status: 409,
    meaning: 'The rollout is not in a state that allows this action (e.g. resume a rollout that is not paused).',
  },
  APP_VERSION_EXISTS: { status: 409, exit: 2, meaning: 'That app version was already pushed; versions are immutable.' },
  LAST_ADMIN_KEY: { status: 409, meaning: "The key is the tenant's last live admin key; revoking it would lock the tenant out." },
  ARTIFACT_NOT_ALLOWED: {
    status: 403,
    meaning: 'The site may not download this artifact: no deployment targeting it references the file.',
  },
  ENDPOINT_CONFLICT: {
    status: 409,
    meaning: 'Two apps on one site would declare the same endpoint name; the message names both apps and the sites.',
  },
  // Tenants, roles and quotas (issue 14)
  KEY_EXPIRED: {
    status: 401,
    exit: 3,
    meaning: 'The API key is past its expiry time; an admin of the tenant creates a new one (edgeweave keys create).',
  },
  PERMISSION_DENIED: {
    status: 403,
    exit: 3,
    meaning: "The API key's role does not include the permission the call needs; the message names the role and the permission lacking.",
  },
  KEY_SCOPE_DENIED: {
    status: 403,
    exit: 3,
    meaning: 'The API key is limited to certain apps or site labels and the call reaches outside them; the message names the limit.',
  },
  TENANT_SUSPENDED: {
    status: 403,
    exit: 3,
    meaning:
      'The tenant is suspended: reads work, changes and enrollments are refused and its rollouts are held until a platform admin resumes it.',
  },
  TENANT_NOT_FOUND: { status: 404, meaning: 'No tenant with that id or name.' },
  TENANT_EXISTS: { status: 409, exit: 2, meaning: 'A tenant with that name already exists.' },
  QUOTA_EXCEEDED: {
    status: 403,
    exit: 3,
    meaning:
      'The tenant is at one of its quotas (sites, apps, artifact bytes, results per day); the message names the quota, its limit and the usage.',
  },
  CONFIRMATION_REQUIRED: {
    status: 400,
    exit: 2,
    meaning: 'A destructive call (deleting a tenant) must repeat the name of what it deletes in `confirm`; try it with `dryRun` first.',
  },
  // Streaming SQL
  SQL_SYNTAX: { status: 400, exit: 2, meaning: 'A streaming-SQL rule does not parse; the message names line and column.' },
  SQL_INVALID: {
    status: 400,
    exit: 2,
    meaning: 'A streaming-SQL rule parses but is wrong: unknown field or function, bad types, a misplaced aggregate or window.',
  },
  SQL_LIMIT: {
    status: 400,
    exit: 2,
    meaning:
      "A streaming-SQL rule's window would hold more state than a site allows: too many windows per record, too many open windows, or too many records per window.",
  },
  RULE_STATE_BUDGET: {
    status: 503,
    meaning:
      'A running rule held more state (groups, buffered records, kept values) than its budget; it was stopped and the site kept running.',
  },
  EGRESS_DENIED: { status: 400, exit: 2, meaning: "A rule would send results off the site that the app's egress policy does not grant." },
  STREAM_RESERVED: {
    status: 403,
    meaning: 'Stream names starting with "_" (such as _egress-audit) are reserved for the site\'s own streams.',
  },
  // Inference
  MODEL_NOT_FOUND: { status: 404, meaning: 'No model (or endpoint) of that name and version is served by this site.' },
  MODEL_NOT_READY: { status: 503, meaning: 'The model is declared but not loaded yet (downloading or loading).' },
  MODEL_LOAD_FAILED: { status: 500, exit: 2, meaning: 'A model file could not be loaded by its runtime.' },
  INFER_INPUT_INVALID: {
    status: 400,
    meaning:
      "An inference request's tensors do not match the model: a missing input, a wrong datatype or shape, or data of the wrong length.",
  },
  QUEUE_FULL: { status: 503, meaning: "The model's request queue is full (back-pressure); retry after a short wait." },
  // Language models (OpenAI-compatible /v1 on the site; `error.code` there is the code in lower case)
  MODEL_UNSUPPORTED: {
    status: 400,
    meaning: 'A model file is of an architecture or kind its runtime cannot run (a GGUF architecture llama.cpp does not know).',
  },
  MODEL_TOO_LARGE: { status: 507, meaning: 'A model would not fit the memory granted to it; refused before loading, with the figures.' },
  CONTEXT_LENGTH_EXCEEDED: { status: 400, meaning: "A prompt (with the tokens asked for) is longer than the model's context." },
  RESPONSE_FORMAT_INVALID: {
    status: 400,
    meaning: 'A response_format (or llm() json_schema) is not a JSON schema the model can be constrained to.',
  },
  LLM_RUNTIME_CRASHED: {
    status: 503,
    meaning: "The language model's runtime process died during the request; the site restarts it with backoff.",
  },
  LLM_TIMEOUT: { status: 504, meaning: "A language-model request ran past its endpoint's timeout and was stopped." },
  UPSTREAM_FAILED: {
    status: 502,
    meaning: "A remote model's upstream (an OpenAI-compatible server) failed or could not be reached after retries.",
  },
  TOKEN_BUDGET_EXHAUSTED: {
    status: 429,
    meaning: "A rule used up its llm() token budget for the current minute; the record goes to the rule's errors.",
  },
  ARTIFACT_NOT_FOUND: { status: 404, meaning: 'No complete artifact (model file) with that sha256 on the cloud.' },
  ARTIFACT_OFFSET_MISMATCH: { status: 409, meaning: 'A resumed upload chunk does not start where the stored part ends.' },
  ARTIFACT_DIGEST_MISMATCH: {
    status: 400,
    exit: 2,
    meaning: "A model file's bytes do not hash to the sha256 it was named by; it was refused and never loaded.",
  },
  SITE_UNREACHABLE: { status: 504, meaning: 'The site did not answer a request from the cloud in time (offline, or busy).' },
  SITE_REFUSED: {
    status: 502,
    meaning:
      "The site refused the cloud's request with an error code this cloud does not know (a newer agent); the message carries the site's code and words.",
  },
  // The cloud's inference router
  RESIDENCY_UNSATISFIABLE: {
    status: 422,
    meaning:
      "No site (or cloud) serving the endpoint satisfies the request's data-residency constraint (its regions, its data class, the endpoint's policy); the message names the constraint.",
  },
  NO_SITE_AVAILABLE: {
    status: 503,
    meaning:
      'Sites that may serve the request exist but none can now (offline, model not ready, overloaded, failing) and no fallback is allowed; retry after Retry-After.',
  },
  INFER_DEADLINE_EXCEEDED: {
    status: 504,
    meaning: 'No eligible site (or the cloud fallback) answered a routed request within its deadline.',
  },
  SITE_ANSWER_INVALID: {
    status: 502,
    meaning:
      "A site answered with something that does not match the wire contract (src/contracts/rpc.ts, infer-wire.ts): a routed request (the router tried the next site), or one of the cloud's requests such as its logs.",
  },
  CLIENT_CLOSED: {
    status: 499,
    meaning: 'The client went away before the answer (reported in logs and metrics; the site was told to cancel).',
  },
  TOO_MANY_CONCURRENT: {
    status: 429,
    meaning: 'The API key has as many inference requests in flight as it may; retry after one finishes (Retry-After).',
  },
  // Edge-local API
  OUTBOX_FULL: { status: 503, meaning: "The site's outbox is full and its overflow policy is reject-new." },
  INTAKE_FULL: {
    status: 503,
    meaning:
      'The site holds as many records not yet durable as it may (a device or push outpacing its journal or a full outbox), or is shutting down; the records were not accepted.',
  },
  NOT_ENROLLED: { status: 503, exit: 2, meaning: 'The agent has no site credentials yet.' },
  // Agent start-up (CLI exit codes, not HTTP)
  ENROLL_FAILED: { status: 502, exit: 3, meaning: 'The agent could not exchange its join token with the cloud.' },
  CLOUD_UNREACHABLE: { status: 502, exit: 4, meaning: 'The cloud could not be reached over HTTP.' },
  CONFIG_INVALID: { status: 400, exit: 2, meaning: 'A command-line flag or config value is invalid.' },
  DATA_DIR_INVALID: {
    status: 500,
    exit: 2,
    meaning:
      'The data directory cannot be used: an empty or missing edge.db beside existing credentials, a damaged database, a read-only or full disk.',
  },
  // MQTT payloads (reported in logs and counters, not HTTP)
  MQTT_PAYLOAD_INVALID: { status: 400, meaning: 'An MQTT message is not valid JSON or does not match its schema.' },
  CONTRACT_VERSION_UNSUPPORTED: {
    status: 400,
    meaning:
      'A cloud–site message or an enrollment speaks a contract version this side cannot read (a newer major, or one older than the oldest still read).',
  },
  // Live event streams (the console)
  EVENT_STREAMS_LIMIT: { status: 429, meaning: 'Too many live event streams are open (for this tenant, or on this cloud replica).' },
  // Industrial sources and write-back (reported in the site's status, logs and metrics; WRITE_DENIED also at push)
  SOURCE_UNREACHABLE: {
    status: 502,
    meaning: 'An OPC UA server or Modbus device did not answer: unreachable endpoint, refused connection, or a request that timed out.',
  },
  SOURCE_SECURITY: {
    status: 502,
    meaning: "An OPC UA server's certificate is not trusted, or it refused the site's credentials or security settings.",
  },
  SOURCE_ADDRESS_INVALID: {
    status: 502,
    meaning: "A node id that does not exist on the OPC UA server, or a Modbus register or coil outside the device's range.",
  },
  WRITE_DENIED: {
    status: 400,
    meaning:
      "A rule would write to a machine what the app's write policy does not grant: an ungranted target (refused at push), or a value out of range, of the wrong type, or over the rate (refused and audited at run time).",
  },
  WRITE_FAILED: {
    status: 502,
    meaning: 'A granted write reached the machine and was refused by it (not writable, wrong type, access denied).',
  },
  // Server side
  STORE_UNAVAILABLE: { status: 503, meaning: 'The state store (SQLite or PostgreSQL) failed or is unreachable.' },
  STORE_SCHEMA_NEWER: {
    status: 500,
    exit: 2,
    meaning:
      'The database was migrated by a newer Edgeweave than this replica: it has schema migrations this version does not know, and this replica refuses to start on it.',
  },
  IDEMPOTENCY_KEY_REUSED: {
    status: 422,
    meaning: 'An Idempotency-Key was sent again with a different request (method, path or body) than the one it first named.',
  },
  IDEMPOTENCY_KEY_IN_PROGRESS: {
    status: 409,
    meaning: 'A request with this Idempotency-Key is still being processed (on this or another replica); retry after Retry-After.',
  },
  INTERNAL: { status: 500, meaning: 'An unexpected error; the server logs carry the request id.' },
} as const satisfies Record<string, { status: number; exit?: ExitCode; meaning: string }>;

/** The CLI's exit statuses besides 0 (success); docs/errors.md has the table. */
export type ExitCode = 1 | 2 | 3 | 4;

/** The CLI's exit status for a command that failed with `code`. */
export function exitCodeFor(code: ErrorCode): ExitCode {
  const e: { status: number; exit?: ExitCode } = ERROR_CODES[code];
  return e.exit ?? 1;
}

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * Where in a text an error is: 1-based line and column, and the file when the text is one
 * (a bundle's `rules/anomalies.sql`). For SQL the line and column are within the rule's SQL.
 */
export interface SourcePos {
  line: number;
  col: number;
  file?: string;
}

/** The JSON body of every API error. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  /** Dotted path of the offending field (`spec.models[0].name`), where it applies. */
  path?: string;
  /** Where in the field's text (a rule's SQL), where it applies. */
  pos?: SourcePos;
}

/**
 * The one error type of the project: a stable code, a human message, and as data where it
 * applies the offending field's path, the position in its text and the error it came from.
 */
export class EwError extends Error {
  override readonly name = 'EwError';
  readonly code: ErrorCode;
  readonly path?: string;
  readonly pos?: SourcePos;
  readonly status: number;
  /**
   * The message without the place it names (`line 2, column 3: ` or a rule's context), for a
   * caller that states the place its own way (a bundle says `file:line:col: detail`).
   */
  readonly detail: string;
  constructor(code: ErrorCode, message: string, opts: { path?: string; pos?: SourcePos; cause?: unknown; detail?: string } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.path = opts.path;
    this.pos = opts.pos;
    this.detail = opts.detail ?? message;
    this.status = ERROR_CODES[code].status;
  }
  /**
   * This error as seen from an enclosing document: its path under `prefix` (`manifest.` +
   * `spec.rules[0].sql`), its message after `context` when given; position and detail kept,
   * this error the cause.
   */
  within(prefix: string, context?: string): EwError {
    return new EwError(this.code, context === undefined ? this.message : `${context}: ${this.message}`, {
      path: this.path === undefined ? prefix.replace(/\.$/, '') : `${prefix}${this.path}`,
      pos: this.pos,
      detail: this.detail,
      cause: this,
    });
  }
  /** Where the error is, for one line of text: `file:line:col`, `path:line:col`, `path`, or `line L, column C` in a bare text. */
  where(): string | undefined {
    if (!this.pos) return this.path;
    const at = this.pos.file ?? this.path;
    return at === undefined ? `line ${this.pos.line}, column ${this.pos.col}` : `${at}:${this.pos.line}:${this.pos.col}`;
  }
  toJSON(): ErrorBody {
    const body: ErrorBody = { code: this.code, message: this.message };
    if (this.path !== undefined) body.path = this.path;
    if (this.pos !== undefined) body.pos = this.pos;
    return body;
  }
}

export function isEwError(e: unknown, code?: ErrorCode): e is EwError {
  return e instanceof EwError && (code === undefined || e.code === code);
}

/** Turns a zod issue path (['spec', 'models', 0, 'name']) into `spec.models[0].name`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out;
}
