package testenv

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
)

// KinesisEndpointEnv names the environment variable holding the URL of the
// local Kinesis (kinesalite) that scripts/testenv.sh starts, e.g.
// http://127.0.0.1:17001.
const KinesisEndpointEnv = "OUTFLOW_TEST_KINESIS_ENDPOINT"

// KinesisRegion is the region tests sign their requests for; kinesalite
// accepts any.
const KinesisRegion = "us-east-1"

// KinesisEndpoint returns the local Kinesis URL from
// OUTFLOW_TEST_KINESIS_ENDPOINT; like the other services, a missing variable
// skips the test, or fails it under CI=true.
func KinesisEndpoint(t testing.TB) string {
	t.Helper()
	return requireEnv(t, os.Getenv, KinesisEndpointEnv)
}

// KinesisAWS returns an SDK configuration for the local Kinesis: the test
// region and static dummy credentials (kinesalite checks that requests are
// signed, not by whom).
func KinesisAWS() aws.Config {
	return aws.Config{
		Region:      KinesisRegion,
		Credentials: credentials.NewStaticCredentialsProvider("outflow-test", "outflow-test", ""),
	}
}

// KinesisClient returns a client of the local Kinesis whose connections are
// closed when the test ends (so goleak sees none).
func KinesisClient(t testing.TB) *kinesis.Client {
	t.Helper()
	endpoint := KinesisEndpoint(t)
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	return kinesis.NewFromConfig(KinesisAWS(), func(o *kinesis.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.HTTPClient = &http.Client{Transport: transport}
	})
}

// NewKinesisStream creates a stream with the given number of shards for the
// calling test and returns its name, once it is ACTIVE; it is deleted when
// the test and its subtests finish.
func NewKinesisStream(t testing.TB, shards int) string {
	t.Helper()
	client := KinesisClient(t)
	name := "test-" + strings.ToLower(rand.Text())
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	if _, err := client.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(int32(shards))}); err != nil {
		t.Fatalf("testenv: create kinesis stream %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		var nf *types.ResourceNotFoundException
		if _, err := client.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(name)}); err != nil && !errors.As(err, &nf) {
			t.Errorf("testenv: delete kinesis stream %s: %v", name, err)
		}
	})
	if err := AwaitKinesisStream(ctx, client, name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return name
}

// AwaitKinesisStream waits until stream is ACTIVE (after a create, split or
// merge), polling every pollInterval.
func AwaitKinesisStream(ctx context.Context, client *kinesis.Client, stream string) error {
	for {
		out, err := client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
		if err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kinesis stream %s not active: %w (last error: %v)", stream, ctx.Err(), err)
		case <-time.After(pollInterval):
		}
	}
}
