// Package examples holds runnable clients of the gateway: webhook receivers
// in Go and Python and a gRPC stream worker, one directory each (see
// README.md). This package itself has no code; its tests check that the Go
// and Python receivers agree with the gateway's signatures byte for byte.
package examples
