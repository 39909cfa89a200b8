// Runs once, when MongoDB initialises an empty data directory (docker-entrypoint-initdb.d).
// One user per component, each with a role holding only the actions it needs on the
// collections it touches (the dataset's name comes from MLCYCLE_DATASET, as in its spec).
// The root user stays with the database's operators and is never given to mlcycle.
const dbName = process.env.MLCYCLE_MONGO_DB || "mlcycle";
const dataset = process.env.MLCYCLE_DATASET || "loan";
const target = db.getSiblingDB(dbName);
const on = (collection, actions) => ({ resource: { db: dbName, collection }, actions });
const READ = ["find"];
const WRITE = ["find", "insert", "update", "remove", "createIndex"];
const rows = dataset;
const quarantine = `${dataset}_quarantine`;
const predictions = `${dataset}_predictions`;
const monitoring = `${dataset}_monitoring`;
const scores = `${dataset}_scores`;
const components = {
  // load files: the dataset, its quarantine, batch records and the load lease
  etl: [on(rows, WRITE), on(quarantine, WRITE), on("etl_batches", WRITE), on("mlcycle_locks", WRITE)],
  // consume the topic: the dataset, its quarantine and its run records (no lease: a
  // consumer group already gives each partition one consumer)
  stream: [on(rows, WRITE), on(quarantine, WRITE), on("etl_batches", WRITE)],
  // read the labelled snapshot and check no load is running
  train: [on(rows, READ), on("etl_batches", READ), on("mlcycle_locks", READ)],
  // write the prediction log (never read it or the dataset); read monitoring reports
  serve: [on(predictions, ["insert"]), on(monitoring, READ)],
  // read the log and the labels, write reports; and train, when the policy retrains
  monitor: [
    on(predictions, ["find", "createIndex"]), on(monitoring, ["find", "insert", "createIndex"]),
    on(rows, READ), on("etl_batches", READ), on("mlcycle_locks", READ),
  ],
  // batch scoring of the stored table: read the rows, write the scores and the rows
  // it refuses (never the dataset itself)
  score: [on(rows, READ), on(scores, WRITE), on(quarantine, WRITE)],
};
// only for teams that run the Kafka consumer, or batch scoring of the store
const optional = new Set(["stream", "score"]);
for (const [name, privileges] of Object.entries(components)) {
  const password = process.env[`MONGO_${name.toUpperCase()}_PASSWORD`];
  if (!password && optional.has(name)) {
    print(`MONGO_${name.toUpperCase()}_PASSWORD is not set: no user mlcycle_${name}`);
    continue;
  }
  if (!password) {
    throw new Error(`MONGO_${name.toUpperCase()}_PASSWORD must be set`);
  }
  target.createRole({ role: `mlcycle_${name}`, privileges, roles: [] });
  target.createUser({ user: `mlcycle_${name}`, pwd: password, roles: [{ role: `mlcycle_${name}`, db: dbName }] });
  print(`created user mlcycle_${name} (role mlcycle_${name}) on ${dbName}`);
}
