// The mesh's own HTTP/2 client (services/runtime/client/h2-connection.ts, hpack.ts) under the
// gRPC client (grpc-client.ts), against RFC 7541's examples and against node:http2 servers made
// to do what a server may: Huffman and indexed headers, CONTINUATION, padding, flow control
// both ways, a concurrency limit, resets, GOAWAY, dropped connections, calls that never end.
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { PredictorService } from "../gen/mlmesh/predictor/v1/predictor_pb.js";
import { GrpcClient } from "../services/runtime/client/grpc-client.js";
import { HpackDecoder, HpackError } from "../services/runtime/client/hpack.js";

const method = PredictorService.method.predict;
const path = "/mlmesh.predictor.v1.PredictorService/Predict";

describe("HPACK decoder", () => {
  it("decodes RFC 7541's Huffman-coded requests (C.4), the dynamic table carried between blocks", () => {
    const decoder = new HpackDecoder();
    const blocks = ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf", "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"];
    const [first, second, third] = blocks.map((hex) => Object.fromEntries(decoder.decode(Buffer.from(hex, "hex"))));
    expect(first).toEqual({ ":method": "GET", ":scheme": "http", ":path": "/", ":authority": "www.example.com" });
    expect(second).toEqual({ ...first, "cache-control": "no-cache" });
    expect(third).toEqual({ ":method": "GET", ":scheme": "https", ":path": "/index.html", ":authority": "www.example.com", "custom-key": "custom-value" });
  });

  it("decodes RFC 7541's Huffman-coded responses (C.6) in a 256-octet table, evicting as it fills", () => {
    const decoder = new HpackDecoder(256);
    const blocks = [
      "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
      "4883640effc1c0bf",
      "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
    ];
    const decoded = blocks.map((hex) => Object.fromEntries(decoder.decode(Buffer.from(hex, "hex"))));
    const common = { "cache-control": "private", location: "https://www.example.com" };
    expect(decoded[0]).toEqual({ ":status": "302", ...common, date: "Mon, 21 Oct 2013 20:13:21 GMT" });
    expect(decoded[1]).toEqual({ ":status": "307", ...common, date: "Mon, 21 Oct 2013 20:13:21 GMT" });
    expect(decoded[2]).toEqual({
      ":status": "200",
      ...common,
      date: "Mon, 21 Oct 2013 20:13:22 GMT",
      "content-encoding": "gzip",
      "set-cookie": "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
    });
  });

  it("refuses broken blocks: an index past the table, a truncated string, bad Huffman padding, a table size above the announced", () => {
    const decode = (hex: string) => () => new HpackDecoder().decode(Buffer.from(hex, "hex"));
    expect(decode("be")).toThrow(HpackError); // index 62, empty dynamic table
    expect(decode("00036162")).toThrow(/string runs past/); // a name of 3 bytes, cut at 2
    expect(decode("000161" + "85ffffffffff")).toThrow(/EOS/); // a Huffman-coded value of 40 one bits
    expect(decode("3fe21f")).toThrow(/table size update/); // 4097 > 4096
  });
});

/** A gRPC-shaped answer: the message framed, status 0 in the trailers. */
function answer(stream: http2.ServerHttp2Stream, message: Buffer, extraHeaders: http2.OutgoingHttpHeaders = {}): void {
  stream.respond({ ":status": 200, "content-type": "application/grpc", ...extraHeaders }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  const framed = Buffer.alloc(5 + message.length);
  framed.writeUInt32BE(message.length, 1);
  message.copy(framed, 5);
  stream.end(framed);
}

/** The request's message (one gRPC frame). */
function readMessage(stream: http2.ServerHttp2Stream): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => resolve(Buffer.concat(chunks).subarray(5)));
  });
}

const servers: http2.Http2Server[] = [];
const sessions: http2.ServerHttp2Session[] = [];
const clients: GrpcClient[] = [];
afterEach(async () => {
  clients.splice(0).forEach((c) => c.close());
  // A session that sent GOAWAY stops reading its socket, so it never sees the client leave.
  sessions.splice(0).forEach((s) => s.destroy());
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

async function serve(handler: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void, options: http2.ServerOptions = {}) {
  const server = http2.createServer(options);
  server.on("session", (session) => sessions.push(session));
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {}); // resets the tests make on purpose
    handler(stream, headers);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const client = new GrpcClient(`127.0.0.1:${(server.address() as AddressInfo).port}`);
  clients.push(client);
  return { server, client };
}

const call = (client: GrpcClient, message: Buffer, options: { ms?: number; signal?: AbortSignal } = {}) =>
  client.unaryBytes(method, message, { deadlineMs: Date.now() + (options.ms ?? 5000), signal: options.signal });

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded");
}

