// A webhook receiver for e2e/webhooks_test.go: every POST is verified with
// the official Standard Webhooks library (an implementation independent of
// the server's) and recorded; the Go test reads GET /received and sets the
// answers with POST /script.
//
//   WEBHOOK_SECRET=whsec_… PORT=0 node receiver.mjs   → prints "listening <port>"
//
// POST /script {"statuses": [500, 500, 500], "hang": false}: the next
// verified deliveries are answered with these statuses, then 200; with
// hang, deliveries are read and never answered.
import http from "node:http";
import { Webhook } from "standardwebhooks";

const wh = new Webhook(process.env.WEBHOOK_SECRET);
const received = [];
let statuses = [];
let hang = false;

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks);
    const json = (status, v) => {
      res.writeHead(status, { "Content-Type": "application/json" });
      res.end(JSON.stringify(v));
    };
    if (req.method === "GET" && req.url === "/received") {
      return json(200, received);
    }
    if (req.method === "POST" && req.url === "/script") {
      const s = JSON.parse(body.toString("utf8"));
      statuses = s.statuses ?? [];
      hang = !!s.hang;
      return json(200, { ok: true });
    }
    if (req.method !== "POST") {
      return json(405, { error: "POST deliveries here" });
    }
    const rec = {
      path: req.url,
      id: req.headers["webhook-id"] ?? "",
      timestamp: req.headers["webhook-timestamp"] ?? "",
      content_type: req.headers["content-type"] ?? "",
      verified: false,
    };
    try {
      const payload = wh.verify(body, req.headers);
      rec.verified = true;
      rec.type = payload.type;
      rec.event_timestamp = payload.timestamp;
      rec.data = payload.data;
    } catch (e) {
      rec.error = String(e && e.message ? e.message : e);
      rec.status = 400;
      received.push(rec);
      return json(400, { error: "signature" });
    }
    if (hang) {
      rec.status = 0;
      received.push(rec);
      return; // never answered
    }
    rec.status = statuses.length > 0 ? statuses.shift() : 200;
    received.push(rec);
    json(rec.status, { received: rec.id });
  });
});

server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
