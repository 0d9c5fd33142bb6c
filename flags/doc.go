// Package flags decides each message's migration stage from OpenFeature
// flags and edits the flag files those flags come from.
//
// NewProvider builds the OpenFeature provider (flagd's in-process evaluator
// fed by a validating, hot-reloading flag file, a standalone flagd, or an
// in-memory provider); the gateway sets it on its own OpenFeature API
// instance (openfeature/isolated), never the process-global one.
// NewResolver evaluates the kill switch "realtime-killswitch" and
// the channel flag "realtime-<channel>" per message, caches decisions and
// fails safe to legacy (broadcast.StageResolver). LoadFile, ValidateFile,
// (*File).Set, WriteAtomic and the audited change (PrepareChange, Commit)
// serve the "switchyard flags" command. See
// docs/flags.md.
//
// flags imports broadcast and no other package of this module.
package flags
