// Runs once, when MongoDB initialises an empty data directory (docker-entrypoint-initdb.d).
// The application gets its own user with rights on its database only; the root user
// stays with the database's operators and is never given to mlcycle.
const dbName = process.env.MLCYCLE_MONGO_DB || "mlcycle";
const user = process.env.MONGO_APP_USER;
const password = process.env.MONGO_APP_PASSWORD;
if (!user || !password) {
  throw new Error("MONGO_APP_USER and MONGO_APP_PASSWORD must be set");
}
db.getSiblingDB(dbName).createUser({
  user: user,
  pwd: password,
  roles: [{ role: "readWrite", db: dbName }],
});
print(`created user ${user} with readWrite on ${dbName}`);
