// Command mongod is the e2e STAND-IN for the `mongod` binary of the official
// mongo image, so that the image's own docker-entrypoint.sh and the stack's
// scripts (compose/scripts/mongo-entrypoint.sh, mongo-healthcheck.js) run
// unchanged on a machine where MongoDB cannot be downloaded.
//
// It accepts the mongod options the entrypoint and compose.yaml pass
// (--bind_ip/--bind_ip_all, --port, --dbpath, --replSet, --auth, --keyFile,
// --wiredTigerCacheSizeGB, --tlsMode, --fork, --logpath, --logappend,
// --pidfilepath, --shutdown, --version) and serves the MongoDB wire protocol
// in front of rpger-ferretdb (FerretDB, no auth), adding what FerretDB lacks:
//
//   - --auth / --keyFile: every command except the handshake, ping, buildInfo
//     and SCRAM-SHA-256 authentication (saslStart/saslContinue) needs a logged-in
//     user; createUser/updateUser/dropUser/usersInfo manage SCRAM-SHA-256
//     credentials (salted, never the password) in <dbpath>/standin-users.json.
//     Roles are enforced coarsely: `root` anything; user management only for
//     userAdmin(AnyDatabase)/dbOwner; `readWrite`/`read` on DB: only commands
//     on DB (read: no writes);
//   - without --auth (the entrypoint's temporary init server) everything is
//     allowed, as on a real mongod;
//   - --replSet NAME: replSetGetStatus answers NotYetInitialized (94) until
//     replSetInitiate; then hello/isMaster report a one-member replica set
//     (setName, hosts, primary, me) and replSetGetStatus a PRIMARY;
//   - --keyFile is checked as mongod does (not group/world accessible, 6-1024
//     base64 characters); replica-set members' internal auth is not emulated;
//   - --fork / --shutdown / --pidfilepath / <dbpath>/mongod.lock behave like
//     mongod's, and <dbpath>/storage.bson marks an initialised data directory
//     (the entrypoint skips initdb when it exists).
//
// Not emulated: WiredTiger, the oplog, elections, transactions, fine-grained
// privileges. docs/compose.md lists what therefore remains unproven.
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/FerretDB/wire"
	"github.com/FerretDB/wire/wirebson"
	"github.com/xdg-go/scram"
)

type options struct {
	bindIPs  []string
	port     int
	dbpath   string
	replSet  string
	auth     bool
	keyFile  string
	fork     bool
	logpath  string
	pidfile  string
	shutdown bool
	version  bool
}

