package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// fieldNamingJSON is the gateway's JSON codec with decode errors that name
// the offending field: protojson reports a wrong type as "unexpected token"
// at a byte offset, which a client cannot act on.
type fieldNamingJSON struct {
	*runtime.JSONPb
}

// NewDecoder reads the whole body (the gateway bounds it) and, when it does
// not decode, finds the field at fault.
func (m fieldNamingJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		raw, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("reading the request body: %w", err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			return io.EOF // the gateway's signal for "no body", which some calls allow
		}
		err = m.Unmarshal(raw, v)
		if err == nil {
			return nil
		}
		if desc := messageDescriptor(v); desc != nil {
			if path := badField(m.UnmarshalOptions, desc, raw); path != "" {
				return fmt.Errorf("field %s: %w", path, err)
			}
		}
		return err
	})
}

// badField returns the path of the first field of a JSON object that does
// not decode into a message of type desc, descending into nested messages;
// "" when the object itself is malformed or every field decodes alone.
func badField(opts protojson.UnmarshalOptions, desc protoreflect.MessageDescriptor, raw []byte) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return ""
	}
	for name, value := range fields {
		one, _ := json.Marshal(map[string]json.RawMessage{name: value})
		if opts.Unmarshal(one, newMessage(desc)) == nil {
			continue
		}
		fd := desc.Fields().ByJSONName(name)
		if fd == nil {
			fd = desc.Fields().ByName(protoreflect.Name(name))
		}
		if fd != nil && fd.Message() != nil && !fd.IsMap() && !fd.IsList() {
			if inner := badField(opts, fd.Message(), value); inner != "" {
				return name + "." + inner
			}
		}
		return name
	}
	return ""
}

var protoMessage = reflect.TypeFor[proto.Message]()

// messageDescriptor finds the message type behind v, which the generated
// gateway passes as *T or **T (a request's body field).
func messageDescriptor(v any) protoreflect.MessageDescriptor {
	for t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Pointer; t = t.Elem() {
		if t.Implements(protoMessage) {
			return reflect.Zero(t).Interface().(proto.Message).ProtoReflect().Descriptor()
		}
	}
	return nil
}

// newMessage makes an empty message of type desc, so a field is decoded the
// way the gateway would (well-known types keep their JSON forms).
func newMessage(desc protoreflect.MessageDescriptor) proto.Message {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(desc.FullName()); err == nil {
		return mt.New().Interface()
	}
	return dynamicpb.NewMessage(desc)
}
