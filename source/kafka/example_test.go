package kafka_test

import (
	"context"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/source/kafka"
)

// ExampleSource_Run shows the shape of a consumer: the handler passes each
// message on and calls Done only once it is fully handled, which is what
// lets the Source commit past it. (Not run: it needs a broker.)
func ExampleSource_Run() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	src, err := kafka.New(kafka.Config{
		Brokers: []string{"kafka-1:9092", "kafka-2:9092"},
		Topics:  []string{"fv-output"},
		GroupID: "outflow",
		SASL:    kafka.SASL{Mechanism: kafka.SASLScramSHA512, Username: "outflow", Password: os.Getenv("KAFKA_PASSWORD")},
		Logger:  slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	work := make(chan *source.Message, 1024)
	go func() {
		for m := range work {
			// ... match, enrich, deliver or queue for retry ...
			m.Done()
		}
	}()
	err = src.Run(ctx, func(ctx context.Context, m *source.Message) {
		select {
		case work <- m:
		case <-ctx.Done(): // partition revoked or shutting down: not Done, so it is read again
		}
	})
	close(work)
	if err != nil {
		log.Fatal(err)
	}
}
