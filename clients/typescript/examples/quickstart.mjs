// @ts-check
/**
 * The Learning Engine TypeScript client as a program of yours would use it, imported by its package name.
 * Against a running server (`make run` serves http://127.0.0.1:50051):
 *
 *   LEARNING_ENGINE_URL=http://127.0.0.1:50051 node quickstart.mjs
 *
 * It reads the serving status (a server stream: the current status first, then each change), lists the
 * adapter versions, submits a feedback event twice (the second is a duplicate, never stored twice), reads the
 * feedback counts, and shows two errors typed by their reason: a version that does not exist, and a rating
 * out of range, which the server refuses with a field violation.
 * Set LEARNING_ENGINE_TOKEN for a server with auth_tokens.
 */
import {
  Code,
  ConnectError,
  ErrorReason,
  FeedbackKind,
  createLearningEngineClient,
  errorInfo,
  fieldViolations,
} from "@learning-engine/client";

const baseUrl = process.env.LEARNING_ENGINE_URL ?? "http://127.0.0.1:50051";
const client = createLearningEngineClient({ baseUrl, token: process.env.LEARNING_ENGINE_TOKEN });

// A server stream: take the current status, then stop watching (leaving the loop cancels the call).
for await (const { status } of client.lora.watchLoraStatus({})) {
  console.log(`server ${status?.serverVersion}: base model ${status?.baseModel}, ` +
    `active adapter ${status?.activeVersion || "(none)"}, alias ${status?.alias}`);
  break;
}

const { adapters } = await client.adapters.listAdapters({});
console.log(`adapters: ${adapters.length}`);
for (const adapter of adapters) console.log(`  ${adapter.version} (${adapter.baseModel})`);

const event = {
  clientEventId: `quickstart-${Date.now()}`,
  kind: FeedbackKind.THUMBS_UP,
  interaction: { prompt: "What is the capital of Zembla?", response: "Onhava." },
  userId: "quickstart-user",
};
const first = await client.feedback.submitFeedback({ events: [event] });
console.log(`feedback submitted: stored ${first.stored}, duplicates ${first.duplicates}`);
const again = await client.feedback.submitFeedback({ events: [event] });
console.log(`feedback resent: stored ${again.stored}, duplicates ${again.duplicates}`);
const stats = await client.feedback.getFeedbackStats({});
console.log(`feedback in the last 7 days: ${stats.total}`);

/** An error as the catalogue types it: the status code, the reason (learning.v1.ErrorReason), violations. */
function describe(/** @type {unknown} */ error) {
  const info = errorInfo(error);
  const reason = info ? ErrorReason[info.errorReason] : "(no ErrorInfo)";
  const violations = fieldViolations(error).map((v) => `${v.field}: ${v.description}`);
  return `${Code[ConnectError.from(error).code]} ${reason}${violations.length ? ` [${violations.join("; ")}]` : ""}`;
}

try {
  await client.adapters.getAdapter({ version: "v999.0" });
} catch (error) {
  const info = errorInfo(error);
  if (info?.errorReason === ErrorReason.ADAPTER_NOT_FOUND) console.log(`no such adapter: ${describe(error)}`);
  else throw error;
}

try {
  await client.feedback.submitFeedback({
    events: [{ ...event, clientEventId: `quickstart-bad-${Date.now()}`, kind: FeedbackKind.RATING, rating: 9 }],
  });
} catch (error) {
  if (errorInfo(error)?.errorReason === ErrorReason.INVALID_FEEDBACK) console.log(`refused: ${describe(error)}`);
  else throw error;
}
