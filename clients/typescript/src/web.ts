/**
 * Learning Engine TypeScript client for browsers: the learning.v1 services over gRPC-Web (fetch) with
 * connect-web's transport, to a gRPC-Web proxy in front of the server's gRPC port (Envoy's grpc_web filter;
 * docs/browsers.md). The same API as the Node entry; nothing here imports Node's modules.
 */
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { type ClientOptions, type LearningEngineClient, clientsOver, interceptorsFor } from "./core.js";

export * from "./core.js";

export function createLearningEngineClient(options: ClientOptions): LearningEngineClient {
  return clientsOver(options.transport ?? createGrpcWebTransport({ baseUrl: options.baseUrl,
                                                                     interceptors: interceptorsFor(options) }));
}
