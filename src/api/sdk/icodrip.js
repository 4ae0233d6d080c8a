/**
 * Icodrip browser SDK, v1: tracking events from web pages, with a public key.
 *
 *     import Icodrip from "https://<your Icodrip API>/sdk/v1/icodrip.js";
 *     const icodrip = new Icodrip({ publicKey: "pk_live_…" });
 *     icodrip.track("signup", { plan: "pro" });
 *
 * Events are queued and sent together (`POST /v1/events` with `{"batch": [...]}`) a moment
 * after the first one, when a batch is full, on `flush()`, and when the page is hidden or left.
 * A 429 is retried after its `Retry-After`, a 5xx or a network failure with backoff, a bounded
 * number of times; any other refusal drops the batch with a console warning.
 *
 * An ES module with no dependencies and no build step: served by the API at
 * `/sdk/v1/icodrip.js`, or copied into your own code as it is.
 */

const PUBLIC_KEY = /^pk_(live|test)_[0-9A-Za-z]{33}$/;
const SDK_PATH = "/sdk/v1/icodrip.js";
const EVENTS_PATH = "/v1/events";
/** The API's limit on one batch's body is 64 KiB, and so is a browser's on the bodies of all
 *  `keepalive` requests in flight at once: stay a little under both. */
const MAX_BODY_BYTES = 63 * 1024;
/** The API refuses an event over 16 KiB, and one bad event refuses its whole batch: such an
 *  event is not queued at all. */
const MAX_EVENT_BYTES = 16 * 1024 - 256;
const MAX_BATCH = 100;
const MAX_PROPERTIES = 100;
const MAX_NAME_LENGTH = 200;
/** Events waiting at most (while the API cannot be reached); later ones are not tracked. */
const MAX_QUEUE = 1000;
const MAX_RETRY_AFTER_SECONDS = 300;
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** A clock further off than this from the API's is corrected (the API refuses timestamps
 *  more than 5 minutes ahead of its own clock); its `Date` header counts whole seconds. */
const SKEW_TOLERANCE_MS = 3000;
/** `{"batch":[` and `]}` around the events, which are separated by commas. */
const BATCH_FRAME_BYTES = 12;

const utf8 = new TextEncoder();

