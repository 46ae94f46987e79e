package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"testing"
)

func TestShared(t *testing.T) {
	for src, want := range map[string]bool{
		`T{A: 1, B: 2, C: 3, D: 4}`:                false, // four fields may share a line
		`T{A: 1, B: 2, C: 3, D: 4, E: 5}`:          true,
		"T{\nA: 1,\nB: 2,\nC: 3,\nD: 4,\nE: 5,\n}": false,
		"T{\nA: 1, B: 2,\nC: 3,\nD: 4,\nE: 5,\n}":  true,
		`[]int{1, 2, 3, 4, 5, 6}`:                  false, // not keyed
	} {
		fs := token.NewFileSet()
		e, err := parser.ParseExprFrom(fs, "", src, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := shared(fs, e.(*ast.CompositeLit)); got != want {
			t.Errorf("%q: shared %v, want %v", src, got, want)
		}
	}
}
