import { SwitchyardError, type ErrorBody, type TokenAnswer } from "./types.js";

/** What asking for a token gave. */
export type TokenResult =
  | { kind: "token"; answer: TokenAnswer; /** client clock minus gateway clock, ms */ offsetMs: number }
  | { kind: "disabled"; message: string };

/** The fetch function the client uses (the browser's by default). */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Parses an error answer into a SwitchyardError. */
export async function errorOf(res: Response): Promise<SwitchyardError> {
  let code: SwitchyardError["code"] = "internal";
  let message = `HTTP ${res.status}`;
  try {
    const body = (await res.json()) as Partial<ErrorBody>;
    if (body && body.error && typeof body.error.code === "string") {
      code = body.error.code;
      message = typeof body.error.message === "string" ? body.error.message : message;
    }
  } catch {
    // not JSON: keep the status text
  }
  const ra = Number(res.headers.get("Retry-After"));
  return new SwitchyardError(code, res.status, message, Number.isFinite(ra) && ra > 0 ? ra : undefined);
}

/** Checks the members the client relies on. */
export function validateAnswer(a: unknown): TokenAnswer {
  const x = a as TokenAnswer;
  const bad = (what: string) => new SwitchyardError("invalid_answer", 200, `token answer: ${what}`);
  if (!x || typeof x !== "object") throw bad("not an object");
  const tokens = x.tokens ?? (typeof x.key === "string" ? [x as Required<Pick<TokenAnswer, "key" | "channel" | "topics" | "expiresAt">>] : []);
  if (tokens.length === 0) throw bad("no token");
  for (const t of tokens) {
    if (typeof t.key !== "string" || typeof t.channel !== "string" || !Array.isArray(t.topics) || typeof t.expiresAt !== "string") {
      throw bad("token lacks key, channel, topics or expiresAt");
    }
  }
  if (x.sequence && (typeof x.sequence.epoch !== "string" || typeof x.sequence.last !== "number")) throw bad("bad sequence");
  return x;
}

/**
 * Asks GET {gateway}/v1/realtime/token?app=&room= with a room grant. 404
 * realtime_disabled is { kind: "disabled" }; any other refusal or failure
 * throws a SwitchyardError (code "network" when no answer came). The clock
 * offset is estimated from the answer's serverTime, halfway through the
 * round trip.
 */
export async function fetchToken(
  fetchFn: FetchLike,
  now: () => number,
  gateway: string,
  app: string,
  room: string,
  grant: string,
): Promise<TokenResult> {
  const url = `${gateway.replace(/\/+$/, "")}/v1/realtime/token?app=${encodeURIComponent(app)}&room=${encodeURIComponent(room)}`;
  const t0 = now();
  let res: Response;
  try {
    res = await fetchFn(url, { headers: { Authorization: `Bearer ${grant}` }, cache: "no-store" });
  } catch (e) {
    throw new SwitchyardError("network", 0, `token request failed: ${String((e as Error)?.message ?? e)}`);
  }
  const t1 = now();
  if (!res.ok) {
    const err = await errorOf(res);
    if (err.code === "realtime_disabled") return { kind: "disabled", message: err.message };
    throw err;
  }
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    throw new SwitchyardError("invalid_answer", res.status, "token answer is not JSON");
  }
  const answer = validateAnswer(body);
  const offsetMs = typeof answer.serverTime === "number" ? answer.serverTime - (t0 + t1) / 2 : 0;
  return { kind: "token", answer, offsetMs };
}

/** The tokens of an answer, one per realtime channel. */
export function tokensOf(a: TokenAnswer): { key: string; channel: string; topics: string[]; expiresAt: string }[] {
  if (a.tokens && a.tokens.length > 0) return a.tokens;
  return [{ key: a.key!, channel: a.channel!, topics: a.topics!, expiresAt: a.expiresAt! }];
}