/** Sends tracking events to Icodrip from a browser, with a public key (`pk_live_…`). */
export class Icodrip {
  #key;
  #fetch;
  /** @type {Array<{event: string, properties: object, at: number, bytes: number}>} */
  #queue = [];
  /** The batch of the request being sent now (not with `keepalive`), if any. */
  #inFlight = null;
  /** Bytes of the `keepalive` requests in flight: a browser allows 64 KiB at once. */
  #keepaliveBytes = 0;
  /** The page is hidden (perhaps for good): what is tracked now is sent at once. */
  #hidden = false;
  #timer = null;
  /** @type {Promise<{sent: number, dropped: number}> | null} */
  #sending = null;
  #skewMs = 0;
  #onVisibilityChange = () => {
    this.#hidden = document.visibilityState === "hidden";
    if (this.#hidden) this.#flushOnHide();
  };
  #onPageHide = () => {
    this.#hidden = true;
    this.#flushOnHide();
  };
  #onPageShow = () => {
    this.#hidden = false;
  };

  /**
   * @param {object} options
   * @param {string} options.publicKey  a public key, `pk_live_…` or `pk_test_…`; never a
   *   secret key (`ak_…`): the constructor throws (and says why on the console) if given one
   * @param {string} [options.baseUrl]  the API's URL; by default, where this file was loaded
   *   from (required when the file is copied into your own code)
   * @param {number} [options.flushInterval=2000]  milliseconds to wait for more events
   *   before sending
   * @param {number} [options.maxBatch=20]  events per request, 1–100
   * @param {number} [options.maxRetries=4]  further attempts at a batch after a 429, a 5xx or
   *   a network failure, before it is dropped
   * @param {typeof fetch} [options.fetch]  the `fetch` to send with (default: the browser's)
   */
  constructor({
    publicKey, baseUrl, flushInterval = 2000, maxBatch = 20, maxRetries = 4, fetch,
  } = {}) {
    this.#key = checkedKey(publicKey);
    this.baseUrl = checkedBaseUrl(baseUrl ?? defaultBaseUrl());
    this.flushInterval = Math.max(0, Number(flushInterval) || 0);
    this.maxBatch = Math.min(MAX_BATCH, Math.max(1, Math.floor(Number(maxBatch)) || 1));
    this.maxRetries = Math.max(0, Math.floor(Number(maxRetries)) || 0);
    this.#fetch = fetch ?? ((...args) => globalThis.fetch(...args));
    /** The X-RateLimit-* headers of the API's last answer: requests per minute, left in this
     *  minute, and when it ends (Unix seconds).
     *  @type {{limit: ?number, remaining: ?number, reset: ?number} | null} */
    this.lastRateLimit = null;
    /** Why events were last dropped: the HTTP status (null: no answer could be read), the
     *  API's error `code` (or `network_error`), its message and `x-request-id`, and how many.
     *  @type {{status: ?number, code: string, message: string, requestId: ?string,
     *          events: number} | null} */
    this.lastError = null;
    if (typeof document !== "undefined" && typeof addEventListener === "function") {
      document.addEventListener("visibilitychange", this.#onVisibilityChange);
      addEventListener("pagehide", this.#onPageHide);
      addEventListener("pageshow", this.#onPageShow);
    }
  }

  /**
   * Queue an event; it is sent with others shortly. Never throws: an event the API would
   * refuse is not queued, with a console warning saying why.
   * @param {string} name  1–200 characters, no control characters
   * @param {object} [properties]  JSON-serializable, at most 100 entries
   * @returns {boolean} whether the event was queued
   */
  track(name, properties = {}) {
    // A copy (what the caller changes later does not change the event), its text well formed:
    // half an emoji (a string cut short) would make the whole batch unreadable to the API.
    const entry = {
      event: wellFormed(name), properties: wellFormed(jsonCopy(properties)), at: Date.now(), bytes: 0,
    };
    entry.bytes = utf8.encode(this.#encode(entry)).length;
    const full = this.#queue.length >= MAX_QUEUE ? `${MAX_QUEUE} events already wait` : null;
    const problem = problemWith(entry) ?? full;
    if (problem) {
      console.warn(`Icodrip: event ${JSON.stringify(String(name))} not tracked: ${problem}`);
      return false;
    }
    this.#queue.push(entry);
    // Tracked as the page goes (in its own pagehide handler, say): sent now, or never.
    if (this.#hidden) this.#flushOnHide();
    else if (this.#queue.length >= this.maxBatch) this.flush();
    else this.#later();
    return true;
  }

  /**
   * Send every queued event now (those tracked meanwhile too).
   * @returns {Promise<{sent: number, dropped: number}>} once the queue is empty
   */
  flush() {
    clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#sending === null) {
      this.#sending = this.#drain().finally(() => {
        this.#sending = null;
        if (this.#queue.length > 0) this.#later(); // put back by a hidden page's request
      });
    }
    return this.#sending;
  }

  /** Flush after `flushInterval`, unless a flush is already due or under way. */
  #later() {
    if (this.#timer === null && this.#sending === null) {
      this.#timer = setTimeout(() => this.flush(), this.flushInterval);
    }
  }

  /** Stop listening to the page and send what is queued, as `flush()` does. */
  close() {
    if (typeof document !== "undefined" && typeof removeEventListener === "function") {
      document.removeEventListener("visibilitychange", this.#onVisibilityChange);
      removeEventListener("pagehide", this.#onPageHide);
      removeEventListener("pageshow", this.#onPageShow);
    }
    return this.flush();
  }

  async #drain() {
    const result = { sent: 0, dropped: 0 };
    let attempt = 0;
    while (this.#queue.length > 0) {
      const batch = nextBatch(this.#queue, this.maxBatch, MAX_BODY_BYTES);
      if (batch.length === 0) break; // cannot happen: every queued event fits in a request
      this.#inFlight = batch;
      let outcome;
      try {
        outcome = await this.#send(batch, false);
      } finally {
        this.#inFlight = null;
      }
      if (outcome.restamp && attempt < this.maxRetries) {
        // Refused for times our clock made, now corrected: a new request (nothing was stored).
        unpin(batch);
        attempt += 1;
        continue;
      }
      if (outcome.retry && attempt < this.maxRetries) {
        // The batch stays at the head of the queue: sent again after the wait (or on page
        // hide, if that comes first).
        await sleep(outcome.retryAfterMs ?? backoffMs(attempt));
        attempt += 1;
        continue;
      }
      this.#remove(batch);
      attempt = 0;
      if (outcome.sent) {
        result.sent += batch.length;
      } else {
        result.dropped += batch.length;
        this.#dropped(outcome, batch.length);
      }
    }
    return result;
  }

  /**
   * The page is being hidden, perhaps for good (a tab closed, a link followed): send what waits
   * now, with `keepalive`, so that the requests outlive the page.
   *
   * Not `navigator.sendBeacon`: it cannot send an `Authorization` header, and a public key
   * travels in that header, never in a URL or a body that logs and proxies keep. `keepalive`
   * bodies in flight may total 64 KiB in a browser: what does not fit waits for the next flush,
   * which happens if the page was only hidden.
   *
   * The batch being sent without `keepalive` right now would be cancelled with the page: it
   * goes again with `keepalive`, as it was (same body, same key), so that it lands once either
   * way; its first request's outcome still decides what becomes of it.
   */
  #flushOnHide() {
    clearTimeout(this.#timer);
    this.#timer = null;
    const current = this.#inFlight;
    if (current?.sent.body && !current.sent.rescued && this.#fitsKeepalive(current.sent.bytes)) {
      current.sent.rescued = true;
      this.#sendKeepalive(current);
    }
    const busy = new Set(current ?? []);
    const waiting = this.#queue.filter((entry) => !busy.has(entry));
    while (waiting.length > 0) {
      const batch = nextBatch(waiting, this.maxBatch, MAX_BODY_BYTES - this.#keepaliveBytes);
      if (batch.length === 0) break;
      waiting.splice(0, batch.length);
      this.#remove(batch);
      this.#sendKeepalive(batch).then((outcome) => {
        if (outcome.sent) return;
        if (outcome.retry) {
          // Still here (the page was only hidden): back to the queue, for the usual retries.
          this.#queue.unshift(...batch);
          this.#later();
        } else {
          this.#dropped(outcome, batch.length);
        }
      });
    }
  }

  #fitsKeepalive(bytes) {
    return this.#keepaliveBytes + bytes <= MAX_BODY_BYTES;
  }

  async #sendKeepalive(batch) {
    this.#keepaliveBytes += batch.sent.bytes;
    try {
      return await this.#send(batch, true);
    } finally {
      this.#keepaliveBytes -= batch.sent.bytes;
    }
  }

  /** One request; what came of it. Never throws. Every attempt at a batch sends the same
   *  body under the same `Idempotency-Key`: if an earlier attempt landed but its answer was
   *  lost, the API answers again with what it stored then, instead of storing it twice. */
  async #send(batch, keepalive) {
    const sent = batch.sent;
    sent.body ??= `{"batch":[${batch.map((entry) => this.#encode(entry)).join(",")}]}`;
    const body = sent.body;
    let response;
    try {
      response = await this.#fetch(this.baseUrl + EVENTS_PATH, {
        method: "POST",
        headers: {
          Authorization: `Bearer ${this.#key}`,
          "Content-Type": "application/json",
          "Idempotency-Key": sent.key,
        },
        body,
        keepalive,
        credentials: "omit",
        mode: "cors",
      });
    } catch {
      // No answer, or one the browser would not let us read: a CORS refusal (this page's
      // origin is not allowed for the key) looks exactly like a network failure.
      const message =
        `could not reach ${this.baseUrl}: the network failed, or the API refused this ` +
        "page's origin (a public key works only from the origins listed on it)";
      return { retry: true, status: null, code: "network_error", message, requestId: null };
    }
    this.#readRateLimit(response.headers);
    const corrected = this.#readClock(response.headers);
    if (response.ok) return { sent: true };
    const error = (await response.json().catch(() => null))?.error ?? {};
    const refusal = {
      status: response.status,
      code: typeof error.code === "string" ? error.code : `http_${response.status}`,
      message: typeof error.message === "string" ? error.message : response.statusText,
      requestId: response.headers.get("x-request-id") ?? error.request_id ?? null,
    };
    const inUse = response.status === 409 && refusal.code === "idempotency_key_in_use";
    if (response.status === 429 || response.status >= 500 || inUse) {
      const seconds = retryAfterSeconds(response.headers.get("retry-after"));
      const wait = seconds === null ? (response.status === 429 ? 1000 : null) : seconds * 1000;
      return { ...refusal, retry: true, retryAfterMs: wait }; // null: back off
    }
    const stamped = response.status === 422 && /timestamp/.test(refusal.message);
    return { ...refusal, retry: false, restamp: stamped && corrected };
  }

  /** An event as the API takes it; its time on the API's clock, as best known. */
  #encode({ event, properties, at }) {
    const timestamp = new Date(at + this.#skewMs).toISOString();
    return JSON.stringify({ event, properties, timestamp });
  }

  /** Learn how far this browser's clock is from the API's, from an answer's `Date` (a replay's
   *  too: it is sent fresh). Whether that changed what this clock is taken to be off by. */
  #readClock(headers) {
    const said = Date.parse(headers.get("date") ?? "");
    if (Number.isNaN(said)) return false;
    const skew = said + 500 - Date.now(); // the header cuts to the second: its middle
    const skewMs = Math.abs(skew) > SKEW_TOLERANCE_MS ? skew : 0;
    const changed = Math.abs(skewMs - this.#skewMs) > SKEW_TOLERANCE_MS;
    if (changed) this.#skewMs = skewMs;
    return changed;
  }

  #readRateLimit(headers) {
    const limit = numberOrNull(headers.get("x-ratelimit-limit"));
    const remaining = numberOrNull(headers.get("x-ratelimit-remaining"));
    const reset = numberOrNull(headers.get("x-ratelimit-reset"));
    if (limit !== null || remaining !== null || reset !== null) {
      this.lastRateLimit = { limit, remaining, reset };
    }
  }

  #remove(batch) {
    const gone = new Set(batch);
    this.#queue = this.#queue.filter((entry) => !gone.has(entry));
  }

  #dropped(outcome, events) {
    const { status, code, message, requestId } = outcome;
    this.lastError = { status, code, message, requestId, events };
    const what = status === null ? code : `${status} ${code}`;
    const id = requestId ? ` (request ${requestId})` : "";
    console.warn(`Icodrip: ${events} event(s) dropped: ${what}: ${message}${id}`);
  }
}

