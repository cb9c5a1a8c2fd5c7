/**
 * The `actor` option: sent as the `x-actor` header with every call, by both entries, checked as the token is when
 * the client is created (trimmed, nothing left is no header, a TypeError naming the character for anything but
 * printable ASCII), as the Python SDK's actor= is. No Learning Engine server needed: a local HTTP/2 (gRPC) and
 * HTTP/1.1 (gRPC-Web) server records the headers each call arrives with and answers with an empty response.
 */
import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";

import * as web from "../src/web.js";
import { createLearningEngineClient } from "../src/index.js";

type Seen = { actor?: string; authorization?: string };

const EMPTY_MESSAGE = Buffer.alloc(5);   // a gRPC frame: not compressed, 0 bytes (an empty ListAdaptersResponse)

function seen(headers: http.IncomingHttpHeaders): Seen {
  const one = (name: string) => {
    const value = headers[name];
    return Array.isArray(value) ? value.join(", ") : value;
  };
  return { actor: one("x-actor"), authorization: one("authorization") };
}

/** gRPC over HTTP/2 (h2c), as the Node entry calls it. */
const grpcCalls: Seen[] = [];
const grpcSessions = new Set<http2.ServerHttp2Session>();
const grpcServer = http2.createServer();
grpcServer.on("session", (session) => {
  grpcSessions.add(session);
  session.on("close", () => grpcSessions.delete(session));
});
grpcServer.on("stream", (stream, headers) => {
  grpcCalls.push(seen(headers as http.IncomingHttpHeaders));
  stream.resume();
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end(EMPTY_MESSAGE);
});

/** gRPC-Web over HTTP/1.1, as the web entry calls it (fetch). */
const webCalls: Seen[] = [];
const webServer = http.createServer((request, response) => {
  webCalls.push(seen(request.headers));
  request.resume();
  const trailer = Buffer.from("grpc-status: 0\r\n");
  const trailerFrame = Buffer.alloc(5);
  trailerFrame.writeUInt8(0x80, 0);
  trailerFrame.writeUInt32BE(trailer.length, 1);
  response.writeHead(200, { "content-type": "application/grpc-web+proto" });
  response.end(Buffer.concat([EMPTY_MESSAGE, trailerFrame, trailer]));
});

let grpcUrl = "";
let webUrl = "";

async function listen(server: http.Server | http2.Http2Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

before(async () => {
  grpcUrl = await listen(grpcServer);
  webUrl = await listen(webServer);
});

after(async () => {
  for (const session of grpcSessions) session.destroy();
  webServer.closeAllConnections();
  await Promise.all([new Promise((resolve) => grpcServer.close(resolve)),
                     new Promise((resolve) => webServer.close(resolve))]);
});

/** The headers one listAdapters call with these options arrives with, through the Node entry. */
async function overGrpc(options: { token?: string; actor?: string }): Promise<Seen> {
  grpcCalls.length = 0;
  await createLearningEngineClient({ baseUrl: grpcUrl, ...options }).adapters.listAdapters({});
  assert.equal(grpcCalls.length, 1);
  return grpcCalls[0]!;
}

/** The same through the web entry (gRPC-Web). */
async function overGrpcWeb(options: { token?: string; actor?: string }): Promise<Seen> {
  webCalls.length = 0;
  await web.createLearningEngineClient({ baseUrl: webUrl, ...options }).adapters.listAdapters({});
  assert.equal(webCalls.length, 1);
  return webCalls[0]!;
}

for (const [entry, call] of [["Node", overGrpc], ["web", overGrpcWeb]] as const) {
  test(`${entry} entry: the actor is sent as x-actor with every call, beside the bearer token`, async () => {
    assert.deepEqual(await call({ actor: "alice" }), { actor: "alice", authorization: undefined });
    assert.deepEqual(await call({ token: "t0ken", actor: "alice" }), { actor: "alice", authorization: "Bearer t0ken" });
    assert.deepEqual(await call({ actor: "ops bot (CI) #7" }), { actor: "ops bot (CI) #7", authorization: undefined });
  });

  test(`${entry} entry: the actor's surrounding whitespace is dropped`, async () => {
    assert.equal((await call({ actor: "  alice\n" })).actor, "alice");
    assert.equal((await call({ actor: "\talice bob\r\n" })).actor, "alice bob");
  });

  test(`${entry} entry: an empty actor, or one of whitespace only, sends no x-actor header`, async () => {
    assert.deepEqual(await call({}), { actor: undefined, authorization: undefined });
    assert.deepEqual(await call({ actor: "" }), { actor: undefined, authorization: undefined });
    assert.deepEqual(await call({ actor: " \r\n", token: "t0ken" }),
                     { actor: undefined, authorization: "Bearer t0ken" });
  });
}

test("an actor no header can carry is a TypeError naming the character and its position, in both entries", () => {
  const why = "is printable ASCII (a header value cannot carry it)";
  const refusals: [string, string][] = [   // the position is counted after trimming, by code point
    [" zoë ", `the actor holds U+00EB at position 2: an actor name ${why}`],
    ["al\nice", `the actor holds U+000A at position 2: an actor name ${why}`],
    ["ops\u007f", `the actor holds U+007F at position 3: an actor name ${why}`],
    ["a\u{1F600}b", `the actor holds U+1F600 at position 1: an actor name ${why}`],
  ];
  for (const create of [createLearningEngineClient, web.createLearningEngineClient]) {
    for (const [actor, message] of refusals) {
      assert.throws(() => create({ baseUrl: "http://127.0.0.1:9", actor }),
                    (error: unknown) => error instanceof TypeError && error.message === message, JSON.stringify(actor));
    }
    assert.throws(() => create({ baseUrl: "http://127.0.0.1:9", actor: 7 as unknown as string }),
                  (error: unknown) => error instanceof TypeError
                                      && error.message === "the actor is a number, not a string");
    // A good token does not let a bad actor through, nor the reverse; the token's message is its own.
    assert.throws(() => create({ baseUrl: "http://127.0.0.1:9", token: "t0ken", actor: "zoë" }), TypeError);
    assert.throws(() => create({ baseUrl: "http://127.0.0.1:9", token: "s3cr3t-é", actor: "alice" }),
                  (error: unknown) => error instanceof TypeError && error.message
                                      === `the token holds U+00E9 at position 7: a bearer token ${why}`);
  }
});
