/**
 * A TCP proxy to a local port, for the tests that break connections under a client (test/resume.ts,
 * test/tls.ts): `cut` drops every connection through it, `stop` refuses new ones, and `mode` decides what a new
 * connection gets: forwarded, held open and never forwarded ("black hole"), or closed at once ("close at once",
 * before a TLS handshake could begin).
 */
import * as net from "node:net";

export type ProxyMode = "forward" | "black hole" | "close at once";

export class Proxy {
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;
  mode: ProxyMode = "forward";
  port = 0;

  constructor(upstream: number) {
    this.server = net.createServer((down) => {
      this.sockets.add(down);
      down.on("error", () => this.drop(down));
      down.on("close", () => this.drop(down));
      if (this.mode === "black hole") return;   // accepted, never forwarded
      if (this.mode === "close at once") {
        this.drop(down);
        return;
      }
      const up = net.connect(upstream, "127.0.0.1");
      this.sockets.add(up);
      down.pipe(up);
      up.pipe(down);
      const kill = () => { this.drop(down); this.drop(up); };
      for (const socket of [down, up]) { socket.on("error", kill); socket.on("close", kill); }
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  private drop(socket: net.Socket) {
    socket.destroy();
    this.sockets.delete(socket);
  }

  /** Drop every connection: both sockets closed (FIN), or reset (RST). */
  cut(how: "close" | "reset" = "close") {
    for (const socket of this.sockets) {
      if (how === "reset") socket.resetAndDestroy();
      else socket.destroy();
    }
    this.sockets.clear();
  }

  /** Refuse new connections (ECONNREFUSED) and drop the open ones. */
  async stop() {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.cut();
    await closed;
  }
}
