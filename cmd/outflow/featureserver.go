package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/outflow-dev/outflow/featureserver"
)

// runFeatureServer runs the reference feature server: Tecton's GetFeatures API served from an
// in-memory online store that materialises the output-stream records it reads from Kafka
// after a lag. It is a stand-in for development and tests, not Tecton.
func runFeatureServer(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "featureserver")
	var (
		logs        logFlags
		addr        = fs.String("addr", "127.0.0.1:8090", "address of the GetFeatures HTTP API")
		catalogPath = fs.String("catalog", "", "JSON file of feature views and feature services to serve (default: the demo catalog of workspace \"prod\", feature service \"promo_fs\")")
		brokers     = fs.String("kafka-brokers", "", "comma-separated Kafka bootstrap brokers to read output-stream records from (none: serve without ingesting)")
		topics      = fs.String("topics", "fv-output", "comma-separated Kafka topics of output-stream records")
		pprofAddr   = fs.String("pprof-addr", "", pprofUsage)
		groupID     = fs.String("group-id", "outflow-featureserver", "Kafka consumer group; offsets are never committed, so each start re-reads the topics, and each server needs its own group")
		cfg         featureserver.Config
		faults      featureserver.Faults
	)
	fs.DurationVar(&cfg.Lag, "lag", 2*time.Second, "how long after a record is read its values become visible (materialisation lag)")
	fs.DurationVar(&cfg.LagJitter, "lag-jitter", 500*time.Millisecond, "random extra lag per record, uniform from 0 to this")
	fs.DurationVar(&cfg.CacheTTL, "cache-ttl", 0, "age limit of the simulated feature serving cache (0: no cache)")
	fs.DurationVar(&faults.Latency, "latency", 0, "delay before every answer, as a feature store across a network has (0: answer at once)")
	fs.DurationVar(&faults.LatencyJitter, "latency-jitter", 0, "random extra delay per answer, uniform from 0 to this")
	fs.StringVar(&cfg.APIKey, "api-key", "", "key clients must send as \"Authorization: Tecton-key <key>\" (empty: no authentication)")
	logs.register(fs)
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	logger, err := logs.logger(env.stderr)
	if err != nil {
		return err
	}
	if *catalogPath != "" {
		if cfg.Catalog, err = loadFeatureServerCatalog(*catalogPath); err != nil {
			return err
		}
	}
	brokerList, topicList := splitList(*brokers), splitList(*topics)
	if len(brokerList) > 0 && (len(topicList) == 0 || *groupID == "") {
		return fmt.Errorf("--kafka-brokers needs --topics and --group-id")
	}
	cfg.Logger = logger
	srv, err := featureserver.New(cfg)
	if err != nil {
		return err
	}
	if err := srv.SetFaults(faults); err != nil {
		return fmt.Errorf("--latency, --latency-jitter: %w", err)
	}

	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening for HTTP: %w", err)
	}
	logger.InfoContext(ctx, "reference feature server listening (a local stand-in, not Tecton)",
		slog.String("addr", lis.Addr().String()), slog.Any("config", cfg.WithDefaults()))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waitPprof, err := startPprof(ctx, *pprofAddr, logger)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer waitPprof()
	defer cancel() // before waitPprof: it ends the listener
	var (
		wg         sync.WaitGroup
		consumeErr error
	)
	if len(brokerList) > 0 {
		wg.Go(func() {
			if err := srv.Consume(ctx, brokerList, topicList, *groupID); err != nil {
				consumeErr = err
				cancel() // without its input the server is useless: stop serving too
			}
		})
	} else {
		logger.WarnContext(ctx, "no --kafka-brokers: serving without ingesting records")
	}
	serveErr := srv.Serve(ctx, lis)
	cancel()
	wg.Wait()
	if consumeErr != nil {
		return consumeErr
	}
	return serveErr
}

// loadFeatureServerCatalog reads a featureserver catalog from a JSON file.
func loadFeatureServerCatalog(path string) (*featureserver.Catalog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--catalog: %w", err)
	}
	defer f.Close()
	c, err := featureserver.LoadCatalog(f)
	if err != nil {
		return nil, fmt.Errorf("--catalog %s: %w", path, err)
	}
	return c, nil
}