func parseArgs(args []string) (*options, error) {
	o := &options{port: 27017, dbpath: "/data/db", bindIPs: []string{"127.0.0.1"}}
	val := func(i *int) (string, error) {
		if *i+1 >= len(args) {
			return "", fmt.Errorf("%s needs a value", args[*i])
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, inline, hasInline := strings.Cut(a, "=")
		get := func() (string, error) {
			if hasInline {
				return inline, nil
			}
			return val(&i)
		}
		var err error
		var v string
		switch name {
		case "--bind_ip":
			if v, err = get(); err == nil {
				o.bindIPs = strings.Split(v, ",")
			}
		case "--bind_ip_all":
			o.bindIPs = []string{"0.0.0.0"}
		case "--port":
			if v, err = get(); err == nil {
				o.port, err = strconv.Atoi(v)
			}
		case "--dbpath":
			o.dbpath, err = get()
		case "--replSet":
			o.replSet, err = get()
		case "--auth":
			o.auth = true
		case "--keyFile":
			o.keyFile, err = get()
		case "--logpath":
			o.logpath, err = get()
		case "--pidfilepath":
			o.pidfile, err = get()
		case "--wiredTigerCacheSizeGB", "--tlsMode", "--config", "--setParameter":
			_, err = get()
		case "--fork":
			o.fork = true
		case "--shutdown":
			o.shutdown = true
		case "--version":
			o.version = true
		case "--logappend", "--quiet", "--nounixsocket":
		default:
			return nil, fmt.Errorf("unrecognised option '%s' (stand-in mongod)", a)
		}
		if err != nil {
			return nil, err
		}
	}
	if o.keyFile != "" {
		o.auth = true // "keyFile implies security.authorization"
	}
	return o, nil
}

var keyChars = regexp.MustCompile(`^[A-Za-z0-9+/=\s]+$`)

// checkKeyFile applies mongod's rules for a replica-set keyfile.
func checkKeyFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("error getting file %s: %v", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("permissions on %s are too open", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("error reading file %s: %v", path, err)
	}
	key := strings.Join(strings.Fields(string(b)), "")
	if len(key) < 6 || len(key) > 1024 || !keyChars.Match(b) {
		return fmt.Errorf("invalid keyfile %s: 6 to 1024 base64 characters required", path)
	}
	return nil
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("mongod-standin ")
	o, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error parsing command line:", err)
		os.Exit(2)
	}
	switch {
	case o.version:
		fmt.Println("db version v8.0.32 (rpger stand-in: FerretDB behind a mongod-compatible front)")
		return
	case o.shutdown:
		os.Exit(shutdown(o))
	}
	if o.keyFile != "" {
		if err := checkKeyFile(o.keyFile); err != nil {
			log.Printf("fatal: %v", err)
			os.Exit(1)
		}
	}
	if o.fork {
		os.Exit(fork(o))
	}
	if o.logpath != "" {
		f, err := os.OpenFile(o.logpath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err == nil {
			log.SetOutput(f)
		}
	}
	if err := serve(o); err != nil {
		log.Printf("fatal: %v", err)
		os.Exit(1)
	}
}

// fork starts the server in the background like `mongod --fork`: returns once it accepts connections.
func fork(o *options) int {
	args := make([]string, 0, len(os.Args))
	for _, a := range os.Args[1:] {
		if a != "--fork" {
			args = append(args, a)
		}
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if o.logpath != "" {
		if f, err := os.OpenFile(o.logpath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
			cmd.Stdout, cmd.Stderr = f, f
		}
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "fork failed:", err)
		return 1
	}
	fmt.Printf("forked process: %d\n", cmd.Process.Pid)
	addr := net.JoinHostPort(o.bindIPs[0], strconv.Itoa(o.port))
	if o.bindIPs[0] == "0.0.0.0" {
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(o.port))
	}
	for i := 0; i < 300; i++ {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			fmt.Println("child process started successfully, parent exiting")
			return 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "ERROR: child process failed to start")
	return 1
}

