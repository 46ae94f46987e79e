// Command etcd is etcd v3.6.16's server, built from the Go module proxy for the API-server tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
