// Command litlines fails when a keyed composite literal of more than four fields does not put
// each field on its own line (a convention of this tree, README's Development section: such
// literals are read field by field in review). Generated protobuf code is skipped.
//
//	go run ./internal/tools/litlines FILE.go...
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
)

// maxInline is the most fields a keyed literal may have on shared lines.
const maxInline = 4

func main() {
	bad := 0
	for _, p := range os.Args[1:] {
		n, err := check(p, os.Stdout)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		bad += n
	}
	if bad > 0 {
		fmt.Printf("litlines: %d keyed literals of more than %d fields share lines: one field per line\n", bad, maxInline)
		os.Exit(1)
	}
}

// check reports, to w, the literals of file p that break the rule, and returns how many.
func check(p string, w *os.File) (int, error) {
	if strings.HasSuffix(p, ".pb.go") || !strings.HasSuffix(p, ".go") {
		return 0, nil
	}
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, p, nil, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	ast.Inspect(f, func(x ast.Node) bool {
		if cl, ok := x.(*ast.CompositeLit); ok && shared(fs, cl) {
			fmt.Fprintf(w, "%s: a literal of %d fields with fields sharing lines\n", fs.Position(cl.Pos()), len(cl.Elts))
			n++
		}
		return true
	})
	return n, nil
}

// shared reports whether cl is keyed, has more than maxInline fields and puts two on a line.
func shared(fs *token.FileSet, cl *ast.CompositeLit) bool {
	if len(cl.Elts) <= maxInline {
		return false
	}
	if _, keyed := cl.Elts[0].(*ast.KeyValueExpr); !keyed {
		return false
	}
	lines := map[int]bool{}
	for _, e := range cl.Elts {
		l := fs.Position(e.Pos()).Line
		if lines[l] {
			return true
		}
		lines[l] = true
	}
	return false
}