// shutdown stops the server owning <dbpath>/mongod.lock, like `mongod --shutdown`.
func shutdown(o *options) int {
	b, err := os.ReadFile(filepath.Join(o.dbpath, "mongod.lock"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		fmt.Fprintln(os.Stderr, "There doesn't seem to be a server running with dbpath:", o.dbpath)
		return 1
	}
	fmt.Printf("killing process with pid: %d\n", pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		fmt.Fprintln(os.Stderr, "failed to kill process:", err)
		return 1
	}
	for i := 0; i < 600; i++ {
		if syscall.Kill(pid, 0) != nil {
			return 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 1
}

// --- the server ------------------------------------------------------------------------

type server struct {
	o        *options
	backend  string
	usersMu  sync.Mutex
	usersF   string
	replF    string
	replMu   sync.Mutex
	electID  string
	hostName string
}

type storedUser struct {
	User      string              `json:"user"`
	DB        string              `json:"db"`
	Roles     []map[string]string `json:"roles"`
	Salt      string              `json:"salt"`
	Iters     int                 `json:"iters"`
	StoredKey string              `json:"stored_key"`
	ServerKey string              `json:"server_key"`
}

func serve(o *options) error {
	if err := os.MkdirAll(o.dbpath, 0o700); err != nil {
		return err
	}
	lock := filepath.Join(o.dbpath, "mongod.lock")
	if err := os.WriteFile(lock, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	defer os.WriteFile(lock, nil, 0o600) //nolint:errcheck // a clean shutdown leaves an empty lock, like mongod
	if o.pidfile != "" {
		_ = os.WriteFile(o.pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	}
	// What the official entrypoint looks for to skip initdb on later starts.
	_ = os.WriteFile(filepath.Join(o.dbpath, "storage.bson"), []byte("rpger mongod stand-in\n"), 0o600)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	backend := ln.Addr().String()
	ln.Close()
	ferret := exec.Command("rpger-ferretdb", "-listen-addr", backend, "-data-dir", filepath.Join(o.dbpath, "ferretdb"))
	ferret.Stdout, ferret.Stderr = os.Stderr, os.Stderr
	if err := ferret.Start(); err != nil {
		return fmt.Errorf("starting rpger-ferretdb: %w", err)
	}
	defer ferret.Process.Kill() //nolint:errcheck
	for i := 0; ; i++ {
		if c, err := net.DialTimeout("tcp", backend, 200*time.Millisecond); err == nil {
			c.Close()
			break
		}
		if i > 150 {
			return errors.New("rpger-ferretdb did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}

	host, _ := os.Hostname()
	s := &server{o: o, backend: backend, usersF: filepath.Join(o.dbpath, "standin-users.json"),
		replF: filepath.Join(o.dbpath, "standin-replset.json"), hostName: host}
	var listeners []net.Listener
	for _, ip := range o.bindIPs {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(o.port)))
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
		log.Printf("waiting for connections on %s (auth %v, replSet %q)", l.Addr(), o.auth, o.replSet)
		go func(l net.Listener) {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go s.handle(c)
			}
		}(l)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	log.Printf("shutting down")
	for _, l := range listeners {
		l.Close()
	}
	_ = ferret.Process.Signal(syscall.SIGTERM)
	_, _ = ferret.Process.Wait()
	return nil
}

type conn struct {
	s       *server
	user    *storedUser
	scram   *scram.ServerConversation
	scramDB string
	skipEx  bool
	be      net.Conn
	beR     *bufio.Reader
	beW     *bufio.Writer
}

func (s *server) handle(c net.Conn) {
	defer c.Close()
	be, err := net.Dial("tcp", s.backend)
	if err != nil {
		log.Printf("backend: %v", err)
		return
	}
	defer be.Close()
	cn := &conn{s: s, be: be, beR: bufio.NewReader(be), beW: bufio.NewWriter(be)}
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	for {
		h, body, err := wire.ReadMessage(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, wire.ErrZeroRead) && !strings.Contains(err.Error(), "EOF") {
				log.Printf("read: %v", err)
			}
			return
		}
		rh, rbody, err := cn.dispatch(h, body)
		if err != nil {
			log.Printf("dispatch: %v", err)
			return
		}
		if rbody == nil {
			continue
		}
		if err := wire.WriteMessage(w, rh, rbody); err != nil {
			log.Printf("write: %v", err)
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

func (cn *conn) forward(h *wire.MsgHeader, body wire.MsgBody) (*wire.MsgHeader, wire.MsgBody, error) {
	if err := wire.WriteMessage(cn.beW, h, body); err != nil {
		return nil, nil, err
	}
	if err := cn.beW.Flush(); err != nil {
		return nil, nil, err
	}
	return wire.ReadMessage(cn.beR)
}

func reply(h *wire.MsgHeader, doc *wirebson.Document, legacy bool) (*wire.MsgHeader, wire.MsgBody, error) {
	var body wire.MsgBody
	var err error
	op := wire.OpCodeMsg
	if legacy {
		body, err = wire.NewOpReply(doc)
		op = wire.OpCodeReply
	} else {
		body, err = wire.NewOpMsg(doc)
	}
	if err != nil {
		return nil, nil, err
	}
	b, err := body.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	return &wire.MsgHeader{MessageLength: int32(len(b) + wire.MsgHeaderLen), RequestID: h.RequestID + 1_000_000,
		ResponseTo: h.RequestID, OpCode: op}, body, nil
}

func errDoc(code int32, name, msg string) *wirebson.Document {
	return wirebson.MustDocument("ok", float64(0), "errmsg", msg, "code", code, "codeName", name)
}

var anonymous = map[string]bool{"hello": true, "ismaster": true, "ping": true, "buildinfo": true,
	"saslstart": true, "saslcontinue": true, "getnonce": true, "endsessions": true, "logout": true}

var writes = map[string]bool{"insert": true, "update": true, "delete": true, "findandmodify": true,
	"create": true, "drop": true, "dropdatabase": true, "createindexes": true, "dropindexes": true,
	"renamecollection": true, "collmod": true}

func (cn *conn) dispatch(h *wire.MsgHeader, body wire.MsgBody) (*wire.MsgHeader, wire.MsgBody, error) {
	var doc *wirebson.Document
	var err error
	legacy := false
	switch m := body.(type) {
	case *wire.OpMsg:
		doc, err = m.RawSection0().DecodeDeep() // nested roles, replica-set config
	case *wire.OpQuery:
		doc, legacy = m.Query(), true
	default:
		return cn.forward(h, body)
	}
	if err != nil || doc == nil {
		return cn.forward(h, body)
	}
	cmd := strings.ToLower(doc.Command())
	db, _ := doc.Get("$db").(string)
	if legacy {
		db = strings.TrimSuffix(body.(*wire.OpQuery).FullCollectionName, ".$cmd")
	}
	switch cmd {
	case "hello", "ismaster":
		return cn.hello(h, body, doc, legacy)
	case "saslstart":
		return reply(h, cn.saslStart(doc, db), legacy)
	case "saslcontinue":
		return reply(h, cn.saslContinue(doc), legacy)
	case "logout":
		cn.user = nil
		return reply(h, wirebson.MustDocument("ok", float64(1)), legacy)
	}
	if cn.s.o.auth && !anonymous[cmd] {
		if cn.user == nil {
			return reply(h, errDoc(13, "Unauthorized", "Command "+doc.Command()+" requires authentication"), legacy)
		}
		if !cn.allowed(cmd, db) {
			return reply(h, errDoc(13, "Unauthorized", fmt.Sprintf("not authorized on %s to execute command %s",
				db, doc.Command())), legacy)
		}
	}
	switch cmd {
	case "createuser", "updateuser":
		return reply(h, cn.s.putUser(doc, db, cmd == "createuser"), legacy)
	case "dropuser":
		return reply(h, cn.s.dropUser(doc, db), legacy)
	case "usersinfo":
		return reply(h, cn.s.usersInfo(doc, db), legacy)
	case "replsetgetstatus":
		return reply(h, cn.s.replStatus(), legacy)
	case "replsetinitiate":
		return reply(h, cn.s.replInitiate(doc), legacy)
	}
	return cn.forward(h, body)
}

var userAdmin = map[string]bool{"createuser": true, "updateuser": true, "dropuser": true,
	"dropallusersfromdatabase": true, "grantrolestouser": true, "revokerolesfromuser": true,
	"createrole": true, "updaterole": true, "droprole": true}

func (cn *conn) allowed(cmd, db string) bool {
	for _, r := range cn.user.Roles {
		role, rdb := r["role"], r["db"]
		switch {
		case role == "root":
			return true
		case userAdmin[cmd]: // only userAdmin(AnyDatabase), dbOwner or root manage users
			if role == "userAdminAnyDatabase" && rdb == "admin" || rdb == db && (role == "userAdmin" || role == "dbOwner") {
				return true
			}
		case strings.HasSuffix(role, "AnyDatabase") && rdb == "admin" && role != "userAdminAnyDatabase":
			return role != "readAnyDatabase" || !writes[cmd]
		case rdb == db && (role == "readWrite" || role == "dbOwner"):
			return true
		case rdb == db && role == "read" && !writes[cmd]:
			return true
		}
	}
	// Every user may look at itself and end its sessions.
	return cmd == "connectionstatus" || cmd == "killcursors" || cmd == "getmore" && db != ""
}

// --- replica set ----------------------------------------------------------------------------

type replState struct {
	Name string `json:"name"`
	Host string `json:"host"`
}

func (s *server) repl() *replState {
	if s.o.replSet == "" {
		return nil
	}
	b, err := os.ReadFile(s.replF)
	if err != nil {
		return nil
	}
	var st replState
	if json.Unmarshal(b, &st) != nil || st.Name != s.o.replSet {
		return nil
	}
	return &st
}

func (s *server) replStatus() *wirebson.Document {
	if s.o.replSet == "" {
		return errDoc(76, "NoReplicationEnabled", "not running with --replSet")
	}
	st := s.repl()
	if st == nil {
		return errDoc(94, "NotYetInitialized", "no replset config has been received")
	}
	member := wirebson.MustDocument("_id", int32(0), "name", st.Host, "health", float64(1), "state", int32(1),
		"stateStr", "PRIMARY", "self", true)
	return wirebson.MustDocument("set", st.Name, "myState", int32(1), "members", wirebson.MustArray(member),
		"ok", float64(1))
}

func (s *server) replInitiate(doc *wirebson.Document) *wirebson.Document {
	s.replMu.Lock()
	defer s.replMu.Unlock()
	if s.o.replSet == "" {
		return errDoc(76, "NoReplicationEnabled", "This node was not started with replication enabled.")
	}
	if s.repl() != nil {
		return errDoc(23, "AlreadyInitialized", "already initialized")
	}
	cfg, _ := doc.Get("replSetInitiate").(*wirebson.Document)
	name, host := s.o.replSet, net.JoinHostPort(s.hostName, strconv.Itoa(s.o.port))
	if cfg != nil {
		if id, ok := cfg.Get("_id").(string); ok && id != s.o.replSet {
			return errDoc(93, "InvalidReplicaSetConfig", fmt.Sprintf("Attempting to initiate a replica set with name %s, "+
				"but command line reports %s; rejecting", id, s.o.replSet))
		}
		if members, ok := cfg.Get("members").(*wirebson.Array); ok && members.Len() > 0 {
			if m, ok := members.Get(0).(*wirebson.Document); ok {
				if h, ok := m.Get("host").(string); ok {
					host = h
				}
			}
		}
	}
	b, _ := json.Marshal(replState{Name: name, Host: host})
	if err := os.WriteFile(s.replF, b, 0o600); err != nil {
		return errDoc(1, "InternalError", err.Error())
	}
	log.Printf("replica set %s initiated with member %s", name, host)
	return wirebson.MustDocument("ok", float64(1))
}

func (cn *conn) hello(h *wire.MsgHeader, body wire.MsgBody, doc *wirebson.Document, legacy bool) (
	*wire.MsgHeader, wire.MsgBody, error) {
	rh, rbody, err := cn.forward(h, body)
	if err != nil {
		return nil, nil, err
	}
	var res *wirebson.Document
	switch m := rbody.(type) {
	case *wire.OpMsg:
		res, err = m.RawSection0().Decode()
	case *wire.OpReply:
		res, err = m.Document()
	}
	if err != nil || res == nil {
		return rh, rbody, err
	}
	out := wirebson.MakeDocument(res.Len() + 8)
	for k, v := range res.All() {
		switch k {
		case "setName", "hosts", "primary", "me", "setVersion", "secondary", "isreplicaset", "electionId",
			"saslSupportedMechs", "speculativeAuthenticate":
			continue
		}
		_ = out.Add(k, v)
	}
	if cn.s.o.replSet != "" {
		if st := cn.s.repl(); st != nil {
			_ = out.Add("setName", st.Name)
			_ = out.Add("setVersion", int32(1))
			_ = out.Add("hosts", wirebson.MustArray(st.Host))
			_ = out.Add("primary", st.Host)
			_ = out.Add("me", st.Host)
			_ = out.Add("secondary", false)
		} else {
			// Not initiated yet: like mongod, not a writable primary.
			_ = out.Replace("isWritablePrimary", false)
			_ = out.Replace("ismaster", false)
			_ = out.Add("secondary", false)
			_ = out.Add("isreplicaset", true)
		}
	}
	if mechs, ok := doc.Get("saslSupportedMechs").(string); ok {
		if udb, uname, ok := strings.Cut(mechs, "."); ok && cn.s.lookup(udb, uname) != nil {
			_ = out.Add("saslSupportedMechs", wirebson.MustArray("SCRAM-SHA-256"))
		}
	}
	return reply(h, out, legacy)
}

// --- users and SCRAM-SHA-256 ------------------------------------------------------------------

func (s *server) users() map[string]*storedUser {
	users := map[string]*storedUser{}
	if b, err := os.ReadFile(s.usersF); err == nil {
		_ = json.Unmarshal(b, &users)
	}
	return users
}

func (s *server) lookup(db, name string) *storedUser {
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	return s.users()[db+"."+name]
}

func rolesOf(v any, db string) []map[string]string {
	var out []map[string]string
	arr, _ := v.(*wirebson.Array)
	if arr == nil {
		return out
	}
	for _, r := range arr.All() {
		switch r := r.(type) {
		case string:
			out = append(out, map[string]string{"role": r, "db": db})
		case *wirebson.Document:
			role, _ := r.Get("role").(string)
			rdb, _ := r.Get("db").(string)
			out = append(out, map[string]string{"role": role, "db": rdb})
		}
	}
	return out
}

func (s *server) putUser(doc *wirebson.Document, db string, create bool) *wirebson.Document {
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	name, _ := doc.Get(map[bool]string{true: "createUser", false: "updateUser"}[create]).(string)
	users := s.users()
	key := db + "." + name
	u, exists := users[key]
	switch {
	case name == "":
		return errDoc(2, "BadValue", "a user name is required")
	case create && exists:
		return errDoc(51003, "Location51003", "User \""+name+"@"+db+"\" already exists")
	case !create && !exists:
		return errDoc(11, "UserNotFound", "User "+name+"@"+db+" not found")
	}
	if !exists {
		u = &storedUser{User: name, DB: db}
	}
	if pwd, ok := doc.Get("pwd").(string); ok {
		client, err := scram.SHA256.NewClient(name, pwd, "")
		if err != nil {
			return errDoc(2, "BadValue", err.Error())
		}
		salt := make([]byte, 28)
		_, _ = rand.Read(salt)
		cred := client.GetStoredCredentials(scram.KeyFactors{Salt: string(salt), Iters: 15000})
		u.Salt, u.Iters = base64.StdEncoding.EncodeToString(salt), 15000
		u.StoredKey = base64.StdEncoding.EncodeToString(cred.StoredKey)
		u.ServerKey = base64.StdEncoding.EncodeToString(cred.ServerKey)
	} else if create {
		return errDoc(2, "BadValue", "a password is required (SCRAM-SHA-256 only in the stand-in)")
	}
	if roles := doc.Get("roles"); roles != nil {
		u.Roles = rolesOf(roles, db)
	}
	users[key] = u
	b, _ := json.MarshalIndent(users, "", "  ")
	if err := os.WriteFile(s.usersF, b, 0o600); err != nil {
		return errDoc(1, "InternalError", err.Error())
	}
	return wirebson.MustDocument("ok", float64(1))
}

func (s *server) dropUser(doc *wirebson.Document, db string) *wirebson.Document {
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	name, _ := doc.Get("dropUser").(string)
	users := s.users()
	if _, ok := users[db+"."+name]; !ok {
		return errDoc(11, "UserNotFound", "User "+name+"@"+db+" not found")
	}
	delete(users, db+"."+name)
	b, _ := json.MarshalIndent(users, "", "  ")
	_ = os.WriteFile(s.usersF, b, 0o600)
	return wirebson.MustDocument("ok", float64(1))
}

func (s *server) usersInfo(doc *wirebson.Document, db string) *wirebson.Document {
	s.usersMu.Lock()
	users := s.users()
	s.usersMu.Unlock()
	want, _ := doc.Get("usersInfo").(string)
	arr := wirebson.MakeArray(0)
	for _, u := range users {
		if u.DB != db || (want != "" && u.User != want) {
			continue
		}
		roles := wirebson.MakeArray(len(u.Roles))
		for _, r := range u.Roles {
			_ = roles.Add(wirebson.MustDocument("role", r["role"], "db", r["db"]))
		}
		_ = arr.Add(wirebson.MustDocument("_id", u.DB+"."+u.User, "user", u.User, "db", u.DB, "roles", roles,
			"mechanisms", wirebson.MustArray("SCRAM-SHA-256")))
	}
	return wirebson.MustDocument("users", arr, "ok", float64(1))
}

func payloadOf(doc *wirebson.Document) string {
	if b, ok := doc.Get("payload").(wirebson.Binary); ok {
		return string(b.B)
	}
	if s, ok := doc.Get("payload").(string); ok {
		return s
	}
	return ""
}

func saslReply(done bool, payload string) *wirebson.Document {
	return wirebson.MustDocument("conversationId", int32(1), "done", done,
		"payload", wirebson.Binary{B: []byte(payload)}, "ok", float64(1))
}

func authFailed() *wirebson.Document {
	return errDoc(18, "AuthenticationFailed", "Authentication failed.")
}

func (cn *conn) saslStart(doc *wirebson.Document, db string) *wirebson.Document {
	if mech, _ := doc.Get("mechanism").(string); mech != "SCRAM-SHA-256" {
		return errDoc(334, "MechanismUnavailable", "Received authentication for mechanism "+mech+
			" which is not enabled (stand-in: SCRAM-SHA-256 only)")
	}
	cn.skipEx = false
	if opts, ok := doc.Get("options").(*wirebson.Document); ok {
		cn.skipEx, _ = opts.Get("skipEmptyExchange").(bool)
	}
	srv, err := scram.SHA256.NewServer(func(name string) (scram.StoredCredentials, error) {
		u := cn.s.lookup(db, name)
		if u == nil {
			return scram.StoredCredentials{}, errors.New("no such user")
		}
		salt, _ := base64.StdEncoding.DecodeString(u.Salt)
		sk, _ := base64.StdEncoding.DecodeString(u.StoredKey)
		vk, _ := base64.StdEncoding.DecodeString(u.ServerKey)
		return scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: u.Iters},
			StoredKey: sk, ServerKey: vk}, nil
	})
	if err != nil {
		return authFailed()
	}
	cn.scram, cn.scramDB, cn.user = srv.NewConversation(), db, nil
	out, err := cn.scram.Step(payloadOf(doc))
	if err != nil {
		cn.scram = nil
		return authFailed()
	}
	return saslReply(false, out)
}

func (cn *conn) saslContinue(doc *wirebson.Document) *wirebson.Document {
	if cn.scram == nil {
		return errDoc(17, "ProtocolError", "No SASL session state found")
	}
	if cn.scram.Done() { // the empty exchange after server-final
		user := cn.s.lookup(cn.scramDB, cn.scram.Username())
		cn.scram, cn.user = nil, user
		return saslReply(true, "")
	}
	out, err := cn.scram.Step(payloadOf(doc))
	if err != nil || !cn.scram.Valid() {
		cn.scram = nil
		return authFailed()
	}
	if cn.skipEx {
		cn.user = cn.s.lookup(cn.scramDB, cn.scram.Username())
		cn.scram = nil
		return saslReply(true, out)
	}
	return saslReply(false, out)
}
