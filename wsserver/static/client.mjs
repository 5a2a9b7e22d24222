/* The wsserver browser client as an ES module with named and default exports:
 *   import { WsServerClient } from "./client.mjs";
 * client.js does the work (and defines the global); this only exports it, and tells
 * it where the SharedWorker script is: next to this file. */
import "./client.js";

const { WsServerClient } = globalThis;
WsServerClient.workerUrl = new URL("client-worker.js", import.meta.url).href;
export { WsServerClient };
export default WsServerClient;
