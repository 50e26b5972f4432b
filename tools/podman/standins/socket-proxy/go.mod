module github.com/rpger/rpger-dbstack/tools/podman/standins/socket-proxy

go 1.24
