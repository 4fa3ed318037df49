package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/outflow-dev/outflow/featureserver"
	"github.com/outflow-dev/outflow/internal/kinesalite"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/source/kinesis"
)

// devAWS is the SDK configuration `outflow dev --source kinesis` uses with
// its local Kinesis: a fixed region and dummy static credentials (the local
// Kinesis checks that requests are signed, not by whom), so the user's own
// AWS configuration is never read.
func devAWS() aws.Config {
	return aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("outflow-dev", "outflow-dev", "")}
}

// devKinesis is the local Kinesis of `outflow dev --source kinesis`.
type devKinesis struct {
	endpoint string
	client   *awskinesis.Client
	server   *kinesalite.Server // nil with --kinesis-endpoint
}

// startDevKinesis starts kinesalite from dir (unless endpoint names a
// running local Kinesis) and creates the demo stream with DemoPartitions
// shards.
func startDevKinesis(ctx context.Context, endpoint, dir string, stderr io.Writer) (*devKinesis, error) {
	k := &devKinesis{endpoint: endpoint}
	if endpoint == "" {
		s, err := kinesalite.Start(ctx, kinesalite.Config{Dir: dir, Stderr: stderr})
		if err != nil {
			return nil, fmt.Errorf("starting the local Kinesis (--kinesalite-dir %s; or give --kinesis-endpoint): %w", dir, err)
		}
		k.server, k.endpoint = s, s.Endpoint()
	}
	k.client = awskinesis.NewFromConfig(devAWS(), func(o *awskinesis.Options) { o.BaseEndpoint = aws.String(k.endpoint) })
	_, err := k.client.CreateStream(ctx, &awskinesis.CreateStreamInput{StreamName: aws.String(DemoTopic), ShardCount: aws.Int32(DemoPartitions)})
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		k.Close()
		return nil, fmt.Errorf("creating the Kinesis stream %s: %w", DemoTopic, err)
	}
	for {
		out, err := k.client.DescribeStreamSummary(ctx, &awskinesis.DescribeStreamSummaryInput{StreamName: aws.String(DemoTopic)})
		if err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive {
			return k, nil
		}
		select {
		case <-ctx.Done():
			k.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling a remote state: nothing to wait on
		}
	}
}

// Close stops the local Kinesis when this process started it.
func (k *devKinesis) Close() {
	if k.server != nil {
		k.server.Close()
	}
}

// feed materialises the demo stream into the feature server, reading every
// shard from its start as the feature server's Kafka consumer does.
func (k *devKinesis) feed(ctx context.Context, fs *featureserver.Server) error {
	r, err := kinesis.NewReader(kinesis.ReaderConfig{AWS: devAWS(), Endpoint: k.endpoint, IdleWait: 100 * time.Millisecond})
	if err != nil {
		return err
	}
	defer r.Close()
	shards, err := r.Shards(ctx, DemoTopic)
	if err != nil {
		return err
	}
	errs := make(chan error, len(shards))
	for _, sh := range shards {
		go func() {
			errs <- r.ReadRange(ctx, source.ShardRangeRequest{Stream: DemoTopic, Shard: sh.ID, From: time.Unix(0, 0), To: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)},
				func(batch []source.ShardRecord) error {
					for _, rec := range batch {
						if decoded, err := record.Decode(rec.Value, record.DecodeOptions{}); err == nil {
							fs.Apply(decoded)
						}
					}
					return nil
				})
		}()
	}
	var first error
	for range shards {
		if err := <-errs; err != nil && first == nil && !errors.Is(err, context.Canceled) {
			first = err
		}
	}
	return first
}

// produce writes demo records to the stream as Produce does to Kafka.
func (k *devKinesis) produce(ctx context.Context, cfg ProducerConfig) error {
	cfg = cfg.withDefaults()
	if !(cfg.Rate > 0) {
		return fmt.Errorf("--rate %v: must be positive", cfg.Rate)
	}
	carts := newDemoCarts(cfg.Users, *cfg.NewUsers, cfg.Seed)
	log := cfg.Logger.With(slog.String("stream", DemoTopic))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for failures := 0; ; {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		key, value := carts.next(time.Now())
		_, err := k.client.PutRecord(ctx, &awskinesis.PutRecordInput{StreamName: aws.String(DemoTopic), PartitionKey: aws.String(string(key)), Data: value})
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			failures++
			backoff := min(demoBackoffMin<<min(failures-1, 5), demoBackoffMax)
			log.WarnContext(ctx, "demo producer: writing a record failed; retrying", slog.Any("error", err), slog.Duration("backoff", backoff))
			timer.Reset(backoff)
			continue
		}
		failures = 0
		timer.Reset(carts.pause(cfg.Rate))
	}
}
