// Command funclen is `make lint`'s function-length report: it lists the functions of the
// non-test Go files it is given that are longer than -max lines, and fails if one of them is
// not in the allowlist (-allow) or has grown past the length the allowlist records. The
// allowlist holds the long functions the tree had when the check came in, as
// "path name lines", so that they can only shrink and no new one is added unseen.
// `-write` rewrites the allowlist from the tree (after shortening a function, say).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/countersign/countersign/internal/cmdexit"
)

func main() { os.Exit(cmdexit.Report("funclen", run(os.Args[1:], os.Stdout), os.Stderr)) }

// long is one function over the limit.
type long struct {
	path, name string
	lines      int
}

func (l long) key() string { return l.path + " " + l.name }

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("funclen", flag.ContinueOnError)
	limit := fs.Int("max", 80, "longest function allowed without an allowlist entry, in lines")
	allowFile := fs.String("allow", "", "allowlist file (path name lines)")
	write := fs.Bool("write", false, "rewrite the allowlist from the files given")
	if err := fs.Parse(args); err != nil {
		return cmdexit.UsageError(err)
	}
	found, err := scan(fs.Args(), *limit)
	if err != nil {
		return err
	}
	if *write {
		return writeAllow(*allowFile, found, *limit)
	}
	allow, err := readAllow(*allowFile)
	if err != nil {
		return err
	}
	var bad []string
	for _, l := range found {
		switch max, ok := allow[l.key()]; {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s: %s is %d lines, more than %d: split it", l.path, l.name, l.lines, *limit))
		case l.lines > max:
			bad = append(bad, fmt.Sprintf("%s: %s has grown to %d lines (allowlisted at %d): shorten it", l.path, l.name, l.lines, max))
		}
	}
	fmt.Fprintf(stdout, "funclen: %d functions over %d lines, %d allowlisted\n", len(found), *limit, len(allow))
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "\n"))
	}
	return nil
}

// scan parses the non-test Go files and returns their functions over limit lines.
func scan(paths []string, limit int) ([]long, error) {
	fset := token.NewFileSet()
	var out []long
	for _, p := range paths {
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			if n > limit {
				out = append(out, long{path: p, name: funcName(fd), lines: n})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out, nil
}

// funcName is Name or Recv.Name (the receiver's type without its pointer or type parameters).
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	switch x := t.(type) {
	case *ast.IndexExpr:
		t = x.X
	case *ast.IndexListExpr:
		t = x.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}

func readAllow(path string) (map[string]int, error) {
	allow := map[string]int{}
	if path == "" {
		return allow, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, fmt.Errorf("%s:%d: expected \"path name lines\"", path, n)
		}
		lines, err := strconv.Atoi(fields[2])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %q is not a line count", path, n, fields[2])
		}
		allow[fields[0]+" "+fields[1]] = lines
	}
	return allow, sc.Err()
}

func writeAllow(path string, found []long, limit int) error {
	if path == "" {
		return cmdexit.Usagef("-write needs -allow FILE")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Functions longer than %d lines when the check came in (path name lines); they may\n", limit)
	b.WriteString("# shrink, not grow. Regenerate with `make lint-funclen-update` after shortening one.\n")
	for _, l := range found {
		fmt.Fprintf(&b, "%s %s %d\n", l.path, l.name, l.lines)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
