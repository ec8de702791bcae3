// Command scriptshas prints the SHA-1 of every Lua script an asynq source
// tree defines, one "sha1 name file" line per script, so that a test can
// check each against asynq-guard's catalog.
//
// Usage:
//
//	scriptshas <asynq module directory>
//	scriptshas -print <variable name> <asynq module directory>
//
// With -print, it writes that script's body exactly, for tests that send
// a real asynq script.
//
// A script is a call redis.NewScript(<string literal>) anywhere under
// internal/ of the tree; the literal is evaluated exactly as Go does, so
// the hash is the one go-redis sends with EVALSHA.
package main

import (
	"crypto/sha1"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "-print" {
		os.Exit(printBody(os.Args[2], os.Args[3]))
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: scriptshas [-print NAME] <asynq module directory>")
		os.Exit(2)
	}
	lines, err := scan(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "scriptshas:", err)
		os.Exit(1)
	}
	if len(lines) == 0 {
		fmt.Fprintln(os.Stderr, "scriptshas: no redis.NewScript call found; is this an asynq tree?")
		os.Exit(1)
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
}

// printBody writes the body of the script variable name under root.
func printBody(name, root string) int {
	bodies := map[string]string{}
	if _, err := scanInto(root, bodies); err != nil {
		fmt.Fprintln(os.Stderr, "scriptshas:", err)
		return 1
	}
	body, ok := bodies[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "scriptshas: no script named %s\n", name)
		return 1
	}
	fmt.Print(body)
	return 0
}

// scan returns one line per script found in the Go files under root/internal.
func scan(root string) ([]string, error) {
	return scanInto(root, map[string]string{})
}

// scanInto also records each script's body by variable name.
func scanInto(root string, bodies map[string]string) ([]string, error) {
	var lines []string
	fset := token.NewFileSet()
	walk := func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		file, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		found, err := scripts(file)
		for _, s := range found {
			lines = append(lines, fmt.Sprintf("%x %s %s", sha1.Sum([]byte(s.body)), s.name, rel))
			bodies[s.name] = s.body
		}
		return err
	}
	err := filepath.WalkDir(filepath.Join(root, "internal"), walk)
	return lines, err
}

type script struct{ name, body string }

// scripts finds `var x = redis.NewScript("...")` style definitions.
func scripts(file *ast.File) ([]script, error) {
	var out []script
	var bad error
	ast.Inspect(file, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, value := range spec.Values {
			call, ok := value.(*ast.CallExpr)
			if !ok || !isNewScript(call.Fun) || len(call.Args) != 1 {
				continue
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				bad = fmt.Errorf("%s: NewScript argument is not a string literal", spec.Names[i].Name)
				continue
			}
			body, err := strconv.Unquote(lit.Value)
			if err != nil {
				bad = err
				continue
			}
			out = append(out, script{name: spec.Names[i].Name, body: body})
		}
		return true
	})
	return out, bad
}

func isNewScript(fun ast.Expr) bool {
	sel, ok := fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "NewScript"
}