export default Icodrip;

/** The key, if it is a public key; else throws, and says why on the console. */
function checkedKey(publicKey) {
  const key = typeof publicKey === "string" ? publicKey.trim() : "";
  if (key.startsWith("ak_")) {
    refuse(
      "refusing to start with a secret key (ak_…). A secret key must never be used in a " +
        "browser: anyone who opens this page can read it and act on your account with it. " +
        "Roll that key now, keep secret keys on servers, and give the SDK a public key " +
        "(pk_live_… or pk_test_…), made for browsers: it can only send events.",
    );
  }
  if (!PUBLIC_KEY.test(key)) {
    refuse("publicKey must be a public key (pk_live_… or pk_test_…) allowing this site's origin");
  }
  return key;
}

/** The API's URL when this file was loaded from it (`…/sdk/v1/icodrip.js`), else null. */
function defaultBaseUrl() {
  const here = new URL(import.meta.url);
  if (!here.pathname.endsWith(SDK_PATH)) return null;
  return here.origin + here.pathname.slice(0, -SDK_PATH.length);
}

function checkedBaseUrl(baseUrl) {
  let url = null;
  try {
    url = new URL(baseUrl);
  } catch {
    // refused below
  }
  if (url === null || !["https:", "http:"].includes(url.protocol)) {
    refuse("baseUrl must be the API's https:// URL (required when icodrip.js is self-hosted)");
  }
  return url.href.replace(/\/+$/, "");
}

