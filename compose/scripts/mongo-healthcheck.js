// Healthcheck for the official mongo image, run by `mongosh --file`.
// Authenticates as the root user with the password read from the secret FILE
// (never argv), initiates the single-node replica set on first run, and exits
// non-zero unless this node is a writable primary that answers ping.
const fs = require("fs");
const user = process.env.MONGO_INITDB_ROOT_USERNAME;
const pwd = fs.readFileSync("/run/secrets/mongodb_password", "utf8").replace(/[\r\n]+$/, "");
const rsName = process.env.RPGER_MONGO_REPLSET || "rs0";
const rsHost = process.env.RPGER_MONGO_RS_HOST || "mongodb:27017";
try {
  const admin = db.getSiblingDB("admin");
  admin.auth(user, pwd);
  let status;
  try {
    status = admin.runCommand({ replSetGetStatus: 1 });
  } catch (e) {
    status = { ok: 0, code: e.code };
  }
  if (status.ok !== 1 && status.code === 94 /* NotYetInitialized */) {
    admin.runCommand({ replSetInitiate: { _id: rsName, members: [{ _id: 0, host: rsHost }] } });
  }
  if (admin.runCommand({ ping: 1 }).ok !== 1) throw new Error("ping failed");
  if (!admin.runCommand({ hello: 1 }).isWritablePrimary) throw new Error("not yet primary");
} catch (e) {
  print("unhealthy: " + e.message);
  quit(1);
}
quit(0);
