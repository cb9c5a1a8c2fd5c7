/**
 * Stop reading a server stream the way any async iterable is left: `break`, or an error thrown in the loop. The
 * call must end with the loop, so the process exits right after "stopped reading" with nothing else pending; if
 * the stream stays open, it exits with code 3 five seconds later instead. Against a live server
 * (LEARNING_ENGINE_URL); not part of `npm test`: tests/clients/test_typescript_stream_break.py starts the server
 * and runs it once per mode:
 *   break   break after the first message (the caller's `signal` loses its listener with the call)
 *   throw   throw in the loop, caught outside it
 *   abort   the caller aborts its `signal` and keeps reading: the stream ends with Canceled
 */
import { getEventListeners } from "node:events";

import { Code, ConnectError, createLearningEngineClient } from "../src/index.js";

const baseUrl = process.env.LEARNING_ENGINE_URL;
if (!baseUrl) throw new Error("set LEARNING_ENGINE_URL to a running server, e.g. http://127.0.0.1:50051");
const client = createLearningEngineClient({ baseUrl });
const mode = process.argv[2];
const caller = new AbortController();

try {
  for await (const { status } of client.lora.watchLoraStatus({}, { signal: caller.signal })) {
    console.log(`first status: alias ${status?.alias}`);
    if (mode === "break") break;
    if (mode === "throw") throw new Error("thrown in the loop");
    if (mode === "abort") caller.abort();
  }
  console.log("the loop ended");
} catch (error) {
  const code = error instanceof ConnectError ? Code[error.code] : "not a ConnectError";
  console.log(`the loop threw: ${code}: ${error instanceof Error ? error.message : error}`);
}
console.log(`stopped reading; listeners left on the caller's signal: ${getEventListeners(caller.signal, "abort").length}`);
// An unref'd timer fires only if something else keeps the process alive: here, the stream left open.
setTimeout(() => {
  console.log("still running 5 s after the loop stopped: the server stream is still open");
  process.exit(3);
}, 5000).unref();
