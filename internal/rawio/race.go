//go:build race

package rawio

import "syscall"

// Under the race detector, syscall.Read and syscall.Write tell it that a
// write to a descriptor happens before a read of it (the kernel carries
// the bytes); raw calls do not. A zero-length write before each raw write
// and a zero-length read after each raw read (no-ops for a TCP socket)
// make the same announcements, so a program whose other end reads through
// the standard library sees no false race.

func raceReleaseIO(fd uintptr) { _, _ = syscall.Write(int(fd), nil) }

func raceAcquireIO(fd uintptr) { _, _ = syscall.Read(int(fd), nil) }
