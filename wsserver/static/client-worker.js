/* The SharedWorker of the wsserver browser client (docs/CLIENTS.md): it holds the one
 * connection that every tab of an origin with the same hub URL and user shares. It
 * runs client.js (from next to this file, of the version the tab asked for: ?v=). */
importScripts("client.js" + location.search);
WsServerClient._serve(self);
