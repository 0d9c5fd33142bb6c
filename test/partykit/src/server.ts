// Mirror of the apps' party server (see /shared/protocols.md, "PartyKit"):
// POST parses the JSON body and broadcasts it re-encoded with
// JSON.stringify; GET answers {"users":[]}; OPTIONS {ok:true}; other
// methods 405; invalid JSON 500 with the parse error as text. onClose
// closes the connection so a client's Close frame is answered.
import type * as Party from "partykit/server";

export default class Server implements Party.Server {
  constructor(readonly room: Party.Room) {}

  async onRequest(req: Party.Request): Promise<Response> {
    switch (req.method) {
      case "POST": {
        let msg: unknown;
        try {
          msg = JSON.parse(await req.text());
        } catch (err) {
          return new Response(String(err), { status: 500 });
        }
        this.room.broadcast(JSON.stringify(msg));
        return new Response("ok");
      }
      case "GET":
        return Response.json({ users: [] });
      case "OPTIONS":
        return Response.json({ ok: true });
      default:
        return new Response("Method not allowed", { status: 405 });
    }
  }

  onClose(conn: Party.Connection): void {
    conn.close();
  }
}
