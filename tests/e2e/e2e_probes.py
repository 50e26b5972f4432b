"""Python snippets the e2e suite runs INSIDE the rpger_ops container (stdin of
`podman exec -i ... python3 -`): they see the stack exactly as the ops layer
does, through its settings (`*_FILE` secrets, service names on the internal
network). Each prints one JSON line.
"""

CAPABILITIES = r'''
import importlib, json, shutil, subprocess
caps = {}
for mod in ("rpger_ops.testdata", "rpger_ops.engines.mongo", "rpger_ops.engines.redis",
            "rpger_ops.engines.chroma", "rpger_ops.cli"):
    try:
        importlib.import_module(mod)
        caps[mod] = True
    except Exception as exc:
        caps[mod] = f"{type(exc).__name__}: {exc}"
try:
    from rpger_ops.definitions import defs
    defs.resolve_job_def("backup_all") if hasattr(defs, "resolve_job_def") else defs.get_job_def("backup_all")
    caps["backup_all"] = True
except Exception as exc:
    caps["backup_all"] = f"{type(exc).__name__}: {exc}"
# PEP 706 extraction filters (Python >= 3.11.4; Debian 12's 3.11.2 lacks them).
import inspect, tarfile
caps["tar_filter"] = hasattr(tarfile, "data_filter")
try:
    import rpger_ops.archive as _archive
    caps["archive_uses_tar_filter"] = 'filter="data"' in inspect.getsource(_archive)
except Exception as exc:
    caps["archive_uses_tar_filter"] = False
if shutil.which("rpger-ops"):
    p = subprocess.run(["rpger-ops", "--help"], capture_output=True, text=True)
    caps["preseed"] = True if "preseed" in (p.stdout + p.stderr) else "no preseed subcommand in rpger-ops --help"
else:
    caps["preseed"] = "rpger-ops not installed"
print(json.dumps(caps))
'''

LOAD_DATA = r'''
import json, sys
from rpger_ops.settings import load_settings
from rpger_ops.testdata import load_all
s = load_settings()
r = load_all(s, scale=SCALE, seed=11, validators=False)
print(json.dumps({"mongo": r.mongo_counts, "redis_keys": r.redis_keys, "chroma": r.chroma_counts, "notes": r.notes}))
'''

# Digest of each database: the engine's own `digest()` when the engine module
# exists, else a fallback computed here (documents + indexes, Redis DUMP
# payloads + TTL presence, Chroma records + metadata), so the infrastructure
# checks (restart keeps data) never depend on unfinished engine code.
DIGESTS = r'''
import hashlib, json
from rpger_ops.settings import load_settings
from rpger_ops.connect import mongo_client, redis_client, chroma_client
s = load_settings()
out, how = {}, {}

def h(items):
    outer = hashlib.sha256()
    for it in sorted(items):
        outer.update(hashlib.sha256(it).digest())
    return outer.hexdigest()

def fallback_mongo():
    import bson
    c = mongo_client(s)
    db = c[s.mongodb_database]
    items = []
    for name in db.list_collection_names():
        if name.startswith("_rpger") or name.startswith("system."):
            continue
        for doc in db[name].find({}):
            items.append(name.encode() + b"\0" + bson.encode(doc))
        for iname, info in db[name].index_information().items():
            items.append(f"{name}\0index\0{iname}\0{json.dumps(info, sort_keys=True, default=str)}".encode())
    c.close()
    return h(items), len(items)

def fallback_redis():
    items = []
    r0 = redis_client(s)
    dbs = [int(k[2:]) for k in r0.info("keyspace")]
    r0.close()
    for n in dbs:
        r = redis_client(s, db=n)
        for key in r.scan_iter(count=1000):
            if key.startswith(b"_rpger") if isinstance(key, bytes) else key.startswith("_rpger"):
                continue
            k = key if isinstance(key, bytes) else key.encode()
            items.append(b"%d\0" % n + k + b"\0" + r.dump(key) + (b"\0ttl" if r.pttl(key) > 0 else b""))
        r.close()
    return h(items), len(items)

def fallback_chroma():
    c = chroma_client(s)
    items = []
    for coll in c.list_collections():
        coll = c.get_collection(coll.name) if not hasattr(coll, "get") else coll
        items.append(f"coll\0{coll.name}\0{json.dumps(coll.metadata, sort_keys=True)}".encode())
        got = coll.get(include=["embeddings", "documents", "metadatas"])
        for i, rid in enumerate(got["ids"]):
            emb = got["embeddings"][i]
            items.append(json.dumps([coll.name, rid, got["documents"][i], got["metadatas"][i],
                                     [round(float(x), 7) for x in emb]], sort_keys=True).encode())
    return h(items), len(items)

fallbacks = {"mongo": fallback_mongo, "redis": fallback_redis, "chroma": fallback_chroma}
for name in ("mongo", "redis", "chroma"):
    try:
        from rpger_ops.engines import build_engine
        eng = build_engine(name, s)
    except ImportError:
        eng = None
    if eng is not None:
        try:
            out[name] = eng.digest()
            how[name] = "engine"
        finally:
            eng.close()
    else:
        out[name], n = fallbacks[name]()
        how[name] = f"fallback ({n} items)"
print(json.dumps({"digests": out, "how": how}))
'''

ENSURE_BUCKET = r'''
import json
from minio import Minio
from rpger_ops.settings import load_settings
s = load_settings()
m = Minio(s.s3_endpoint, access_key=s.s3_access_key.get_secret_value(),
          secret_key=s.s3_secret_key.get_secret_value(), secure=s.s3_secure, region=s.s3_region or None)
if not m.bucket_exists(s.s3_bucket):
    m.make_bucket(s.s3_bucket)
print(json.dumps({"bucket": s.s3_bucket}))
'''

LIST_BACKUPS = r'''
import json, os
from minio import Minio
from rpger_ops.settings import load_settings
s = load_settings()
local = []
for root, _dirs, files in os.walk(s.backup_dir):
    for f in files:
        p = os.path.join(root, f)
        local.append([os.path.relpath(p, s.backup_dir), os.path.getsize(p)])
m = Minio(s.s3_endpoint, access_key=s.s3_access_key.get_secret_value(),
          secret_key=s.s3_secret_key.get_secret_value(), secure=s.s3_secure, region=s.s3_region or None)
remote = [[o.object_name, o.size] for o in m.list_objects(s.s3_bucket, recursive=True)]
print(json.dumps({"local": sorted(local), "remote": sorted(remote)}))
'''
