// The bare @grpc/grpc-js reference of bench/serving.ts (not part of any service): it answers
// /mlmesh.predictor.v1.PredictorService/Predict with a fixed, pre-serialized PredictResponse
// of as many rows as the request's size says (1, 100 or 1,000 rows of bench/serving.ts), with
// no decoding, validation, logging or metrics. REFERENCE_ORT=1 adds one onnxruntime run of the
// model per call (one row, no batching). The ceiling a grpc-js service can approach.
// REFERENCE_FORWARD=host:port makes it the floor of a proxy instead: each call's bytes are sent
// on to that server's Predict, REFERENCE_FANOUT times in parallel (default 1), over one
// HTTP/2 connection with the mesh's client (services/runtime/client/grpc-client.ts), and the first answer's
// bytes are returned: a hop with no decoding, validation, logging or metrics.
//
//   REFERENCE_PORT=50300 node --import tsx bench/reference-server.ts
import { readFile } from "node:fs/promises";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import { PredictorService, PredictRequestSchema, PredictResponseSchema } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { GrpcClient } from "../services/runtime/client/grpc-client.js";
import { parseModelMetadata } from "../services/model/metadata.js";
import { openOnnxModel } from "../services/model/onnx-model.js";
import { readProcessEnvironment } from "../services/runtime/env/variables.js";

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
const fanOut = Number(environment.REFERENCE_FANOUT ?? 1);

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
      if (forwardTo) {
        const calls = Array.from({ length: fanOut }, () => forwardTo.forward(call.request));
        void Promise.all(calls).then(
          ([first]) => callback(null, first),
          (err: Error) => callback({ code: grpc.status.UNAVAILABLE, details: err.message }),
        );
        return;
      }
      const response = responses.get(call.request.length) ?? responses.get(requestBytes(1))!;
      if (classifier) void classifier.run(oneRow, 1).then(() => callback(null, response));
      else callback(null, response);
    },
  },
);
const port = Number(environment.REFERENCE_PORT ?? 50300);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) throw err;
  const mode = forwardTo ? ` (forwarding to ${forwardTo.address} x${fanOut})` : classifier ? " (one onnxruntime run per call)" : "";
  console.log(`reference server on 127.0.0.1:${port}${mode}`);
});
