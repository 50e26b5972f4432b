// Healthcheck for the official mongo image, run by `mongosh --file`.
// Authenticates as the root user with the password read from the secret FILE
// (never argv), initiates the single-node replica set on first run, and exits
// non-zero unless this node is the writable primary of the replica set and
// answers ping.
// Then, once per container start (marker on the tmpfs /run/rpger), it creates
// or updates the app's least-privilege user rpger_app (readWrite on `rpger`
// only, authSource `rpger`) with the password from the secret
// mongodb_app_password: a rotated password is applied by restarting the
// container. The password is never printed.
const fs = require("fs");
const readSecret = (name) => fs.readFileSync("/run/secrets/" + name, "utf8").replace(/[\r\n]+$/, "");
const user = process.env.MONGO_INITDB_ROOT_USERNAME;
const pwd = readSecret("mongodb_password");
const rsName = process.env.RPGER_MONGO_REPLSET || "rs0";
const rsHost = process.env.RPGER_MONGO_RS_HOST || "mongodb:27017";
const appUser = "rpger_app";
const appDbName = "rpger";
const appSynced = "/run/rpger/app_user_synced";
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
  // setName: not the image's temporary init-time standalone server.
  const hello = admin.runCommand({ hello: 1 });
  if (!hello.isWritablePrimary || hello.setName !== rsName) throw new Error("not yet primary of " + rsName);

  if (!fs.existsSync(appSynced)) {
    const appDb = db.getSiblingDB(appDbName);
    const appPwd = readSecret("mongodb_app_password");
    const roles = [{ role: "readWrite", db: appDbName }];
    const exists = appDb.runCommand({ usersInfo: appUser }).users.length > 0;
    // Same password and roles either way: a rotated secret or changed roles are applied.
    const res = exists
      ? appDb.runCommand({ updateUser: appUser, pwd: appPwd, roles: roles })
      : appDb.runCommand({ createUser: appUser, pwd: appPwd, roles: roles });
    if (res.ok !== 1) throw new Error((exists ? "updateUser " : "createUser ") + appUser + " failed: " + res.codeName);
    fs.writeFileSync(appSynced, "");
    print("user " + appUser + "@" + appDbName + (exists ? " updated" : " created") + " (readWrite on " + appDbName + ")");
  }
} catch (e) {
  print("unhealthy: " + e.message);
  quit(1);
}
quit(0);
