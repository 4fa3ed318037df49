package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/outflow-dev/outflow/proto/openapi"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
)

// Methods that take no subscription id, and what another tenant's key may
// do with them. A new RPC without an id must be added here, deliberately.
var (
	// collectionMethods act on the caller's own tenant only.
	collectionMethods = map[string]bool{
		"/outflow.v1.SubscriptionService/CreateSubscription": true,
		"/outflow.v1.SubscriptionService/ListSubscriptions":  true,
	}
	// untenantedServices hold no tenant data (but still need a key).
	untenantedServices = map[string]bool{
		"grpc.reflection.v1.ServerReflection":      true,
		"grpc.reflection.v1alpha.ServerReflection": true,
	}
	// publicServices need no key (SPEC §7).
	publicServices = map[string]bool{"grpc.health.v1.Health": true}
)

// TestEveryRPCNeedsAKeyAndATenant calls every method of every registered
// service without a key, with a revoked key, and with another tenant's key
// aimed at tenant A's subscription. The list comes from the server's service
// descriptors, so a new RPC cannot skip the check.
func TestEveryRPCNeedsAKeyAndATenant(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	created := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("tenant a's"))
	subID := created["id"].(string)
	streamSub := webhookSub("tenant a's stream")
	delete(streamSub, "webhook")
	streamSub["stream"] = map[string]any{}
	streamID := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, streamSub)["id"].(string)

	revokedKey := b.revokedKey(t)
	services := b.srv.GRPCServer().GetServiceInfo()
	var methods []string
	for svc, info := range services {
		for _, m := range info.Methods {
			methods = append(methods, "/"+svc+"/"+m.Name)
		}
	}
	sort.Strings(methods)
	if len(methods) < 12 {
		t.Fatalf("found only %d methods: %v", len(methods), methods)
	}

	for _, full := range methods {
		svc, method, _ := strings.Cut(strings.TrimPrefix(full, "/"), "/")
		if publicServices[svc] {
			continue
		}
		t.Run(full, func(t *testing.T) {
			t.Parallel()
			desc := methodDescriptor(t, svc, method)
			id := subID
			if svc == "outflow.v1.EventService" {
				id = streamID
			}
			req := dynamicpb.NewMessage(desc.Input())
			hasID := setSubscriptionID(req, id)

			for _, tc := range []struct {
				name string
				key  string
			}{{"no key", ""}, {"revoked key", revokedKey}, {"unknown key", "ofk_unknown"}, {"not our key format", "abc"}} {
				if err := invoke(b.conn, tc.key, full, desc, req); status.Code(err) != codes.Unauthenticated {
					t.Errorf("%s: %v, want UNAUTHENTICATED", tc.name, err)
				}
			}

			err := invoke(b.conn, b.keyB, full, desc, req)
			switch {
			case collectionMethods[full], untenantedServices[svc]:
				// Allowed; what tenant B sees is checked below.
			case hasID:
				if status.Code(err) != codes.NotFound {
					t.Errorf("tenant B on tenant A's subscription: %v, want NOT_FOUND", err)
				}
			default:
				t.Errorf("%s takes no subscription id: classify it in collectionMethods or untenantedServices", full)
			}
		})
	}

	// What the collection methods show tenant B: nothing of tenant A's.
	list, err := b.subs.ListSubscriptions(as(b.keyB), &outflowv1.ListSubscriptionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list.GetSubscriptions() {
		if s.GetId() == subID || s.GetId() == streamID {
			t.Errorf("tenant B lists tenant A's subscription %s", s.GetId())
		}
	}
}

func (b *bundle) revokedKey(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	key, plaintext, err := b.store.CreateAPIKey(ctx, "tenant-a", "to revoke")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.subs.ListSubscriptions(as(plaintext), &outflowv1.ListSubscriptionsRequest{}); err != nil {
		t.Fatalf("the key works before revocation: %v", err)
	}
	if err := b.store.RevokeAPIKey(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	return plaintext
}

func methodDescriptor(t *testing.T, svc, method string) protoreflect.MethodDescriptor {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		t.Fatalf("service %s is not registered: %v", svc, err)
	}
	m := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(method))
	if m == nil {
		t.Fatalf("no method %s in %s", method, svc)
	}
	return m
}

// setSubscriptionID fills the request's subscription reference (id,
// subscription_id or subscription.id) and reports whether it has one.
func setSubscriptionID(req *dynamicpb.Message, id string) bool {
	fields := req.Descriptor().Fields()
	for _, name := range []protoreflect.Name{"id", "subscription_id"} {
		if fd := fields.ByName(name); fd != nil && fd.Kind() == protoreflect.StringKind {
			req.Set(fd, protoreflect.ValueOfString(id))
			if d := fields.ByName("delivery_id"); d != nil {
				req.Set(d, protoreflect.ValueOfString("dlv_none"))
			}
			return true
		}
	}
	if fd := fields.ByName("subscription"); fd != nil && fd.Message() != nil {
		sub := req.Mutable(fd).Message()
		sub.Set(sub.Descriptor().Fields().ByName("id"), protoreflect.ValueOfString(id))
		return true
	}
	return false
}

// invoke calls any method with a dynamic request and returns its error.
func invoke(conn *grpc.ClientConn, key, full string, desc protoreflect.MethodDescriptor, req proto.Message) error {
	ctx, cancel := context.WithTimeout(as(key), 10*time.Second)
	defer cancel()
	resp := dynamicpb.NewMessage(desc.Output())
	if !desc.IsStreamingServer() && !desc.IsStreamingClient() {
		return conn.Invoke(ctx, full, req, resp)
	}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{
		ServerStreams: desc.IsStreamingServer(), ClientStreams: desc.IsStreamingClient(),
	}, full)
	if err != nil {
		return err
	}
	// SendMsg answers io.EOF when the server has already ended the stream
	// (the auth interceptor refuses before reading); the status that says
	// why comes from RecvMsg.
	if err := stream.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	return stream.RecvMsg(resp)
}

// TestEveryRESTPathNeedsAKey walks the paths of the served OpenAPI document.
func TestEveryRESTPathNeedsAKey(t *testing.T) {
	t.Parallel()
	b := setup(t, server.Config{})
	subID := b.restJSON(t, http.StatusOK, "POST", "/v1/subscriptions", b.keyA, webhookSub("a"))["id"].(string)
	revoked := b.revokedKey(t)

	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.JSON, &doc); err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	n := 0
	for path, ops := range doc.Paths {
		concrete := param.ReplaceAllStringFunc(path, func(p string) string {
			if p == "{delivery_id}" {
				return "dlv_none"
			}
			return subID
		})
		for method := range ops {
			method = strings.ToUpper(method)
			n++
			for _, key := range []string{"", revoked} {
				if code, body := b.rest(t, method, concrete, key, map[string]any{}); code != http.StatusUnauthorized {
					t.Errorf("%s %s (key set: %v) = %d %s, want 401", method, concrete, key != "", code, body)
				}
			}
			if strings.Contains(concrete, subID) {
				if code, body := b.rest(t, method, concrete, b.keyB, map[string]any{}); code != http.StatusNotFound {
					t.Errorf("%s %s as tenant B = %d %s, want 404", method, concrete, code, body)
				}
			}
		}
	}
	if n < 11 {
		t.Fatalf("the OpenAPI document has %d operations, want the 11 of SPEC §6", n)
	}
}
