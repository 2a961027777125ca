// Resonator's ops worker in JavaScript: "+", "-" and "*" for the Python "=" workers.
//   GRP=ops PID=... RESONATE_URL=... node ts/ops.mjs    (Node 22 or newer: docs/polyglot.md)
import { Resonate } from "@resonatehq/sdk/async";

if (!JSON.rawJSON) {
  console.error(`ops.mjs needs Node 22 or newer, not ${process.version} (docs/polyglot.md)`);
  process.exit(2);
}
const { GRP = "ops", PID = crypto.randomUUID().slice(0, 8), RESONATOR_TTL = "60" } = process.env;
const url = process.env.RESONATE_URL || "http://localhost:8001"; // unset, the SDK runs in memory
const delay = 1000 * Number(process.env.RESONATOR_OP_DELAY ?? 0);
const name = `${GRP}/${PID}`;

// Values cross as base64 of JSON, and JSON.parse reads 2**53 + 1 as 2**53. The SDK's one hook
// between the wire and its JSON.parse is the encryptor: this one turns each integer past
// JavaScript's safe ones into a string of its digits (Node 22's reviver sees the source).
const exact = (_, v, { source }) => (Number.isInteger(v) && !Number.isSafeInteger(v) ? source : v);
const rewrite = (data) => JSON.stringify(JSON.parse(Buffer.from(data, "base64").toString(), exact));
const decrypt = (value) => ({ ...value, data: value.data && Buffer.from(rewrite(value.data)).toString("base64") });
const encryptor = { encrypt: (value) => value, decrypt };

// The SDK logs JSON, and its stream's ups and downs as they happen. This worker says of its
// server what the Python ones say (connections/link.py): that it waits for it, once, if it is
// not there yet; once per outage, that it cannot reach it; when it answers, that it connected,
// and the first time, `worker started` with its process number (what `kill -9` takes).
const say = (fields, msg) => console.error(`${name}: ${msg}${fields.error ? `: ${fields.error}` : ""}`);
let started = false;
let away = false; // said that the server is not there, and not yet that it is back
const up = (_, msg) => {
  if (msg !== "adapter connected" && msg !== "adapter reconnected") return;
  if (!started || away) console.log(`connected to ${url}`);
  if (!started) console.log(`worker started: group=${GRP} pid=${PID} (process ${process.pid})`);
  started = true;
  away = false;
};
const down = (fields, msg) => {
  if (msg !== "adapter reconnecting") return say(fields, msg);
  if (!away) console.log(started ? `cannot reach the Resonate server at ${url}; retrying` : `waiting for the Resonate server at ${url}`);
  away = true;
};
const logger = { debug() {}, info: up, warn: down, error: say };
// The SDK's lease is in milliseconds; RESONATOR_TTL, as for the Python workers, in seconds.
const resonate = new Resonate({ url, group: GRP, pid: PID, ttl: 1000 * Number(RESONATOR_TTL), encryptor, logger });

// As trace.py prints a step: a long one as its first and last 30 columns.
const window = (s) => (s.length <= 60 ? s : `${s.slice(0, 30)}…${s.slice(-30)} (${s.length} characters)`);
const OPERATORS = { "+": (x, y) => x + y, "-": (x, y) => x - y, "*": (x, y) => x * y };
for (const [op, compute] of Object.entries(OPERATORS)) {
  resonate.register(op, async (ctx, x, y) => {
    console.log(`${name}: ${window(`${op} ${x} ${y}`)}  [${ctx.id}]`);
    await new Promise((resolve) => setTimeout(resolve, delay));
    // BigInt throws for what is not an integer: the promise is rejected (and not retried).
    return JSON.rawJSON(String(compute(BigInt(x), BigInt(y)))); // its digits, however many
  });
}
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    await resonate.stop();
    console.log(`worker stopped: group=${GRP} pid=${PID}`);
    process.exit(0);
  });
}
