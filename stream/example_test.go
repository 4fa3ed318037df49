package stream_test

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/outflow-dev/outflow/stream"
)

// A resume token carries a position for one subscription; the server
// decodes the token a client sends back before opening its stream.
func ExampleTokens() {
	key := bytes.Repeat([]byte{0x42}, stream.MinTokenKeyLen) // from configuration, the same on every replica
	tokens, err := stream.NewTokens(key)
	if err != nil {
		panic(err)
	}
	token := tokens.Encode("sub_1", stream.Position{"fv-output": {0: 1234, 1: 987}})

	pos, err := tokens.Decode(token, "sub_1")
	fmt.Println(pos, err)

	_, err = tokens.Decode(token, "sub_2")
	fmt.Println(errors.Is(err, stream.ErrInvalidToken))
	// Output:
	// map[fv-output:map[0:1234 1:987]] <nil>
	// true
}
