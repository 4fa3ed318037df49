package main

import (
	"context"

	"github.com/outflow-dev/outflow/devenv"
)

// runDemoProducer is `outflow demo-producer`: the demo producer on its own,
// against any Kafka (docker-compose runs it next to Apache Kafka).
func runDemoProducer(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "demo-producer")
	var (
		logs    logFlags
		cfg     devenv.ProducerConfig
		brokers string
		seed    int64
	)
	fs.StringVar(&brokers, "kafka-brokers", "", "comma-separated Kafka bootstrap brokers (required)")
	fs.StringVar(&cfg.Topic, "kafka-topic", devenv.DemoTopic, "topic to write the output-stream records to; it must exist")
	fs.Float64Var(&cfg.Rate, "rate", 2, "mean records per second (arrivals are random, as independent shoppers' are)")
	fs.IntVar(&cfg.Users, "users", 20, "number of returning users (entity keys user_id u1..uN) adding items")
	cfg.NewUsers = new(float64(devenv.DefaultDemoNewUsers))
	fs.Float64Var(cfg.NewUsers, "new-users", devenv.DefaultDemoNewUsers, "share of events from first-time shoppers (user_id new1, new2, ...), whose first record the feature store has never seen (0 to 1)")
	fs.IntVar(&cfg.Count, "count", 0, "stop after this many records (0: until interrupted)")
	fs.Int64Var(&seed, "seed", 0, "seed of the simulated shoppers, for a reproducible sequence (0: random)")
	logs.register(fs)
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := requireFlags(fs, "kafka-brokers"); err != nil {
		return err
	}
	logger, err := logs.logger(env.stderr)
	if err != nil {
		return err
	}
	cfg.Brokers, cfg.Seed, cfg.Logger = splitList(brokers), uint64(seed), logger
	return devenv.Produce(ctx, cfg)
}
