// The bare @grpc/grpc-js reference of bench/serving.ts (not part of any service): it answers
// /mlmesh.predictor.v1.PredictorService/Predict with a fixed, pre-serialized PredictResponse
// of as many rows as the request's size says (1, 100 or 1,000 rows of bench/serving.ts), with
// no decoding, validation, logging or metrics. REFERENCE_ORT=1 adds one onnxruntime run of the
// model per call (one row, no batching). The ceiling a grpc-js service can approach.
// REFERENCE_FORWARD=host:port makes it the floor of a proxy instead: each call's bytes are sent
// on to that server's Predict over one HTTP/2 connection with the mesh's client
// (services/runtime/client/grpc-client.ts), and its answer's bytes are returned: a hop with no
// decoding, validation, logging or metrics.
// REFERENCE_STACK picks what serves: grpc-js (the default), node-http2 (Node's HTTP/2 server,
// the gRPC framing by hand: what the services' native gRPC is built on), or lean (the HTTP/2
// server prototype of bench/prototypes/lean-h2-server.ts; 1-row calls only).
//
//   REFERENCE_PORT=50300 node --import tsx bench/reference-server.ts
import { readFile } from "node:fs/promises";
import * as http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import { PredictorService, PredictRequestSchema, PredictResponseSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { GrpcClient } from "../services/runtime/client/grpc-client.js";
import { parseModelMetadata } from "../services/model/metadata.js";
import { openOnnxModel } from "../services/model/onnx-model.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";
import { startLeanServer } from "./prototypes/lean-h2-server.js";

const environment = readProcessEnvironment();

const folder = new URL("../models/iris_svc/1/", import.meta.url);
const iris = [5.1, 3.5, 1.4, 0.2];
const requestBytes = (n: number) => toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "iris_svc", rows: Array.from({ length: n }, () => ({ values: iris })) })).length;
const responseOf = (n: number) =>
  Buffer.from(
    toBinary(
      PredictResponseSchema,
      create(PredictResponseSchema, {
        model: "iris_svc",
        version: 1,
        labels: ["setosa", "versicolor", "virginica"],
        predictions: Array.from({ length: n }, () => ({ probabilities: [0.9679052, 0.018216195, 0.013878598], label: "setosa", labelIndex: 0, probability: 0.9679052 })),
      }),
    ),
  );
const responses = new Map([1, 100, 1000].map((n) => [requestBytes(n), responseOf(n)]));

const classifier =
  environment.REFERENCE_ORT === "1"
    ? (await openOnnxModel(await readFile(new URL("model.onnx", folder)), parseModelMetadata(await readFile(new URL("metadata.json", folder), "utf8")), { intraOpThreads: 1 })).classifier!
    : undefined;
const oneRow = Float32Array.from(iris);
const forwardAddress = environment.REFERENCE_FORWARD;
const forwardTo: { address: string; forward(bytes: Buffer): Promise<Buffer> } | undefined =
  forwardAddress === undefined
    ? undefined
    : ((client) => ({ address: forwardAddress, forward: (bytes: Buffer) => client.unaryBytes(PredictorService.method.predict, bytes, { deadlineMs: Date.now() + 10_000 }) }))(new GrpcClient(forwardAddress));
/** A call's response message: fixed bytes for the request's size, after one onnxruntime run
 * with REFERENCE_ORT=1; or, with REFERENCE_FORWARD, what the forwarded call answered. */
function answer(request: Buffer): Buffer | Promise<Buffer> {
  if (forwardTo) return forwardTo.forward(request);
  const response = responses.get(request.length) ?? responses.get(requestBytes(1))!;
  return classifier ? classifier.run(oneRow, 1).then(() => response) : response;
}

const port = Number(environment.REFERENCE_PORT ?? 50300);
const stack = environment.REFERENCE_STACK ?? "grpc-js";
const listening = () => {
  const mode = forwardTo ? ` (forwarding to ${forwardTo.address})` : classifier ? " (one onnxruntime run per call)" : "";
  console.log(`reference server (${stack}) on 127.0.0.1:${port}${mode}`);
};

if (stack === "lean") {
  startLeanServer(port, answer, listening);
} else if (stack === "node-http2") {
  // Node's HTTP/2 server answering the gRPC framing by hand: what grpc-h2.ts is built on.
  const server = http2.createServer();
  server.on("stream", (stream) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => {
      void Promise.resolve(answer(Buffer.concat(chunks).subarray(5))).then((response) => {
        const framed = Buffer.allocUnsafe(5 + response.length);
        framed[0] = 0;
        framed.writeUInt32BE(response.length, 1);
        response.copy(framed, 5);
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        stream.end(framed);
      });
    });
  });
  server.listen(port, "127.0.0.1", listening);
} else {
  const server = new grpc.Server({ "grpc.enable_channelz": 0 });
  server.addService(
    {
      predict: {
        path: "/mlmesh.predictor.v1.PredictorService/Predict",
        requestStream: false,
        responseStream: false,
        requestSerialize: (b: Buffer) => b,
        requestDeserialize: (b: Buffer) => b,
        responseSerialize: (b: Buffer) => b,
        responseDeserialize: (b: Buffer) => b,
      },
    },
    {
      predict(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
        void Promise.resolve(answer(call.request)).then(
          (response) => callback(null, response),
          (err: Error) => callback({ code: grpc.status.UNAVAILABLE, details: err.message }),
        );
      },
    },
  );
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) throw err;
    listening();
  });
}
