// Package devenv is `outflow dev`: one process that runs the whole gateway
// on a laptop with nothing installed but Go. It starts (or is given) a
// PostgreSQL, an in-process Kafka-protocol broker or a local Kinesis, the
// reference feature server, the gateway itself and, optionally, a receiver
// that prints what it is sent, then prints how to reach them. Env is its
// lifecycle: New checks a Config; Run starts everything, waits for its
// context, then stops everything and removes what it created; Kill is the
// forced exit of a second Ctrl-C.
package devenv
