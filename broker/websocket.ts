/**
 * MQTT over WebSocket (subprotocol `mqtt`) on the HTTP port, for browsers: the WebSocket is
 * wrapped as a duplex stream and handed to the embedded aedes, with the same authentication and
 * ACLs as TCP clients.
 *
 * @module
 */

import type { Aedes } from "aedes";
import { Duplex } from "node:stream";

/**
 * A byte stream over a WebSocket (either end). Writes made while the socket is still connecting
 * are sent once it opens.
 *
 * @example
 * ```ts ignore
 * const stream = webSocketDuplex(new WebSocket("ws://127.0.0.1:8080/mqtt", "mqtt"));
 * ```
 */
export function webSocketDuplex(socket: WebSocket): Duplex {
  socket.binaryType = "arraybuffer";
  const waiting: Uint8Array[] = [];
  const stream = new Duplex({
    read() {},
    write(chunk: Uint8Array, _encoding, callback) {
      if (socket.readyState === WebSocket.OPEN) socket.send(chunk);
      else if (socket.readyState === WebSocket.CONNECTING) waiting.push(chunk);
      callback();
    },
    final(callback) {
      if (socket.readyState === WebSocket.OPEN) socket.close();
      callback();
    },
    destroy(error, callback) {
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
        socket.close();
      }
      callback(error);
    },
  });
  socket.addEventListener("open", () => {
    for (const chunk of waiting.splice(0)) socket.send(chunk);
  });
  // Messages that arrive together are pushed as one chunk: under Deno's stream compatibility a
  // reader using read() on 'readable' (as aedes does) can miss chunks pushed in one burst.
  let incoming: Buffer[] = [];
  const flush = () => {
    const chunks = incoming;
    incoming = [];
    if (chunks.length === 0) return;
    stream.push(Buffer.concat(chunks));
    // Deno's stream compatibility can answer the first read() on 'readable' with null while data
    // is buffered, and then never signal again: nudge the reader once the push has settled.
    setTimeout(() => {
      if (stream.readableLength > 0) stream.emit("readable");
    }, 0);
  };
  const receive = (chunk: Buffer) => {
    if (incoming.length === 0) queueMicrotask(flush);
    incoming.push(chunk);
  };
  socket.addEventListener("message", (event) => {
    // MQTT libraries parse Buffers, not plain Uint8Arrays.
    const data = event.data;
    if (data instanceof ArrayBuffer) receive(Buffer.from(data));
    else if (ArrayBuffer.isView(data)) {
      receive(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    } else if (typeof data === "string") receive(Buffer.from(data));
  });
  socket.addEventListener("close", () => {
    flush();
    stream.push(null);
  });
  socket.addEventListener("error", () => stream.destroy());
  return stream;
}

/**
 * Upgrades `request` and attaches the connection to `broker`.
 *
 * @example
 * ```ts ignore
 * if (url.pathname === "/mqtt") return mqttOverWebSocket(cloud.broker.broker, request);
 * ```
 */
export function mqttOverWebSocket(broker: Aedes, request: Request): Response {
  if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return new Response("MQTT over WebSocket: upgrade required", { status: 426 });
  }
  const offered = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) =>
    p.trim()
  );
  const { socket, response } = Deno.upgradeWebSocket(
    request,
    offered.includes("mqtt") ? { protocol: "mqtt" } : {},
  );
  const stream = webSocketDuplex(socket);
  socket.addEventListener("open", () => broker.handle(stream as never));
  return response;
}
