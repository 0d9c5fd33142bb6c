// Package flags decides each message's migration stage from OpenFeature
// flags and edits the flag files those flags come from.
//
// NewProvider builds the OpenFeature provider (flagd's in-process evaluator
// fed by a validating, hot-reloading flag file, a standalone flagd, or an
// in-memory provider); cmd/switchyard sets it as the process-global
// provider. NewResolver evaluates the kill switch "realtime-killswitch" and
// the channel flag "realtime-<channel>" per message, caches decisions and
// fails safe to legacy (broadcast.StageResolver). LoadFile, ValidateFile,
// (*File).Set and WriteAtomic serve the "switchyard flags" command. See
// docs/flags.md.
//
// flags imports broadcast and no other package of this module.
package flags
