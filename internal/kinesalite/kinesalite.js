// kinesalite.js runs kinesalite (a local Kinesis implementation, from npm)
// on 127.0.0.1 only: its own CLI binds every interface. It listens on the
// port given as the first argument (0: a free one), keeps its data in
// memory, makes stream changes take effect at once, and prints the port it
// got on stdout. scripts/testenv.sh and package internal/kinesalite (for
// `outflow dev --source kinesis`) start it; scripts/kinesalite-deps.sh
// installs the pinned package.
"use strict";

// kinesalite 3.3.3 never answers GetShardIterator AT_TIMESTAMP when no
// record of the shard arrived at or after the timestamp (its lookup only
// calls back on a match), where Kinesis returns an iterator that reads the
// records still to come. Outflow asks exactly that (a stream at the live
// tail, a replay reaching the present), so the action is wrapped, before
// kinesalite loads its actions, to answer as Kinesis does: such an iterator
// is the LATEST one (every later record arrives after the timestamp).
const atTimestampPath = require.resolve("kinesalite/actions/getShardIterator");
const getShardIterator = require(atTimestampPath);
const db = require("kinesalite/db");
require.cache[atTimestampPath].exports = function (store, data, cb) {
  const m = /^shardId-(\d{12})$/.exec(data.ShardId || "");
  if (data.ShardIteratorType !== "AT_TIMESTAMP" || data.Timestamp == null || !m || data.Timestamp * 1000 > Date.now()) {
    return getShardIterator(store, data, cb);
  }
  const ix = parseInt(m[1], 10);
  const rs = store.getStreamDb(data.StreamName).createReadStream({ gt: db.shardIxToHex(ix), lt: db.shardIxToHex(ix + 1) });
  let decided = false;
  const decide = (found) => {
    if (decided) return;
    decided = true;
    if (found) return getShardIterator(store, data, cb);
    getShardIterator(store, Object.assign({}, data, { ShardIteratorType: "LATEST", Timestamp: undefined }), cb);
  };
  rs.on("data", (item) => {
    if (item.value.ApproximateArrivalTimestamp >= data.Timestamp) {
      decide(true);
      rs.destroy();
    }
  });
  rs.on("error", () => decide(false));
  rs.on("end", () => decide(false));
};

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
