// Run by the official entrypoint on the FIRST start only, with mongosh against
// its temporary init server (no auth, localhost): the e2e checks the marker.
db.getSiblingDB("rpger_e2e_initdb").marker.insertOne({ ranBy: "docker-entrypoint-initdb.d", at: new Date() });
