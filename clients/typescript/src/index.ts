/**
 * Learning Engine TypeScript client for Node: the learning.v1 services over gRPC (HTTP/2) with
 * connect-node's transport. Browsers import `@learning-engine/client/web` instead (gRPC-Web).
 */
import { createGrpcTransport } from "@connectrpc/connect-node";

import { type ClientOptions, type LearningEngineClient, clientsOver, interceptorsFor } from "./core.js";

export * from "./core.js";

export function createLearningEngineClient(options: ClientOptions): LearningEngineClient {
  return clientsOver(options.transport ?? createGrpcTransport({ baseUrl: options.baseUrl,
                                                                  interceptors: interceptorsFor(options) }));
}
