// kinesalite.js runs kinesalite (a local Kinesis implementation, from npm)
// on 127.0.0.1 only: its own CLI binds every interface. It listens on the
// port given as the first argument (0: a free one), keeps its data in
// memory, makes stream changes take effect at once, and prints the port it
// got on stdout. scripts/testenv.sh starts it; scripts/kinesalite-deps.sh
// installs the pinned package.
"use strict";
const kinesalite = require("kinesalite");

const port = Number(process.argv[2] || 0);
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 1000 });
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(server.address().port + "\n");
});
// kinesalite throws from a request's "error" event when a client aborts a
// request (a cancelled context, a timeout), which would end the process; a
// real Kinesis shrugs that off, so this does too, and dies of anything else.
process.on("uncaughtException", (err) => {
  if (err && (err.code === "ECONNRESET" || err.message === "aborted")) return;
  console.error(err);
  process.exit(1);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