function refuse(message) {
  console.error(`Icodrip: ${message}`);
  throw new Error(`Icodrip: ${message}`);
}

/** `value` with every string (and property name) well formed: a lone surrogate, half of an
 *  emoji, becomes U+FFFD, as `String.prototype.toWellFormed` does. */
function wellFormed(value) {
  if (typeof value === "string") {
    return typeof value.toWellFormed === "function"
      ? value.toWellFormed()
      : value.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
  }
  if (Array.isArray(value)) return value.map(wellFormed);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [wellFormed(k), wellFormed(v)]));
  }
  return value;
}

/** `value` through JSON (dates become strings, functions vanish); undefined if it is not JSON. */
function jsonCopy(value) {
  try {
    return JSON.parse(JSON.stringify(value));
  } catch {
    return undefined; // a cycle, a BigInt
  }
}

/** Why the API would refuse this event (its rules, checked here), or null. */
function problemWith({ event, properties, bytes }) {
  if (typeof event !== "string" || event.length === 0) return "the name must be a non-empty string";
  // Lengths in characters (code points), as the API counts them.
  if ([...event].length > MAX_NAME_LENGTH) return "the name is over 200 characters";
  if (/[\u0000-\u001f]/.test(event)) return "the name contains control characters";
  if (properties === null || typeof properties !== "object" || Array.isArray(properties)) {
    return "properties must be a JSON object";
  }
  const names = Object.keys(properties);
  if (names.length > MAX_PROPERTIES) return "more than 100 properties";
  if (names.some((key) => key.length === 0 || [...key].length > MAX_NAME_LENGTH)) {
    return "property names must be 1–200 characters";
  }
  return bytes > MAX_EVENT_BYTES ? "over 16 KiB as JSON" : null;
}

