package main

import (
	"context"
	"os/exec"
)

// execOut runs a command to completion and returns its combined output.
func execOut(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
