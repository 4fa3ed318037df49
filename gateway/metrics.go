package gateway

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/source/kinesis"
)

// lagCollector exports the Kafka consumer's lag per partition.
type lagCollector struct{ src *kafka.Source }

var lagDesc = prometheus.NewDesc("outflow_consumer_lag",
	"Records between the committed position and the partition's end, per topic and partition.",
	[]string{"topic", "partition"}, nil)

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	for topic, parts := range c.src.Lag() {
		for p, lag := range parts {
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag), topic, fmt.Sprint(p))
		}
	}
}

// kinesisLagCollector exports how far behind the tip each shard read here is.
type kinesisLagCollector struct{ src *kinesis.Source }

var kinesisLagDesc = prometheus.NewDesc("outflow_kinesis_lag_seconds",
	"How far behind the tip of its shard the last GetRecords was (MillisBehindLatest), per stream and shard.",
	[]string{"stream", "shard"}, nil)

func (c kinesisLagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- kinesisLagDesc }

func (c kinesisLagCollector) Collect(ch chan<- prometheus.Metric) {
	for stream, shards := range c.src.Lag() {
		for shard, lag := range shards {
			ch <- prometheus.MustNewConstMetric(kinesisLagDesc, prometheus.GaugeValue, lag.Seconds(), stream, shard)
		}
	}
}
