package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"unicode"

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
// not decode, finds the field at fault. Its errors read `field "<path>":
// <what is wrong>`, with path (quoted: unknown names may hold anything) the field's full path in the request
// ("subscription.webhook.timeout"); the gateway wraps them in an
// INVALID_ARGUMENT status by their text only, and httpError turns that back
// into a google.rpc.BadRequest naming the field.
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
		desc := messageDescriptor(v)
		if desc == nil {
			return err
		}
		prefix := bodyField(desc)
		path, cause := badField(m.UnmarshalOptions, desc, raw)
		if path == "" {
			path, cause = oneofConflict(desc, raw), err
		}
		if path == "" {
			path = strings.TrimSuffix(prefix, ".")
			if path == "" {
				path = "body"
			}
			return fmt.Errorf("field %q: not a JSON object of the expected form: %w", path, err)
		}
		return fmt.Errorf("field %q: %w", prefix+path, cause)
	})
}

// bodyField is the path prefix of fields decoded into a message of type
// desc: "subscription." for the Subscription a create or update carries
// as its body, "" for a whole request message (body "*").
func bodyField(desc protoreflect.MessageDescriptor) string {
	name := string(desc.Name())
	if strings.HasSuffix(name, "Request") {
		return ""
	}
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String() + "."
}

// badField returns the path of the first field of a JSON object that does
// not decode into a message of type desc, and why, descending into nested
// messages and maps of messages; "" when the object itself is malformed or
// every field decodes alone.
func badField(opts protojson.UnmarshalOptions, desc protoreflect.MessageDescriptor, raw []byte) (string, error) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return "", nil
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		value := fields[name]
		one, _ := json.Marshal(map[string]json.RawMessage{name: value})
		err := opts.Unmarshal(one, newMessage(desc))
		if err == nil {
			continue
		}
		fd := desc.Fields().ByJSONName(name)
		if fd == nil {
			fd = desc.Fields().ByName(protoreflect.Name(name))
		}
		switch {
		case fd == nil:
			return name, errors.New("no such field")
		case fd.IsMap() && fd.MapValue().Message() != nil:
			var entries map[string]json.RawMessage
			if json.Unmarshal(value, &entries) == nil {
				for _, key := range slices.Sorted(maps.Keys(entries)) {
					if inner, ierr := badField(opts, fd.MapValue().Message(), entries[key]); inner != "" {
						return name + "." + key + "." + inner, ierr
					}
					if json.Unmarshal(entries[key], new(map[string]json.RawMessage)) != nil {
						return name + "." + key, errors.New("must be a JSON object")
					}
				}
			}
		case fd.Message() != nil && !fd.IsMap() && !fd.IsList():
			if inner, ierr := badField(opts, fd.Message(), value); inner != "" {
				return name + "." + inner, ierr
			}
		}
		return string(fd.Name()), err
	}
	return "", nil
}

// oneofConflict returns the name of a oneof of desc that the JSON object
// raw sets more than one member of ("target": both webhook and stream), or
// "".
func oneofConflict(desc protoreflect.MessageDescriptor, raw []byte) string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return ""
	}
	set := map[protoreflect.FullName]int{}
	for name, value := range fields {
		fd := desc.Fields().ByJSONName(name)
		if fd == nil {
			fd = desc.Fields().ByName(protoreflect.Name(name))
		}
		if fd == nil || fd.ContainingOneof() == nil || string(value) == "null" {
			continue
		}
		if o := fd.ContainingOneof(); !o.IsSynthetic() {
			if set[o.FullName()]++; set[o.FullName()] > 1 {
				return string(o.Name())
			}
		}
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
