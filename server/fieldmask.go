package server

import (
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// updatableFields are the top-level Subscription fields an update may set;
// an empty update mask means all of them (a full replacement, AIP-134).
var updatableFields = []string{
	"name", "feature_view_names", "entity_filter", "filter", "enrichment",
	"webhook", "stream", "retry_policy", "state",
}

// outputOnlyFields are ignored when they appear in a mask (AIP-203), so a
// client may send back what it read; the gateway also adds them to the mask
// it infers from a PATCH body.
var outputOnlyFields = map[string]bool{
	"id": true, "etag": true, "secret": true, "state_reason": true,
	"create_time": true, "update_time": true,
}

// maskPaths checks an update mask and returns the paths to apply.
func maskPaths(mask *fieldmaskpb.FieldMask) ([]string, error) {
	if len(mask.GetPaths()) == 0 {
		return updatableFields, nil
	}
	var v violations
	var paths []string
	for _, path := range mask.GetPaths() {
		top, _, _ := strings.Cut(path, ".")
		switch {
		case outputOnlyFields[top]:
			continue
		case path == "*":
			paths = append(paths, updatableFields...)
		case !validPath(path):
			v.add("update_mask", "%q is not a field of Subscription", clip(path))
		default:
			paths = append(paths, path)
		}
	}
	return paths, v.err()
}

func validPath(path string) bool {
	// IsValid rejects unknown fields and paths through maps or lists.
	m, err := fieldmaskpb.New(&outflowv1.Subscription{}, path)
	return err == nil && m.IsValid(&outflowv1.Subscription{})
}

// applyMask copies the fields at paths from src into dst: a path unset in
// src clears the field in dst. Setting one member of a oneof (webhook,
// stream) clears the other.
func applyMask(dst, src *outflowv1.Subscription, paths []string) {
	src = proto.CloneOf(src) // dst must not share messages with the request
	for _, path := range paths {
		d, s := dst.ProtoReflect(), src.ProtoReflect()
		names := strings.Split(path, ".")
		for _, name := range names[:len(names)-1] {
			fd := d.Descriptor().Fields().ByName(protoreflect.Name(name))
			s = s.Get(fd).Message()
			d = d.Mutable(fd).Message()
		}
		fd := d.Descriptor().Fields().ByName(protoreflect.Name(names[len(names)-1]))
		if s.Has(fd) {
			d.Set(fd, s.Get(fd))
		} else if d.Has(fd) {
			d.Clear(fd)
		}
	}
}
