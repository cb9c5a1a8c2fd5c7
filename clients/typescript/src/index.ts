/**
 * Learning Engine TypeScript client: the generated learning.v1 services over gRPC (HTTP/2),
 * with an optional bearer token and the server's typed error reason.
 *
 * Generated code lives in src/gen (never edit; `npm run generate`).
 */
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { AdapterService } from "./gen/learning/v1/adapter_pb.js";
import { FeedbackService } from "./gen/learning/v1/feedback_pb.js";
import { FisherService } from "./gen/learning/v1/fisher_pb.js";
import { LoraControlService } from "./gen/learning/v1/lora_control_pb.js";
import { TrainingService } from "./gen/learning/v1/training_pb.js";

export * from "./gen/learning/v1/adapter_pb.js";
export * from "./gen/learning/v1/common_pb.js";
export * from "./gen/learning/v1/feedback_pb.js";
export * from "./gen/learning/v1/fisher_pb.js";
export * from "./gen/learning/v1/lora_control_pb.js";
export * from "./gen/learning/v1/training_pb.js";
export { Code, ConnectError };

export interface ClientOptions {
  /** e.g. "http://127.0.0.1:50051" (plaintext h2c) or "https://learning.example.com" (TLS). */
  baseUrl: string;
  /** Bearer token for servers with auth_tokens configured. */
  token?: string;
}

export interface LearningEngineClient {
  training: Client<typeof TrainingService>;
  fisher: Client<typeof FisherService>;
  adapters: Client<typeof AdapterService>;
  lora: Client<typeof LoraControlService>;
  feedback: Client<typeof FeedbackService>;
}

export function createLearningEngineClient(options: ClientOptions): LearningEngineClient {
  const interceptors: Interceptor[] = [];
  if (options.token) {
    const header = `Bearer ${options.token}`;
    interceptors.push((next) => async (request) => {
      request.header.set("authorization", header);
      return next(request);
    });
  }
  const transport = createGrpcTransport({ baseUrl: options.baseUrl, interceptors });
  return {
    training: createClient(TrainingService, transport),
    fisher: createClient(FisherService, transport),
    adapters: createClient(AdapterService, transport),
    lora: createClient(LoraControlService, transport),
    feedback: createClient(FeedbackService, transport),
  };
}

export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/** The google.rpc.ErrorInfo every server error carries (reason is the stable, machine-readable part). */
export function errorInfo(error: unknown): ErrorInfo | undefined {
  const err = ConnectError.from(error);
  for (const detail of err.details) {
    if ("desc" in detail || detail.type !== "google.rpc.ErrorInfo") continue;
    const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
    const reader = new BinaryReader(detail.value);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 1) info.reason = reader.string();
      else if (field === 2) info.domain = reader.string();
      else if (field === 3) {
        const entry = new BinaryReader(reader.bytes());
        let key = "";
        let value = "";
        while (entry.pos < entry.len) {
          const [f, w] = entry.tag();
          if (f === 1) key = entry.string();
          else if (f === 2) value = entry.string();
          else entry.skip(w);
        }
        info.metadata[key] = value;
      } else reader.skip(wireType);
    }
    return info;
  }
  return undefined;
}
