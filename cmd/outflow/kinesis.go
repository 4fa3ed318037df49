package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/outflow-dev/outflow/source/kinesis"
)

// kinesisFlags are the Kinesis flags of `outflow serve`.
type kinesisFlags struct {
	streams  string
	region   string
	endpoint string
	group    string
	start    string
	lease    time.Duration
	idleWait time.Duration
}

func (k *kinesisFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.streams, "kinesis-streams", "", "comma-separated Kinesis output streams to consume (none when empty); credentials come from the AWS standard chain")
	fs.StringVar(&k.region, "kinesis-region", "", "AWS region of the Kinesis streams (default: the AWS standard configuration, e.g. AWS_REGION)")
	fs.StringVar(&k.endpoint, "kinesis-endpoint", "", "Kinesis endpoint URL replacing the regional one (a VPC endpoint, or a local Kinesis)")
	fs.StringVar(&k.group, "kinesis-group", kinesis.DefaultGroupID, "lease group shared by the replicas reading the Kinesis streams")
	fs.StringVar(&k.start, "kinesis-start-position", string(kinesis.StartTrimHorizon), "where a shard without a checkpoint is read from: trim_horizon or latest")
	fs.DurationVar(&k.lease, "kinesis-lease-duration", kinesis.DefaultLeaseDuration, "how long a shard lease lasts unrenewed: the time before a dead replica's shards are taken over")
	fs.DurationVar(&k.idleWait, "kinesis-idle-wait", kinesis.DefaultIdleWait, "pause between GetRecords calls on a shard with nothing new")
}

// awsConfig loads AWS credentials and region through the SDK's standard
// chain (environment, shared config and credentials files, SSO, web
// identity, container and instance roles); --kinesis-region wins.
func awsConfig(ctx context.Context, k *kinesisFlags) (aws.Config, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if k.region != "" {
		opts = append(opts, awsconfig.WithRegion(k.region))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading the AWS configuration: %w", err)
	}
	return cfg, nil
}

// config maps the flags to the Kinesis source's configuration, with the
// AWS configuration loaded through the standard chain.
func (k *kinesisFlags) config(ctx context.Context) (kinesis.Config, error) {
	awsCfg, err := awsConfig(ctx, k)
	if err != nil {
		return kinesis.Config{}, err
	}
	return kinesis.Config{
		Streams: splitList(k.streams), AWS: awsCfg, Endpoint: k.endpoint,
		GroupID: k.group, StartPosition: kinesis.StartPosition(k.start), LeaseDuration: k.lease,
		IdleWait: k.idleWait,
	}, nil
}
