package kafka

import (
	"errors"

	kafkago "github.com/segmentio/kafka-go"
)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("kafka source: invalid config")

// ErrAlreadyRunning is returned by Run when another Run of the same Source
// has not returned yet: a Source is one member of the consumer group.
var ErrAlreadyRunning = errors.New("kafka source: already running")

// FatalError is how Run reports a failure that retrying cannot heal, such as
// rejected credentials or a missing ACL: the Source stops (after committing
// what is safe) instead of retrying forever while looking healthy. Every
// other failure (a broker down, a leader moving, a coordinator changing) is
// retried and logged, and Joined reports whether the Source is consuming.
type FatalError struct {
	// Op says what the Source was doing, e.g. "join group" or
	// "read topic/3".
	Op string
	// Err is the cause, usually a kafka-go Error code.
	Err error
}

// Error implements error.
func (e *FatalError) Error() string { return "kafka source: " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the cause, so errors.Is(err, kafkago.SASLAuthenticationFailed)
// works.
func (e *FatalError) Unwrap() error { return e.Err }

// IsFatal reports whether err is a Kafka error that no retry will fix: the
// broker rejected this client's identity or permissions, or its group
// settings. These need an operator, so they stop the Source (and stream
// readers, which share this judgement).
func IsFatal(err error) bool {
	var kerr kafkago.Error
	if !errors.As(err, &kerr) {
		return false
	}
	switch kerr {
	case kafkago.SASLAuthenticationFailed,
		kafkago.UnsupportedSASLMechanism,
		kafkago.IllegalSASLState,
		kafkago.TopicAuthorizationFailed,
		kafkago.GroupAuthorizationFailed,
		kafkago.ClusterAuthorizationFailed,
		kafkago.InvalidSessionTimeout,
		kafkago.InvalidGroupId:
		return true
	}
	return false
}
