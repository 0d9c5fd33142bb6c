// Package broadcast holds Switchyard's domain: the accepted message and its
// wire envelope, the migration stages, the per-transport delivery outcomes,
// the error type every other package wraps, the realtime subscription
// Token the realtime transport mints and the API hands out, and the
// multicast adapter that publishes each accepted message to the transports
// its stage names.
//
// broadcast imports no other package of this module. The transports
// (legacyparty, realtime), the flag evaluation (flags) and the comparator
// (shadow) implement the small interfaces declared here.
package broadcast
