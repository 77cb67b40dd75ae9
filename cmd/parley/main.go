package main

import (
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/raft/v3"
	_ "golang.org/x/term"
)

func main() {}