/** The first events of `entries` that fit in one request (at most `count`, `maxBytes`), and
 *  the size of that request's body. */
function takeBatch(entries, count, maxBytes) {
  const batch = [];
  let bytes = BATCH_FRAME_BYTES;
  for (const entry of entries) {
    if (batch.length === count || bytes + entry.bytes + 1 > maxBytes) break;
    batch.push(entry);
    bytes += entry.bytes + 1;
  }
  return [batch, bytes];
}

/** The batch to send next from the head of `entries`: the one an attempt already went out
 *  with (sent again as it was), or a new one (`takeBatch`), given its own idempotency key. */
function nextBatch(entries, count, maxBytes) {
  const pinned = entries[0]?.sent;
  if (pinned) return pinned.bytes <= maxBytes ? pinned.entries : [];
  const [batch, bytes] = takeBatch(entries, count, maxBytes);
  const sent = { entries: batch, bytes, key: newIdempotencyKey(), body: null };
  for (const entry of batch) entry.sent = sent;
  batch.sent = sent;
  return batch;
}

/** Forget the request `batch` went out with: it goes again as a new one (a new body, a new
 *  key), which is right only when the API stored none of it. */
function unpin(batch) {
  for (const entry of batch) delete entry.sent;
  delete batch.sent;
}

function newIdempotencyKey() {
  if (typeof globalThis.crypto?.randomUUID === "function") return globalThis.crypto.randomUUID();
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `Retry-After` in seconds (delta-seconds or an HTTP date), bounded; null when absent. */
function retryAfterSeconds(value) {
  const text = (value ?? "").trim();
  const seconds = /^\d+$/.test(text) ? Number(text) : (Date.parse(text) - Date.now()) / 1000;
  return Number.isNaN(seconds) ? null : Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(0, seconds));
}

/** Exponential backoff with jitter, for attempt 0, 1, 2, …: about 1 s, 2 s, 4 s, … 30 s. */
function backoffMs(attempt) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

function numberOrNull(value) {
  const number = (value ?? "").trim() === "" ? NaN : Number(value);
  return Number.isFinite(number) ? number : null;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