describe("GrpcClient over the mesh's HTTP/2 connection", () => {
  it("sends the gRPC request headers and reads long, repeated, Huffman-coded and padded headers across CONTINUATION frames", async () => {
    const seen: http2.IncomingHttpHeaders[] = [];
    const long = "x".repeat(40_000); // more than a 16 KiB frame: the block continues
    const { client } = await serve(
      async (stream, headers) => {
        seen.push(headers);
        const message = await readMessage(stream);
        answer(stream, message, { "x-long": long, "x-repeated": "the same value every time", "x-varying": String(seen.length) });
      },
      { paddingStrategy: http2.constants.PADDING_STRATEGY_MAX },
    );
    for (let i = 0; i < 3; i++) {
      const reply = await client.unaryBytes(method, Buffer.from(`ping ${i}`), {
        deadlineMs: Date.now() + 5000,
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        requestId: `r-${i}`,
        parentRequestId: "parent",
      });
      expect(reply.toString()).toBe(`ping ${i}`);
    }
    expect(seen[2]).toMatchObject({
      ":method": "POST",
      ":scheme": "http",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "x-request-id": "r-2",
      "x-mlmesh-parent-request-id": "parent",
    });
    expect(seen[2]["grpc-timeout"]).toMatch(/^\d+m$/);
  });

  it("sends a request larger than the server's windows as they open, and reads a response larger than its own", async () => {
    const big = Buffer.alloc(3 * 1024 * 1024, 7); // the server's windows stay at 64 KiB
    const huge = Buffer.alloc(12 * 1024 * 1024, 9); // three times this side's stream window
    const { client } = await serve(async (stream) => {
      const message = await readMessage(stream);
      answer(stream, message.length === big.length && message.every((b) => b === 7) ? huge : Buffer.from("wrong"));
    });
    const reply = await call(client, big, { ms: 30_000 });
    expect(reply.length).toBe(huge.length);
    expect(reply.every((b) => b === 9)).toBe(true);
  });

  it("sends a client stream's messages as they are, across frame and window boundaries, byte for byte", async () => {
    // Sizes around a 16 KiB frame and a 64 KiB window, an empty message, and one past 1 MiB.
    const sizes = [0, 1, 16_379, 16_384, 65_535, 65_536, 3, 1_200_000, 77];
    const messages = sizes.map((size, i) => Uint8Array.from({ length: size }, (_, j) => (i * 31 + j) % 251));
    const { client } = await serve((stream) => {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        // Every message framed (5-byte prefix), in order, each byte as sent.
        let body = Buffer.concat(chunks);
        const received: Buffer[] = [];
        while (body.length >= 5) {
          const length = body.readUInt32BE(1);
          received.push(body.subarray(5, 5 + length));
          body = body.subarray(5 + length);
        }
        const same = body.length === 0 && received.length === messages.length && received.every((m, i) => m.equals(messages[i]));
        answer(stream, Buffer.from(same ? "same" : `differ: ${received.map((m) => m.length).join(",")}`));
      });
    });
    const reply = await client.clientStreamBytes(PredictorService.method.predict, messages, { deadlineMs: Date.now() + 30_000 });
    expect(reply.toString()).toBe("same");
  });

  it("keeps to the server's concurrent-stream limit, starting waiting calls as others finish", async () => {
    let open = 0;
    let most = 0;
    const { client } = await serve(
      async (stream) => {
        most = Math.max(most, ++open);
        const message = await readMessage(stream);
        setTimeout(() => {
          open--;
          answer(stream, message);
        }, 20);
      },
      { settings: { maxConcurrentStreams: 2 } },
    );
    await call(client, Buffer.from("warm")); // the server's SETTINGS have arrived
    const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => call(client, Buffer.from(`m${i}`))));
    expect(replies.map(String)).toEqual(Array.from({ length: 10 }, (_, i) => `m${i}`));
    expect(most).toBe(2);
  });

  it("maps the server's answers without a message to gRPC statuses: errors, HTTP statuses, resets", async () => {
    const { client } = await serve((stream, headers) => {
      const kind = String(headers["x-request-id"]);
      if (kind === "status") stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "5", "grpc-message": encodeURIComponent("no model «iris»") }, { endStream: true });
      else if (kind === "http404") stream.respond({ ":status": 404 }, { endStream: true });
      else if (kind === "no-status") {
        stream.respond({ ":status": 200, "content-type": "application/grpc" });
        stream.end();
      } else if (kind === "refused") stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      else if (kind === "calm") stream.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      else if (kind === "malformed") {
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        stream.end(Buffer.from([0, 0, 0, 0, 9, 1])); // says 9 bytes, has 1
      }
    });
    const ask = (kind: string) => failure(client.unaryBytes(method, Buffer.from("x"), { deadlineMs: Date.now() + 5000, requestId: kind }));
    expect(await ask("status")).toMatchObject({ code: Code.NotFound, rawMessage: "no model «iris»" });
    expect(await ask("http404")).toMatchObject({ code: Code.Unimplemented, rawMessage: expect.stringContaining("HTTP status 404") });
    expect(await ask("no-status")).toMatchObject({ code: Code.Internal, rawMessage: expect.stringContaining("without a gRPC status") });
    expect(await ask("refused")).toMatchObject({ code: Code.Unavailable, rawMessage: expect.stringContaining("reset the stream") });
    expect(await ask("calm")).toMatchObject({ code: Code.ResourceExhausted });
    expect(await ask("malformed")).toMatchObject({ code: Code.Internal, rawMessage: expect.stringContaining("malformed") });
  });

  it("ends a call at its deadline or on cancellation, resetting the stream so the server stops", async () => {
    const resets: number[] = [];
    const { client } = await serve((stream) => {
      stream.on("close", () => resets.push(stream.rstCode));
    });
    expect(await failure(call(client, Buffer.from("slow"), { ms: 200 }))).toMatchObject({ code: Code.DeadlineExceeded });
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 100);
    expect(await failure(call(client, Buffer.from("cancel me"), { signal: abort.signal }))).toMatchObject({ code: Code.Canceled });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(resets).toEqual([http2.constants.NGHTTP2_CANCEL, http2.constants.NGHTTP2_CANCEL]);
  });

  it("finishes the calls a GOAWAY lets through, then opens a new connection; a dropped connection fails its calls UNAVAILABLE", async () => {
    const seen = new Set<http2.Http2Session>();
    let mode = "goaway";
    const { client } = await serve(async (stream) => {
      seen.add(stream.session!);
      const message = await readMessage(stream);
      if (mode === "goaway") {
        stream.session!.goaway(http2.constants.NGHTTP2_NO_ERROR, stream.id); // this stream is the last taken
        setTimeout(() => answer(stream, message), 20);
      } else if (mode === "drop") {
        stream.session!.destroy();
      } else answer(stream, message);
    });
    expect(String(await call(client, Buffer.from("before goaway")))).toBe("before goaway");
    mode = "answer";
    expect(String(await call(client, Buffer.from("after goaway")))).toBe("after goaway");
    expect(seen.size).toBe(2);
    mode = "drop";
    expect(await failure(call(client, Buffer.from("dropped")))).toMatchObject({ code: Code.Unavailable });
    mode = "answer";
    expect(String(await call(client, Buffer.from("reconnected")))).toBe("reconnected");
    expect(seen.size).toBe(3);
  });

  it("fails UNAVAILABLE, naming the address, when nothing listens or the peer does not speak HTTP/2", async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const nobody = new GrpcClient(`127.0.0.1:${port}`);
    clients.push(nobody);
    expect(await failure(call(nobody, Buffer.from("x")))).toMatchObject({ code: Code.Unavailable, rawMessage: expect.stringMatching(/127\.0\.0\.1:\d+: .*ECONNREFUSED/) });

    const http1 = net.createServer((socket) => socket.end("HTTP/1.1 400 Bad Request\r\n\r\n"));
    await new Promise<void>((resolve) => http1.listen(0, "127.0.0.1", resolve));
    const confused = new GrpcClient(`127.0.0.1:${(http1.address() as AddressInfo).port}`);
    clients.push(confused);
    expect(await failure(call(confused, Buffer.from("x")))).toMatchObject({ code: Code.Unavailable });
    http1.close();
  });
});
