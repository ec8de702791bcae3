// Command deploylint checks asynq-guard's deployment files offline, with
// the libraries the real tools are built from:
//
//	deploylint kube DIR...      kustomize-build each DIR and decode every object
//	                            strictly as its Kubernetes (or prometheus-operator)
//	                            API type, then check references between objects
//	deploylint compose FILE     load FILE with compose-go, which validates it
//	                            against the compose specification's schema
//	deploylint dashboard FILE   check a Grafana dashboard: structure, datasource
//	                            variable, and every PromQL expression parsed
//
// It prints every problem found and exits 1 if there was any.
package main

import (
	"fmt"
	"os"
)

// problems collects what the checks find.
type problems struct {
	list []string
}

func (p *problems) add(where, format string, args ...any) {
	p.list = append(p.list, where+": "+fmt.Sprintf(format, args...))
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: deploylint kube DIR... | compose FILE | dashboard FILE")
		os.Exit(2)
	}
	var p problems
	switch os.Args[1] {
	case "kube":
		for _, dir := range os.Args[2:] {
			checkKube(&p, dir)
		}
	case "compose":
		for _, file := range os.Args[2:] {
			checkCompose(&p, file)
		}
	case "dashboard":
		for _, file := range os.Args[2:] {
			checkDashboard(&p, file)
		}
	default:
		fmt.Fprintf(os.Stderr, "deploylint: unknown check %q\n", os.Args[1])
		os.Exit(2)
	}
	for _, line := range p.list {
		fmt.Println(line)
	}
	if len(p.list) > 0 {
		fmt.Printf("deploylint %s: %d problem(s)\n", os.Args[1], len(p.list))
		os.Exit(1)
	}
	fmt.Printf("deploylint %s: ok (%d file(s) or folder(s))\n", os.Args[1], len(os.Args)-2)
}
