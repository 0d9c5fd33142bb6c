//go:build unix

package partykitdev

import "syscall"

// killCheck sends signal 0 to the process group: nil means it still exists.
func killCheck(pgid int) error { return syscall.Kill(-pgid, 0) }
