package main

// DELETE THIS FILE when cmd/switchyard/flagscmd.go defines runFlags (the
// flags helper owns that file). Scaffolding only, so the package compiles
// meanwhile.

import (
	"context"
	"errors"
	"io"
)

func runFlags(context.Context, []string, io.Writer, io.Writer, func(string) string) error {
	return errors.New("flags CLI is not built yet")
}
