package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/outflow-dev/outflow/devenv"
)

// devReadyLine starts the instructions; tests and scripts wait for it.
const devReadyLine = "Outflow dev is ready"

// devInstructions returns the block `outflow dev` prints once everything is
// up: where each piece listens, then copy-and-paste commands with the real
// addresses and API key that subscribe a webhook and a stream and follow
// the stream over HTTP and gRPC.
func devInstructions(in devenv.Info) string {
	var b strings.Builder
	api := "http://" + in.HTTPAddr
	auth := shellQuote("Authorization: Bearer " + in.APIKey)
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	p("")
	p("%s (started in %.1fs). Ctrl-C stops everything and removes what it created.", devReadyLine, in.StartedIn.Seconds())
	p("")
	p("  REST API        %s  (OpenAPI %s/openapi.json, metrics %s/metrics)", api, api, api)
	p("  Console         %s/console/  (sign in with the API key below)", api)
	p("  gRPC API        %s  (reflection on; every call needs the API key)", in.GRPCAddr)
	p("  API key         %s  (tenant %q)", in.APIKey, in.Tenant)
	if in.KinesisEndpoint != "" {
		p("  Kinesis         %s  (local Kinesis; stream %s, %d shards)", in.KinesisEndpoint, devenv.DemoTopic, devenv.DemoPartitions)
	} else {
		p("  Kafka           %s  (in-process broker; topic %s, %d partitions)", in.KafkaAddr, devenv.DemoTopic, devenv.DemoPartitions)
	}
	switch {
	case in.Rate > 0 && in.NewUsers > 0:
		p("  Demo producer   add_item_to_cart events -> %s records, users u1..u%d, ~%g/s;", devenv.DemoFeatureView, in.Users, in.Rate)
		p("                  %.0f%% from first-time shoppers new1, new2, ... whose values the feature store does not have yet", in.NewUsers*100)
	case in.Rate > 0:
		p("  Demo producer   add_item_to_cart events -> %s records, users u1..u%d, ~%g/s", devenv.DemoFeatureView, in.Users, in.Rate)
	case in.KinesisEndpoint != "":
		p("  Demo producer   off (--rate 0); put records on stream %s yourself, e.g. aws kinesis put-record --endpoint-url %s", devenv.DemoTopic, in.KinesisEndpoint)
	default:
		p("  Demo producer   off (--rate 0); write records to %s yourself, e.g. outflow demo-producer --kafka-brokers %s", devenv.DemoTopic, in.KafkaAddr)
	}
	p("  Feature server  %s  (reference GetFeatures API: workspace %s, feature service %s; values visible %s to %s after their record;",
		in.FeatureURL, devenv.DemoWorkspace, devenv.DemoService, roundDuration(in.Lag), roundDuration(in.Lag+in.LagJitter))
	p("                  a serving cache up to %s stale unless a read bypasses it)", devenv.FeatureCacheTTL)
	if in.PostgresDir != "" {
		p("  PostgreSQL      %s  (throwaway cluster in %s)", in.DatabaseURL, in.PostgresDir)
	} else {
		p("  PostgreSQL      the database of DATABASE_URL / --database-url (migrated; tenant %q)", in.Tenant)
	}
	if in.ReceiverURL != "" {
		p("  Receiver        %s  (checks each signature with the subscription's secret from the dev database;", in.ReceiverURL)
		p("                  prints a \"receiver: verified ...\" line here per event)")
	}

	enrichment := map[string]string{"workspace_name": devenv.DemoWorkspace, "feature_service_name": devenv.DemoService}
	hookURL := in.ReceiverURL
	if hookURL == "" {
		hookURL = "http://127.0.0.1:3000/hooks/cart"
	}
	webhookBody := jsonObject(
		"name", "promo cart webhook"+in.NameSuffix,
		"feature_view_names", []string{devenv.DemoFeatureView},
		"enrichment", enrichment,
		"webhook", map[string]string{"url": hookURL})
	streamBody := jsonObject(
		"name", "promo cart stream"+in.NameSuffix,
		"feature_view_names", []string{devenv.DemoFeatureView},
		"enrichment", enrichment,
		"stream", map[string]string{})
	create := func(body string) string {
		return fmt.Sprintf("curl -sS -X POST %s/v1/subscriptions \\\n  -H %s -H 'Content-Type: application/json' \\\n  -d %s",
			api, auth, shellQuote(body))
	}

	p("")
	p("# 1. Subscribe a webhook to %s, enriched with %s (STRICT consistency: each", devenv.DemoFeatureView, devenv.DemoService)
	p("#    event waits until the feature store has materialised its record):")
	if in.ReceiverURL == "" {
		p("#    (point the url at your receiver; http and loopback are allowed in dev, or run with --receiver)")
	}
	p("%s", create(webhookBody))
	p("#    The answer carries the subscription's signing secret (whsec_...), shown only once.")
	if in.ReceiverURL != "" {
		p("#    Events then arrive at the receiver: \"receiver: verified evt_... | feature_vector=consistent attempts=N ...\".")
		p("#    A first-time shopper's event (user_id=new...) waits for its values: attempts > 1, never nulls.")
	}
	p("")
	p("# 2. Subscribe a stream, then follow it as newline-delimited JSON or over gRPC:")
	p("SUB=$(%s \\\n  | grep -o '\"sub_[^\"]*\"' | head -n 1 | tr -d '\"'); echo \"$SUB\"", create(streamBody))
	p("curl -N -sS -H %s \"%s/v1/subscriptions/$SUB/events:stream\"", auth, api)
	p("grpcurl -plaintext -H %s -d \"{\\\"subscription_id\\\": \\\"$SUB\\\"}\" \\\n  %s outflow.v1.EventService/StreamEvents",
		shellQuote("authorization: Bearer "+in.APIKey), in.GRPCAddr)
	p("#    (no grpcurl? in the repository: go tool -modfile=tools/go.mod grpcurl ...)")
	p("")
	p("# 3. Look around:")
	p("curl -sS -H %s '%s/v1/subscriptions?page_size=10'", auth, api)
	p("curl -s %s/metrics | grep '^outflow_'", api)
	p("curl -s %s/openapi.json", api)
	p("")
	return b.String()
}

// jsonObject renders alternating keys and values as one JSON object line,
// keys in the order given (encoding/json would sort a map's).
func jsonObject(kv ...any) string {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(kv[i])
		v, _ := json.Marshal(kv[i+1])
		b.Write(k)
		b.WriteString(": ")
		b.Write(v)
	}
	b.WriteString("}")
	return b.String()
}

// shellQuote quotes s for POSIX shells: inside single quotes, nothing but a
// single quote is special.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// roundDuration shows a duration to a tenth of a second.
func roundDuration(d time.Duration) string {
	return d.Round(100 * time.Millisecond).String()
}
